"""Stacked vs merged: how fast N models of one architecture load and run as one bundle.

    python scripts/bench_stack.py [--arch mobilenet_v3_small] [--counts 2,4,8] [--rounds 20]
                                  [--aot] [--json FILE]

For each count N it exports N copies of one zoo architecture with distinct weights, fuses them on
their shared `image` input twice, merged (`fuse`) and stacked (`fuse --stack`), and then, in one
process and alternating between the two artifacts round by round, opens each as the loader does
(`open_session`: pooled weights, the shared arena), runs it once to warm it and times three
requests. It reports each artifact's node count and the medians, and stacked over merged.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from fusedinf_cc.backends.sessions import open_session  # noqa: E402
from fusedinf_cc.compiler.build import build_fused  # noqa: E402
from fusedinf_cc.runtime.feeds import random_feeds  # noqa: E402
from model_zoo.zoo import export  # noqa: E402

VARIANTS = ("merged", "stacked")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="mobilenet_v3_small")
    parser.add_argument("--counts", default="2,4,8")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--aot", action="store_true", help="build both with fuse --aot")
    parser.add_argument("--work-dir", type=Path, default=REPO / ".cache" / "zoo" / "stack")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    rows = []
    for count in (int(c) for c in args.counts.split(",")):
        specs = [f"m{k}={export(args.arch, args.work_dir, variant=k + 1)}" for k in range(count)]
        suffix = ".aot.onnx" if args.aot else ".onnx"
        artifacts = {}
        nodes = {}
        for variant in VARIANTS:
            out = args.work_dir / f"{args.arch}-{count}-{variant}{suffix}"
            manifest = build_fused(
                specs, out, share_inputs="auto", stack=variant == "stacked", aot=args.aot
            )
            artifacts[variant] = out
            nodes[variant] = manifest.passes[-1].nodes_after
        row = {"models": count, "nodes": nodes, **_measure(artifacts, args.rounds)}
        rows.append(row)
        print(_line(row), flush=True)
    if args.json:
        report = {"arch": args.arch, "aot": args.aot, "rounds": args.rounds, "rows": rows}
        args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")


def _measure(artifacts: dict[str, Path], rounds: int) -> dict[str, dict[str, float]]:
    """Median load and request seconds per variant, the variants alternating round by round."""
    load: dict[str, list[float]] = {variant: [] for variant in artifacts}
    run: dict[str, list[float]] = {variant: [] for variant in artifacts}
    feeds = None
    for _ in range(rounds):
        for variant, path in artifacts.items():
            started = time.perf_counter()
            session = open_session(path, shared_arena=True)
            load[variant].append(time.perf_counter() - started)
            feeds = feeds or random_feeds(session.inputs)
            session.run(feeds)
            for _ in range(3):
                started = time.perf_counter()
                session.run(feeds)
                run[variant].append(time.perf_counter() - started)
            session.close()
    return {
        "load_ms": {v: 1e3 * statistics.median(s) for v, s in load.items()},
        "p50_ms": {v: 1e3 * statistics.median(s) for v, s in run.items()},
    }


def _line(row: dict) -> str:
    load, p50 = row["load_ms"], row["p50_ms"]
    return (
        f"{row['models']} models: nodes {row['nodes']['merged']} -> {row['nodes']['stacked']}, "
        f"load {load['merged']:.1f} -> {load['stacked']:.1f} ms "
        f"({load['stacked'] / load['merged']:.2f}x), "
        f"p50 {p50['merged']:.1f} -> {p50['stacked']:.1f} ms "
        f"({p50['stacked'] / p50['merged']:.2f}x) (merged -> stacked)"
    )


if __name__ == "__main__":
    main()
