"""How long `plan` takes to choose bundles for many models, functions and requests.

    python scripts/bench_plan.py [--models 50] [--functions 200] [--requests 10000]
                                 [--budget 33%] [--search-seconds 20] [--replays 0]
                                 [--loading interleaved|auto] [--json FILE]

Small MLPs (two MatMuls of width 64-320, weights drawn per model) stand in for the models, so
that the time is the planner's, not inference: it builds and measures every model alone and the
hottest functions' groups, fits the cost model and searches on predicted replays of the first
half of the trace (`--replays 0`: no real replays). The functions call 2-4 models each with
Zipf(1.1) popularity and Poisson arrivals (`simulate --synthetic`'s draw). It prints the wall
time of the whole command, and the planner's own split: calibrating, searching.

With `--replays N` the plan, unfused and fused are also replayed for real on the held-out half:
a workload whose tail is swapping, not inference (an MLP runs in microseconds), unlike the zoo's.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import onnx  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from fusedinf_cc.workload.requests import (  # noqa: E402
    TraceSpec,
    synthetic_functions,
    synthetic_trace,
)
from fusedinf_cc.workload.traces import write_trace  # noqa: E402


def mlp(index: int, path: Path) -> Path:
    """A two-layer MLP whose width and weights depend on `index`."""
    rng = np.random.default_rng(index)
    width = 64 + 32 * (index % 9)
    weights = [
        numpy_helper.from_array(rng.standard_normal((width, width)).astype(np.float32), name)
        for name in ("w0", "w1")
    ]
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w0"], ["h"]),
            helper.make_node("Relu", ["h"], ["r"]),
            helper.make_node("MatMul", ["r", "w1"], ["y"]),
        ],
        f"mlp{index}",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, width])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, width])],
        weights,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=50)
    parser.add_argument("--functions", type=int, default=200)
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--budget", default="33%")
    parser.add_argument("--policy", default="gdsf")
    parser.add_argument("--search-seconds", type=float, default=20.0)
    parser.add_argument("--replays", type=int, default=0, help="real replays of each deployment")
    parser.add_argument("--loading", default="interleaved", help="or auto: each policy weighed")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-plan-") as scratch:
        folder = Path(scratch)
        models = {f"m{i:02d}": mlp(i, folder / f"m{i:02d}.onnx") for i in range(args.models)}
        spec = TraceSpec(functions=args.functions, requests=args.requests, rate_per_s=50.0)
        calls = synthetic_functions(sorted(models), spec)
        functions, trace = folder / "functions.json", folder / "trace.csv"
        functions.write_text(json.dumps(calls) + "\n", encoding="utf-8")
        write_trace(synthetic_trace(sorted(calls), spec), trace)
        report = folder / "plan.json"
        command = [
            sys.executable, "-m", "fusedinf_cc", "plan",
            *(f"{name}={path}" for name, path in models.items()),
            "--trace", str(trace), "--functions", str(functions),
            "--budget", args.budget, "--policy", args.policy, "--replays", str(args.replays),
            "--search-seconds", str(args.search_seconds), "--loading", args.loading,
            "--work-dir", str(folder / "work"), "-o", str(folder / "fusedinf.toml"),
            "--json", str(report),
        ]  # fmt: skip
        started = time.perf_counter()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        wall = time.perf_counter() - started
        record = json.loads(report.read_text(encoding="utf-8"))
    result = {
        "models": args.models,
        "functions": args.functions,
        "requests": args.requests,
        "wall_seconds": wall,
        "planner_seconds": record["seconds"],
        "groupings_evaluated": record["search"]["evaluated"],
        "loading": record["loading"],
        "loading_scores": record["loading_scores"],
        "bundles": len(record["bundles"]),
        "over_better_baseline": record["over_better_baseline"],
        "replayed": args.replays > 0,
        "held_out": {
            e["deployment"]: {"predicted": e["predicted"], "replayed": e["replayed"]}
            for e in record["held_out"]
        },
    }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
