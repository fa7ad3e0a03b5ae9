"""How load time, latency and memory grow with the number of models, fused vs separate.

    python scripts/bench_scaling.py [--arch mobilenet_v3_small] [--counts 1,2,4,8] [--runs 20]
                                    [--rounds 3] [--stack] [--json FILE] [--plot FILE.png]

For each count N it exports N copies of one zoo architecture with distinct weights (so dedup finds
nothing to fold), fuses them with their `image` input shared, and runs `bench` with the sequential
configurations (thread spinning on and off); on a 2-core machine running models concurrently
never won. Each configuration runs in a fresh process, in alternating rounds as `bench` does.
`--stack` fuses with `fuse --stack`: the N models run as one model N times as wide.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from fusedinf_cc.compiler.pipeline import fuse, write_fused  # noqa: E402
from fusedinf_cc.measure.bench import BenchConfig, bench_artifact  # noqa: E402
from fusedinf_cc.measure.plot import pyplot, save_figure  # noqa: E402
from fusedinf_cc.onnx_io.model_io import load_sources  # noqa: E402
from fusedinf_cc.passes.base import FusionOptions  # noqa: E402
from model_zoo.zoo import export  # noqa: E402

CONFIGS = [
    BenchConfig(variant, spinning, "sequential")
    for spinning in (True, False)
    for variant in ("separate", "fused")
]
METRICS = (
    ("load_s", "cold load (s)"),
    ("p50_ms", "latency p50 (ms)"),
    ("peak_rss_bytes", "peak RSS (MiB)"),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="mobilenet_v3_small")
    parser.add_argument("--counts", default="1,2,4,8")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds, as in bench")
    parser.add_argument("--zoo-dir", type=Path, default=REPO / ".cache" / "zoo" / "scaling")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--plot", type=Path)
    parser.add_argument("--stack", action="store_true", help="fuse with --stack")
    args = parser.parse_args()
    counts = [int(c) for c in args.counts.split(",")]
    if args.plot:
        pyplot()

    rows = []
    for count in counts:
        paths = [export(args.arch, args.zoo_dir, variant=k + 1) for k in range(count)]
        out = args.zoo_dir / f"fused-{count}{'-stack' if args.stack else ''}.onnx"
        sources = load_sources([(p.stem.replace("-", "_"), p) for p in paths])
        write_fused(fuse(sources, FusionOptions(share_inputs="auto", stack=args.stack)), out)
        report = bench_artifact(out, runs=args.runs, warmup=3, configs=CONFIGS, rounds=args.rounds)
        row = {"models": count}
        for variant in ("separate", "fused"):
            row[variant] = report.best(variant).summary()
        rows.append(row)
        print(_line(row), flush=True)

    if args.json:
        args.json.write_text(
            json.dumps({"arch": args.arch, "stack": args.stack, "rows": rows}, indent=2) + "\n"
        )
    if args.plot:
        _plot(rows, args.arch, args.plot)


def _line(row: dict) -> str:
    separate, fused = row["separate"], row["fused"]
    mib = 2**20
    return (
        f"{row['models']} models: load {separate['load_s']:.3f} -> {fused['load_s']:.3f} s, "
        f"p50 {separate['p50_ms']:.1f} -> {fused['p50_ms']:.1f} ms, peak RSS "
        f"{separate['peak_rss_bytes'] / mib:.0f} -> {fused['peak_rss_bytes'] / mib:.0f} MiB "
        f"(separate -> fused)"
    )


def _plot(rows: list[dict], arch: str, path: Path) -> None:
    plt = pyplot()
    counts = [row["models"] for row in rows]
    figure, axes = plt.subplots(1, len(METRICS), figsize=(13, 4))
    for axis, (key, label) in zip(axes, METRICS, strict=True):
        scale = 2**20 if key == "peak_rss_bytes" else 1
        for variant, style in (("separate", "o--"), ("fused", "s-")):
            axis.plot(counts, [row[variant][key] / scale for row in rows], style, label=variant)
        axis.set_xlabel(f"number of {arch} models")
        axis.set_title(label)
        axis.set_xticks(counts)
        axis.set_ylim(bottom=0)
        axis.legend()
    figure.suptitle("fused vs separate as the number of models grows")
    figure.tight_layout()
    save_figure(figure, path)


if __name__ == "__main__":
    main()
