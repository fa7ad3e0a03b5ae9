"""Several processes serving one artifact through the loader, and their proportional set sizes:
how much of the weights they share."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from fusedinf_cc.runtime.procmem import proportional_set_size

_SERVE_ONE = """
import sys, time
from pathlib import Path
import numpy as np
from fusedinf_cc.runtime.feeds import random_feeds
from fusedinf_cc.runtime.bundle import open_bundle
from fusedinf_cc.runtime.loader import BundleCache
bundle = open_bundle(Path(sys.argv[1]))
cache = BundleCache(bundle.footprint.alone_bytes * 2, share_weights=sys.argv[2] == "1")
cache.register(bundle)
feeds = random_feeds(cache.input_specs(bundle.name))
latencies = []
for _ in range(int(sys.argv[3])):
    started = time.perf_counter()
    cache.run(bundle.name, feeds)
    latencies.append((time.perf_counter() - started) * 1000)
print(f"ready {np.median(latencies):.3f}", flush=True)
sys.stdin.read()
"""


@dataclass(frozen=True)
class SharingFigures:
    workers: int
    share_weights: bool
    pss_bytes: list[int]  # proportional set size of each worker: shared pages split between them
    p50_ms: float

    @property
    def total_pss_bytes(self) -> int:
        return sum(self.pss_bytes)


def measure_workers(
    artifact: Path, *, workers: int = 4, share_weights: bool, runs: int = 20
) -> SharingFigures:
    """Start `workers` processes serving `artifact` through the loader; sum their PSS."""
    processes = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                _SERVE_ONE,
                str(artifact),
                "1" if share_weights else "0",
                str(runs),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(workers)
    ]
    try:
        ready = [process.stdout.readline().split() for process in processes]  # type: ignore[union-attr]
        if any(len(line) != 2 for line in ready):
            raise RuntimeError("a serving worker failed before it was ready")
        pss = [proportional_set_size(process.pid) for process in processes]
    finally:
        for process in processes:
            process.communicate(timeout=60)
    p50 = float(sorted(float(line[1]) for line in ready)[len(ready) // 2])
    return SharingFigures(workers, share_weights, pss, p50)
