"""How much memory worker processes that serve one bundle share: the sum of their PSS.

    python scripts/bench_workers.py [--workers 4] [--runs 20] [--rounds 2] [--json FILE]

Builds the unrelated set (resnet18 + mobilenet_v3_small + squeezenet1_1, one shared image) as a
portable and an `--aot` bundle, then starts `--workers` processes that each serve it through the
loader, with and without `share_weights`, and sums their proportional set sizes (shared pages
counted once across the processes). Every configuration runs `--rounds` times, in turn.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from fusedinf_cc.compiler.build import build_fused  # noqa: E402
from model_zoo.zoo import export  # noqa: E402
from tests.support.workers import measure_workers  # noqa: E402

MODELS = ("resnet18", "mobilenet_v3_small", "squeezenet1_1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-workers-") as scratch:
        folder = Path(scratch)
        specs = [f"{name}={export(name, folder / 'zoo')}" for name in MODELS]
        bundles = {}
        for kind, aot in (("portable", False), ("aot", True)):
            bundles[kind] = folder / f"unrelated-{kind}.onnx"
            build_fused(specs, bundles[kind], share_inputs="auto", aot=aot)
        configs = [(kind, share) for kind in bundles for share in (False, True)]
        for round_index in range(args.rounds):
            for kind, share in configs:
                figures = measure_workers(
                    bundles[kind], workers=args.workers, share_weights=share, runs=args.runs
                )
                rows.append(
                    {
                        "round": round_index,
                        "artifact": kind,
                        "share_weights": share,
                        "total_pss_bytes": figures.total_pss_bytes,
                        "pss_bytes": figures.pss_bytes,
                        "p50_ms": figures.p50_ms,
                    }
                )
                print(
                    f"{kind:8} share_weights={share!s:5} total PSS "
                    f"{figures.total_pss_bytes / 2**20:7.1f} MiB, p50 {figures.p50_ms:.1f} ms",
                    flush=True,
                )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
