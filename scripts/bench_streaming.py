"""A bundle larger than memory, run stage by stage under a memory limit a quarter its size.

    python scripts/bench_streaming.py [--layers 20] [--width 4096] [--requests 3]
                                      [--loading linear,interleaved] [--read-bandwidth 1362MB/s]
                                      [--json FILE]

Builds a chain of `layers` MatMul+Relu layers of width x width float weights (64 MiB each at
4096: 1.25 GiB in all) with `fuse --aot --stages auto`, measures its footprint and the whole's
outputs outside any limit (the whole's outputs need the whole), then runs itself again in a
cgroup whose memory limit is the loader's
streaming budget plus the process's baseline (measured: the process with its runtime up and
nothing loaded), reads throttled to `--read-bandwidth`. There the footprint is measured again,
stage by stage into an empty cache, and each loading policy serves
`requests` requests, each from storage (every stage's pages dropped after it runs). Reported:
each request's seconds against the bytes it read over the bandwidth and against the compute
alone (the whole's warm request outside the limit), bitwise equality with the whole's outputs,
the group's peak memory and OOM kills.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from fusedinf_cc.common.sizes import format_bytes  # noqa: E402
from fusedinf_cc.compiler.build import build_fused  # noqa: E402
from fusedinf_cc.limits.profiles import device_profile, parse_bandwidth  # noqa: E402
from fusedinf_cc.limits.run import inside_a_run_group, run_limited  # noqa: E402
from fusedinf_cc.runtime.bundle import open_bundle  # noqa: E402
from fusedinf_cc.runtime.footprint import FootprintCache  # noqa: E402
from fusedinf_cc.runtime.loader import BundleCache  # noqa: E402
from fusedinf_cc.runtime.pagecache import drop_file_pages, storage_read_bytes  # noqa: E402


def chain_model(layers: int, width: int, path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    nodes, weights = [], []
    for index in range(layers):
        source = "x" if index == 0 else f"r{index - 1}"
        nodes.append(helper.make_node("MatMul", [source, f"w{index}"], [f"m{index}"]))
        target = "y" if index == layers - 1 else f"r{index}"
        nodes.append(helper.make_node("Relu", [f"m{index}"], [target]))
        values = rng.standard_normal((width, width), dtype=np.float32) / np.float32(width**0.5)
        weights.append(numpy_helper.from_array(values, f"w{index}"))
    graph = helper.make_graph(
        nodes,
        "chain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, width])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, width])],
        weights,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, path, save_as_external_data=True, location=path.name + ".data")


def prepare(args: argparse.Namespace) -> dict:
    """Outside the limit: build, measure the footprint and the whole's outputs and compute."""
    work = args.work_dir
    work.mkdir(parents=True, exist_ok=True)
    source = work / f"chain{args.layers}x{args.width}.onnx"
    artifact = work / f"chain{args.layers}x{args.width}.aot.onnx"
    if not artifact.exists():
        chain_model(args.layers, args.width, source)
        build_fused([f"c={source}"], artifact, aot=True, stages="auto")
    bundle = open_bundle(artifact, name="chain")  # measures the footprint, into the cache
    x = np.linspace(-1, 1, args.width, dtype=np.float32).reshape(1, args.width)
    whole = BundleCache(1 << 40)
    whole.register(bundle)
    expected = whole.run("chain", {"c/x": x})["c/y"]
    times = []
    for _ in range(5):
        started = time.perf_counter()
        whole.run("chain", {"c/x": x})
        times.append(time.perf_counter() - started)
    whole.close()
    np.save(work / "expected.npy", expected)
    return {
        "artifact": str(artifact),
        "bundle_bytes": bundle.footprint.measured_bytes,
        "stages": len(bundle.stages),
        "compute_s": statistics.median(times),
    }


def measure(args: argparse.Namespace, prepared: dict) -> dict:
    """Inside the limit: each loading policy's requests, from storage."""
    artifact = Path(prepared["artifact"])
    expected = np.load(args.work_dir / "expected.npy")
    x = np.linspace(-1, 1, args.width, dtype=np.float32).reshape(1, args.width)
    # The footprint measured again here, under the limit, into a cache of its own: stage by
    # stage, the whole never loaded (decision `stages`).
    fresh = args.work_dir / "footprints-under-the-limit"
    shutil.rmtree(fresh, ignore_errors=True)
    started = time.perf_counter()
    inside = open_bundle(artifact, name="chain", footprints=FootprintCache(fresh)).footprint
    results: dict = {
        "footprint_under_the_limit": {
            "seconds": time.perf_counter() - started,
            "stage_bytes": inside.stages,
        }
    }
    for loading in args.loading.split(","):
        bundle = open_bundle(artifact, name="chain")
        cache = BundleCache(args.budget, loading=loading)
        cache.register(bundle)
        seconds, read, bitwise = [], [], True
        for _ in range(args.requests):
            drop_file_pages(bundle.files)
            before = storage_read_bytes()
            started = time.perf_counter()
            got = cache.run("chain", {"c/x": x})["c/y"]
            seconds.append(time.perf_counter() - started)
            read.append(storage_read_bytes() - before)
            bitwise &= got.tobytes() == expected.tobytes()
        results[loading] = {
            "seconds": seconds,
            "read_bytes": read,
            "bitwise": bitwise,
            "streamed_runs": cache.stats.streamed_runs,
            "peak_accounted_bytes": cache.stats.peak_accounted_bytes,
        }
        cache.close()
    return results


def _baseline_bytes() -> int:
    """A fresh process's resident memory with the loader and its runtime imported, nothing
    loaded: what the limit holds beside the budget."""
    probe = (
        "import onnxruntime, fusedinf_cc.runtime.loader\n"
        "from fusedinf_cc.runtime.procmem import status_bytes\n"
        "print(status_bytes()['VmRSS'])"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=REPO
    )
    return int(done.stdout.split()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=20)
    parser.add_argument("--width", type=int, default=4096)
    parser.add_argument("--requests", type=int, default=3)
    parser.add_argument("--loading", default="linear,interleaved")
    parser.add_argument("--read-bandwidth", default="1362MB/s")
    parser.add_argument("--work-dir", type=Path, default=REPO / ".cache" / "streaming")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--budget", type=int, help=argparse.SUPPRESS)  # set for the child
    args = parser.parse_args()
    output = args.work_dir / "measured.json"
    if inside_a_run_group():
        prepared = json.loads(os.environ["FUSEDINF_STREAMING"])
        output.write_text(json.dumps(measure(args, prepared)))
        return
    prepared = prepare(args)
    baseline = _baseline_bytes()
    bundle = open_bundle(Path(prepared["artifact"]), name="chain")
    budget = bundle.streamed_bytes(True, ahead=True) + bundle.footprint.activation_bytes
    limit = budget + baseline
    profile = device_profile(None, f"{limit}B", args.read_bandwidth, None)
    assert profile is not None
    os.environ["FUSEDINF_STREAMING"] = json.dumps(prepared)
    output.unlink(missing_ok=True)
    run = run_limited([sys.executable, *sys.argv, "--budget", str(budget)], profile, args.work_dir)
    if run.returncode != 0 or not output.is_file():
        sys.exit(f"the run under the limit failed: {run.summary()}")
    results = json.loads(output.read_text())
    bandwidth = parse_bandwidth(args.read_bandwidth)
    size = prepared["bundle_bytes"]
    print(
        f"chain of {args.layers} layers, {format_bytes(size)} in {prepared['stages']} stages; "
        f"limit {format_bytes(limit)} = budget {format_bytes(budget)} + baseline "
        f"{format_bytes(baseline)} ({size / limit:.1f}x smaller than the bundle); "
        f"{run.summary()}"
    )
    measured = results.pop("footprint_under_the_limit")
    print(
        f"  footprint measured under the limit, stage by stage: {measured['seconds']:.1f} s, "
        f"the largest stage {format_bytes(max(measured['stage_bytes']))}"
    )
    for loading, row in results.items():
        median = statistics.median(row["seconds"])
        read = statistics.median(row["read_bytes"])
        floor = max(read / bandwidth, prepared["compute_s"])
        print(
            f"  {loading:<12} {median:.2f} s ({min(row['seconds']):.2f}-{max(row['seconds']):.2f})"
            f", read {format_bytes(read)}, {median / floor:.2f}x max(read / bandwidth "
            f"{read / bandwidth:.2f} s, compute {prepared['compute_s']:.3f} s), "
            f"{'bitwise' if row['bitwise'] else 'OUTPUTS DIFFER'}"
        )
    if args.json:
        report = {
            **prepared,
            "baseline_bytes": baseline,
            "budget_bytes": budget,
            "limit_bytes": limit,
            "read_bandwidth": bandwidth,
            "group": {
                "peak_memory_bytes": run.use.peak_memory_bytes,
                "read_bytes": run.use.read_bytes,
                "oom_kills": run.use.oom_kills,
            },
            "footprint_under_the_limit": measured,
            "results": results,
        }
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
