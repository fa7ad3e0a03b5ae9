"""Compiler speed and memory: fuse N distinct resnet18-size models in a fresh process.

    python scripts/bench_compiler.py [--models 8] [--zoo-dir .cache/zoo/compiler] [--json FILE]

Reports wall time of load + passes + write, the process's peak RSS (VmHWM) and the ratio of that
peak to the total size of the input files. The target is under 10 s and under 2.5x.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

_MEASURE = """
import json, sys, time
from pathlib import Path
from fusedinf_cc.compiler.pipeline import fuse, write_fused
from fusedinf_cc.onnx_io.model_io import load_sources
from fusedinf_cc.runtime.procmem import status_bytes
paths = [Path(p) for p in sys.argv[2:]]
baseline = status_bytes()["VmRSS"]
started = time.perf_counter()
fused = fuse(load_sources([(p.stem.replace("-", "_"), p) for p in paths]))
write_fused(fused, Path(sys.argv[1]))
seconds = time.perf_counter() - started
print(json.dumps({
    "seconds": seconds,
    "peak_rss_bytes": status_bytes()["VmHWM"],
    "baseline_rss_bytes": baseline,
    "passes": {r.name: r.seconds for r in fused.manifest.passes},
}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=8)
    parser.add_argument("--arch", default="resnet18")
    parser.add_argument("--zoo-dir", type=Path, default=REPO / ".cache" / "zoo" / "compiler")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    sys.path.insert(0, str(REPO))
    from model_zoo.zoo import export

    paths = [export(args.arch, args.zoo_dir, variant=k + 1) for k in range(args.models)]
    input_bytes = sum(p.stat().st_size for p in paths)
    out = args.zoo_dir / f"fused-{args.models}x{args.arch}.onnx"
    result = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(out), *map(str, paths)],
        capture_output=True,
        text=True,
        check=True,
    )
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    figures.update(
        models=args.models,
        arch=args.arch,
        input_bytes=input_bytes,
        peak_over_input=figures["peak_rss_bytes"] / input_bytes,
        peak_above_baseline_over_input=(figures["peak_rss_bytes"] - figures["baseline_rss_bytes"])
        / input_bytes,
    )
    mib = 2**20
    print(f"fused {args.models} x {args.arch} ({input_bytes / mib:.0f} MiB of input files)")
    print(f"  wall time      {figures['seconds']:.2f} s   (target < 10 s)")
    print(
        f"  peak RSS       {figures['peak_rss_bytes'] / mib:.0f} MiB = "
        f"{figures['peak_over_input']:.2f}x the inputs   (target < 2.5x)"
    )
    print(f"  of which imports/interpreter {figures['baseline_rss_bytes'] / mib:.0f} MiB")
    print("  per pass       " + ", ".join(f"{k} {v:.2f}s" for k, v in figures["passes"].items()))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    out.unlink(missing_ok=True)
    out.with_name(out.name + ".manifest.json").unlink(missing_ok=True)


if __name__ == "__main__":
    main()
