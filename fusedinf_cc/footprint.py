"""Measure what loading an artifact costs in memory and time, in a fresh process.

The number the loader budgets with is the peak RSS the artifact adds to a process that has already
imported the runtime (load transients included), measured rather than guessed from file size.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fusedinf_cc.bench_worker import BenchConfig, BenchPlan, run_in_fresh_process

_MEASURE_CONFIG = BenchConfig("fused", spinning=False, execution="sequential")


@dataclass(frozen=True)
class Footprint:
    measured_bytes: int  # peak RSS the artifact added: what the budget must hold
    resident_bytes: int  # RSS it keeps after a request
    load_seconds: float  # file to first result

    def to_manifest(self) -> dict[str, int | float]:
        return {
            "measured_bytes": self.measured_bytes,
            "resident_bytes": self.resident_bytes,
            "load_seconds": self.load_seconds,
        }


def measure_footprint(artifact: Path) -> Footprint:
    """Load `artifact` and run one random request in a new interpreter; report what it cost."""
    plan = BenchPlan(
        models=[(artifact.stem, artifact)], feeds=None, runs=1, warmup=0, warm_runtime=True
    )
    result = run_in_fresh_process(plan, _MEASURE_CONFIG)
    return Footprint(
        measured_bytes=result.footprint_bytes,
        resident_bytes=max(0, result.resident_rss_bytes - result.baseline_rss_bytes),
        load_seconds=result.load_s,
    )
