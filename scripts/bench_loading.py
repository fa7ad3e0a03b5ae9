"""A cold request under each loading policy: bulk, linear, interleaved (EdgeCaffe's names).

    python scripts/bench_loading.py [--sets resnet18,ocr] [--loading bulk,linear,interleaved]
                                    [--rounds 5] [--json FILE]
                                    [--device-profile orin-nano-sd | --read-bandwidth 67MB/s ...]

Each set is built once with `fuse --aot`: `resnet18` alone, `ocr` the OCR-like trio fused into
one bundle (a request runs the whole bundle). Then, in one process and round by round, the
policies taking turns in a rotating order, each round measures:
- a cold request per policy: the bundle's files dropped from the page cache, a fresh loader
  (`BundleCache(loading=...)`), one request from nothing loaded to its outputs; then the
  median of 10 warm requests in that loader (what the policy costs once nothing is read);
- a cold request per policy in a loader that opened the bundle's session ahead
  (`BundleCache.open_ahead`, as `serve` does at start), its files dropped after: what a
  process's first request for a bundle costs once nothing is opened on its path;
- a request after an eviction per policy: in a loader that served the bundle, the bundle
  evicted (its session standing by, its pages dropped), then one request: what a miss costs
  a serving loader, its weights read and no session opened;
- the load alone: the files dropped, every weight read and the session opened (as `bulk`
  loads), no inference;
- the compute alone: the median of 10 requests once everything is resident;
- a fresh session's first request with nothing to read: the files already in memory, a fresh
  loader, one request (what a cold request computes: its session's opening and first run).
Reported per policy: the cold request's median and range over the rounds, the bytes it read,
and its ratio to max(load, compute) and to load + compute (no overlap), and to max(load, the
first request's compute) (what full overlap could reach with a fresh session), the request
after an eviction likewise, and its warm requests' median over bulk's. The outputs of every
policy must be bitwise those of the first.

Under a device profile (or `--read-bandwidth`, `--memory-limit`) the script runs itself again
in a cgroup made for the run, with the profile's limits on the disk that holds `--work-dir`.
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
from fusedinf_cc.limits.profiles import device_profile  # noqa: E402
from fusedinf_cc.limits.run import inside_a_run_group, run_limited  # noqa: E402
from fusedinf_cc.runtime.bundle import WHOLE, open_bundle  # noqa: E402
from fusedinf_cc.runtime.feeds import random_feeds  # noqa: E402
from fusedinf_cc.runtime.loader import BundleCache  # noqa: E402
from fusedinf_cc.runtime.loading import (  # noqa: E402
    LOADING_POLICIES,
    check_loading,
    start_reading,
)
from fusedinf_cc.runtime.pagecache import (  # noqa: E402
    drop_file_pages,
    read_file_pages,
    storage_read_bytes,
)
from model_zoo.zoo import export  # noqa: E402

SETS = {
    "resnet18": ("resnet18",),
    "ocr": ("text_detector", "text_angle_cls", "text_recognizer"),
}
BUDGET = 8 << 30


def build(models: tuple[str, ...], work: Path) -> Path:
    zoo = work / "zoo"
    specs = [f"{name}={export(name, zoo)}" for name in models]
    artifact = work / ("-".join(models) + ".aot.onnx")
    if not artifact.exists():
        build_fused(specs, artifact, aot=True)
    return artifact


def cold_request(artifact: Path, loading: str, feeds: dict) -> tuple[float, int, dict, float]:
    """The cold request's seconds, bytes read and outputs; then the warm requests' median."""
    bundle = open_bundle(artifact, name="bundle")
    drop_file_pages(bundle.files)
    cache = BundleCache(BUDGET, loading=loading)
    cache.register(bundle)
    read_before = storage_read_bytes()
    started = time.perf_counter()
    outputs = cache.run("bundle", feeds)
    seconds = time.perf_counter() - started
    read = storage_read_bytes() - read_before
    warm = []
    for _ in range(10):
        started = time.perf_counter()
        cache.run("bundle", feeds)
        warm.append(time.perf_counter() - started)
    cache.close()
    return seconds, read, outputs, statistics.median(warm)


def cold_opened_ahead(artifact: Path, loading: str, feeds: dict) -> tuple[float, dict]:
    """A cold request whose session a fresh loader opened ahead (standing by, nothing of its
    weights read): the request's seconds and outputs."""
    bundle = open_bundle(artifact, name="bundle")
    cache = BundleCache(BUDGET, loading=loading)
    cache.register(bundle)
    if not cache.open_ahead("bundle"):
        raise RuntimeError("the bundle's session was not opened ahead")
    drop_file_pages(bundle.files)
    started = time.perf_counter()
    outputs = cache.run("bundle", feeds)
    seconds = time.perf_counter() - started
    cache.close()
    return seconds, outputs


def request_after_eviction(artifact: Path, loading: str, feeds: dict) -> tuple[float, dict]:
    """A serving loader's miss: the bundle served, evicted (standing by, its pages dropped),
    then asked for again; the request's seconds and outputs."""
    cache = BundleCache(BUDGET, loading=loading)
    cache.register(artifact, name="bundle")
    cache.run("bundle", feeds)
    cache.run("bundle", feeds)
    cache.unload("bundle", stand_by=True)
    started = time.perf_counter()
    outputs = cache.run("bundle", feeds)
    seconds = time.perf_counter() - started
    reused = cache.stats.sessions_reused
    cache.close()
    if reused != 1:
        raise RuntimeError(f"the evicted session did not stand by ({reused} reused)")
    return seconds, outputs


def load_alone(artifact: Path) -> float:
    bundle = open_bundle(artifact, name="bundle")
    drop_file_pages(bundle.files)
    started = time.perf_counter()
    start_reading(bundle.weight_records(WHOLE), "bulk")  # every weight read, as `bulk` does
    session = open_session(artifact, shared_arena=True)
    seconds = time.perf_counter() - started
    session.close()
    return seconds


def compute_alone(artifact: Path, feeds: dict) -> float:
    cache = BundleCache(BUDGET)
    cache.register(artifact, name="bundle")
    cache.run("bundle", feeds)  # loads it: what follows is inference alone
    times = []
    for _ in range(10):
        started = time.perf_counter()
        cache.run("bundle", feeds)
        times.append(time.perf_counter() - started)
    cache.close()
    return statistics.median(times)


def first_run_alone(artifact: Path, feeds: dict) -> float:
    """A fresh loader's first request with the bundle's files already in memory: a cold
    request with nothing to read, what its session's opening and first run cost alone."""
    bundle = open_bundle(artifact, name="bundle")
    for path in bundle.files:
        read_file_pages(path)
    cache = BundleCache(BUDGET, keep_page_cache=True)
    cache.register(bundle)
    started = time.perf_counter()
    cache.run("bundle", feeds)
    seconds = time.perf_counter() - started
    cache.close()
    return seconds


def measure(set_name: str, loadings: list[str], rounds: int, work: Path) -> dict:
    artifact = build(SETS[set_name], work / set_name)
    probe = BundleCache(BUDGET)
    probe.register(artifact, name="bundle")  # measures the footprint once, before timing
    feeds = random_feeds(probe.input_specs("bundle"), seed=1)
    probe.close()
    cold: dict[str, list[float]] = {name: [] for name in loadings}
    read: dict[str, list[int]] = {name: [] for name in loadings}
    warm: dict[str, list[float]] = {name: [] for name in loadings}
    evicted: dict[str, list[float]] = {name: [] for name in loadings}
    ahead: dict[str, list[float]] = {name: [] for name in loadings}
    loads, computes, firsts, reference, bitwise = [], [], [], None, True
    for index in range(rounds):
        order = loadings[index % len(loadings) :] + loadings[: index % len(loadings)]
        for loading in order:
            seconds, bytes_read, outputs, warm_seconds = cold_request(artifact, loading, feeds)
            cold[loading].append(seconds)
            warm[loading].append(warm_seconds)
            read[loading].append(bytes_read)
            if reference is None:
                reference = outputs
            bitwise &= all(outputs[k].tobytes() == reference[k].tobytes() for k in reference)
            seconds, outputs = request_after_eviction(artifact, loading, feeds)
            evicted[loading].append(seconds)
            bitwise &= all(outputs[k].tobytes() == reference[k].tobytes() for k in reference)
            seconds, outputs = cold_opened_ahead(artifact, loading, feeds)
            ahead[loading].append(seconds)
            bitwise &= all(outputs[k].tobytes() == reference[k].tobytes() for k in reference)
        loads.append(load_alone(artifact))
        computes.append(compute_alone(artifact, feeds))
        firsts.append(first_run_alone(artifact, feeds))
    load, compute = statistics.median(loads), statistics.median(computes)
    first = statistics.median(firsts)
    rows = {}
    for loading in loadings:
        median = statistics.median(cold[loading])
        rows[loading] = {
            "cold_s": median,
            "cold_range_s": [min(cold[loading]), max(cold[loading])],
            "read_bytes": statistics.median(read[loading]),
            "over_max": median / max(load, compute),
            "over_sum": median / (load + compute),
            "over_max_first": median / max(load, first),
            "evicted_s": statistics.median(evicted[loading]),
            "evicted_range_s": [min(evicted[loading]), max(evicted[loading])],
            "evicted_over_max": statistics.median(evicted[loading]) / max(load, compute),
            "ahead_s": statistics.median(ahead[loading]),
            "ahead_range_s": [min(ahead[loading]), max(ahead[loading])],
            "ahead_over_max": statistics.median(ahead[loading]) / max(load, compute),
            "warm_s": statistics.median(warm[loading]),
            "warm_range_s": [min(warm[loading]), max(warm[loading])],
        }
    if "bulk" in rows:
        for row in rows.values():
            row["warm_over_bulk"] = row["warm_s"] / rows["bulk"]["warm_s"]
    return {
        "set": set_name,
        "load_alone_s": load,
        "load_range_s": [min(loads), max(loads)],
        "compute_alone_s": compute,
        "compute_range_s": [min(computes), max(computes)],
        "first_run_alone_s": first,
        "first_run_range_s": [min(firsts), max(firsts)],
        "policies": rows,
        "bitwise": bitwise,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", default=",".join(SETS))
    parser.add_argument("--loading", default=",".join(LOADING_POLICIES))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--work-dir", type=Path, default=REPO / ".cache" / "loading")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--device-profile")
    parser.add_argument("--memory-limit")
    parser.add_argument("--read-bandwidth")
    parser.add_argument("--read-ahead", help="the disk's read-ahead during the run (128KiB)")
    args = parser.parse_args()
    profile = device_profile(
        args.device_profile, args.memory_limit, args.read_bandwidth, None, args.read_ahead
    )
    args.work_dir.mkdir(parents=True, exist_ok=True)
    if profile is not None and not inside_a_run_group():
        run = run_limited([sys.executable, *sys.argv], profile, args.work_dir)
        print(run.summary())
        sys.exit(run.returncode)
    loadings = [check_loading(name) for name in args.loading.split(",")]
    results = [measure(name, loadings, args.rounds, args.work_dir) for name in args.sets.split(",")]
    where = profile.describe() if profile else "no device profile"
    for result in results:
        print(
            f"{result['set']} ({where}): load alone {result['load_alone_s'] * 1000:.1f} ms, "
            f"compute alone {result['compute_alone_s'] * 1000:.1f} ms, a fresh session's first "
            f"request with nothing to read {result['first_run_alone_s'] * 1000:.1f} ms"
            f"{'' if result['bitwise'] else ', OUTPUTS DIFFER'}"
        )
        for loading, row in result["policies"].items():
            low, high = (value * 1000 for value in row["cold_range_s"])
            print(
                f"  {loading:<12} cold {row['cold_s'] * 1000:8.1f} ms ({low:.1f}-{high:.1f}), "
                f"read {row['read_bytes'] / 2**20:6.1f} MiB, {row['over_max']:.2f}x max, "
                f"{row['over_sum']:.2f}x sum, {row['over_max_first']:.2f}x max with the first "
                f"request's compute; warm {row['warm_s'] * 1000:.1f} ms"
                + (f" = {row['warm_over_bulk']:.2f}x bulk's" if "warm_over_bulk" in row else "")
            )
            low, high = (value * 1000 for value in row["evicted_range_s"])
            print(
                f"  {'':<12} after an eviction {row['evicted_s'] * 1000:8.1f} ms "
                f"({low:.1f}-{high:.1f}), {row['evicted_over_max']:.2f}x max"
            )
            low, high = (value * 1000 for value in row["ahead_range_s"])
            print(
                f"  {'':<12} cold, opened ahead {row['ahead_s'] * 1000:8.1f} ms "
                f"({low:.1f}-{high:.1f}), {row['ahead_over_max']:.2f}x max"
            )
    if args.json:
        args.json.write_text(json.dumps({"profile": where, "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
