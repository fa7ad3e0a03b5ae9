"""The synthetic swap workload on real zoo bundles: fused vs unfused, LRU vs GDSF.

    python scripts/simulate_zoo.py [--requests 400] [--budget 50%] [--aot] [--json FILE]
                                   [--policy lru,gdsf,belady]

Fixed workload (reported in docs/benchmarks.md): a pool of 12 distinct zoo models (resnet18,
mobilenet_v3_small, squeezenet1_1, transformer_encoder, head0 and head1, two weight variants
each); 20 functions of 2 to 4 models drawn from the pool (seed 0); Zipf popularity s=1.1 over
functions; Poisson arrivals at 4 requests/s (what 2 cores serve without a standing queue); a
budget of half the pool's total measured footprint. Unfused, each model is its own bundle and
functions that use one model share it; fused, each function is one bundle; grouped, models that
exactly the same functions call are fused into one bundle (`--fused-groups auto`). With `--aot`
every bundle of every deployment, the unfused models' too, is built with `fuse --aot`.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from model_zoo.zoo import export  # noqa: E402

POOL = ("resnet18", "mobilenet_v3_small", "squeezenet1_1", "transformer_encoder", "head0", "head1")
VARIANTS = (1, 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--budget", default="50%")
    parser.add_argument("--work-dir", type=Path, default=REPO / ".cache" / "simulate")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--aot", action="store_true", help="build every bundle with fuse --aot")
    parser.add_argument("--policy", default="lru,gdsf,belady", help="policies to replay")
    args = parser.parse_args()
    models = []
    for name in POOL:
        for variant in VARIANTS:
            path = export(name, args.work_dir / "models", variant=variant)
            models.append(f"{name}_v{variant}={path}")
    command = [
        sys.executable,
        "-m",
        "fusedinf_cc",
        "simulate",
        *models,
        "--synthetic",
        "--requests",
        str(args.requests),
        "--budget",
        args.budget,
        "--policy",
        args.policy,
        "--work-dir",
        str(args.work_dir / "fused"),
        "--fused-groups",
        "auto",
    ]
    if args.json:
        command += ["--json", str(args.json)]
    if args.aot:
        command.append("--aot")
    subprocess.run(command, check=True)


if __name__ == "__main__":
    main()
