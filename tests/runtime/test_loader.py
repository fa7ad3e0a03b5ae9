"""BundleCache: swapping bundles under a budget, pinning, thread safety, and real memory."""

from __future__ import annotations

import math
import threading
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest

from fusedinf_cc.artifacts.manifest import PartRecord
from fusedinf_cc.backends.onnxruntime import OnnxRuntimeSession
from fusedinf_cc.backends.weight_pool import artifact_weights
from fusedinf_cc.common.errors import UserInputError
from fusedinf_cc.compiler.build import build_fused
from fusedinf_cc.runtime.bundle import WHOLE, open_bundle
from fusedinf_cc.runtime.feeds import random_feeds
from fusedinf_cc.runtime.loader import BundleCache
from fusedinf_cc.runtime.loading import ReadingSession
from fusedinf_cc.runtime.pagecache import drop_file_pages
from tests.support import builders
from tests.support.bundles import fused_pair_bundle
from tests.support.commands import fuse_files, run_probe
from tests.support.oracle import session as oracle_session
from tests.support.pagecache import cached_bytes


@pytest.fixture(scope="module")
def three_bundles(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("bundles")
    return [
        fused_pair_bundle(folder, name, seed) for seed, name in enumerate(("red", "green", "blue"))
    ]


def _arena(bundles: list) -> int:
    """What the loader's shared activation arena is counted at for these bundles."""
    return max(bundle.footprint.activation_bytes for bundle in bundles)


def _room_for(count: int, bundles: list) -> int:
    """A budget that holds the `count` largest of these bundles, the last of them as it loads
    (its load's transient counted), beside the arena; never `count + 1` of them."""
    sizes = sorted((b.footprint.measured_bytes for b in bundles), reverse=True)
    loading = max(b.footprint.loading_bytes for b in bundles)
    return sum(sizes[:count]) + loading + _arena(bundles)


def _whole_feeds(bundle: str) -> dict[str, np.ndarray]:
    return {f"{bundle}_{half}/x": builders.random_feeds()["x"] for half in ("a", "b")}


class _CountingLoads:
    """Real ONNX Runtime sessions (of a bundle's whole or a model's part), counting how many
    loads of each bundle run at once."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.in_flight: Counter[str] = Counter()
        self.most_at_once = 0

    def __call__(self, path: Path, part: PartRecord | None) -> OnnxRuntimeSession:
        with self.lock:
            self.in_flight[path.stem] += 1
            self.most_at_once = max(self.most_at_once, self.in_flight[path.stem])
        try:
            return OnnxRuntimeSession(path.with_name(part.path) if part else path)
        finally:
            with self.lock:
                self.in_flight[path.stem] -= 1


_MEMORY_PROBE = """
import json, sys, threading
from pathlib import Path
import numpy as np
from fusedinf_cc.runtime.bundle import open_bundle
from fusedinf_cc.runtime.loader import BundleCache
from fusedinf_cc.runtime.procmem import status_bytes
paths, budget_share, rounds = [Path(p) for p in sys.argv[3:]], float(sys.argv[1]), int(sys.argv[2])
bundles = [open_bundle(p) for p in paths]
sizes = sorted(b.footprint.measured_bytes for b in bundles)
budget = int(sum(sizes) * budget_share)
arena = max(b.footprint.activation_bytes for b in bundles)
loading = max(b.footprint.loading_peak_bytes for b in bundles)
cache = BundleCache(max(budget, loading) + arena, "lru")
for b in bundles:
    cache.register(b)
rng = np.random.default_rng(0)
x = {"x": rng.standard_normal((1, 1024)).astype(np.float32)}
# Start the runtime before the baseline: its one-time cost is not the bundles'.
cache.run(bundles[0].name + "_a", x)
cache.close()
baseline = status_bytes()["VmRSS"]
peak, samples, stop = [0], [], threading.Event()
def sample():
    while not stop.is_set():
        peak[0] = max(peak[0], status_bytes()["VmRSS"])
        stop.wait(0.002)
sampler = threading.Thread(target=sample); sampler.start()
for i in range(rounds):
    cache.run(bundles[i % len(bundles)].name + "_a", x)
    if i == len(bundles) - 1:
        samples.append(status_bytes()["VmRSS"])
stop.set(); sampler.join()
print(json.dumps({"baseline": baseline, "peak": peak[0], "after_first_cycle": samples[0],
                  "end": status_bytes()["VmRSS"], "budget": cache.budget_bytes,
                  "evictions": cache.stats.evictions}))
"""


def _probe(paths: list[Path], budget_share: float, rounds: int) -> dict:
    return run_probe(_MEMORY_PROBE, str(budget_share), str(rounds), *paths)


@pytest.fixture(scope="module", params=["portable", "aot"])
def four_mib_bundles(request, tmp_path_factory) -> list[Path]:
    """Portable bundles keep their weights in the heap, which eviction hands back with a
    trim; ahead-of-time ones map them, and their eviction reuses the heap untrimmed."""
    folder = tmp_path_factory.mktemp(f"four-{request.param}")
    aot = request.param == "aot"
    return [fused_pair_bundle(folder, f"b{i}", 10 + i, width=1024, aot=aot) for i in range(3)]


def _wide_convs(seed: int) -> onnx.ModelProto:
    """Two 3x3 convolutions of 256 channels (4.5 MiB of weights): a portable session reorders
    them into ONNX Runtime's blocked layout as it loads, a copy beside the originals."""
    rng = np.random.default_rng(seed)
    c = 256
    return builders.make_model(
        [
            onnx.helper.make_node("Conv", ["x", "w1"], ["h"], pads=[1, 1, 1, 1]),
            onnx.helper.make_node("Relu", ["h"], ["r"]),
            onnx.helper.make_node("Conv", ["r", "w2"], ["y"], pads=[1, 1, 1, 1]),
        ],
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, c, 8, 8])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, c, 8, 8])],
        [
            builders.tensor(name, rng.standard_normal((c, c, 3, 3)).astype(np.float32))
            for name in ("w1", "w2")
        ],
    )


_HELD_PROBE = """
import json, sys
from pathlib import Path
import numpy as np
from fusedinf_cc.runtime.feeds import random_feeds
from fusedinf_cc.runtime.bundle import open_bundle
from fusedinf_cc.runtime.loader import BundleCache
from fusedinf_cc.runtime.loading import ReadingSession
from fusedinf_cc.runtime.procmem import release_freed_memory, reset_peak_rss, status_bytes
bundle = open_bundle(Path(sys.argv[1]))
cache = BundleCache(bundle.footprint.alone_bytes, "lru")
cache.register(bundle)
feeds = random_feeds(cache.input_specs(bundle.name))  # starts the runtime, grows the arena
cache.close()
release_freed_memory()
baseline = status_bytes()["VmRSS"]
reset_peak_rss()
cache.run(bundle.name, feeds)
print(json.dumps({"held": status_bytes()["VmRSS"] - baseline,
                  "peak": status_bytes()["VmHWM"] - baseline}))
"""


def test_lru_evicts_the_least_recently_used_idle_bundle(three_bundles):
    bundles = [open_bundle(path) for path in three_bundles]
    # Any two fit, never all three; the activation arena is counted once, beside them.
    cache = BundleCache(_room_for(2, bundles), "lru")
    for bundle in bundles:
        cache.register(bundle)
    for name in ("red", "green", "red", "blue"):  # whole bundles: each costs its footprint
        cache.run(name, _whole_feeds(name))
    assert cache.evictions == ["green"]
    assert sorted(cache.resident()) == ["blue", "red"]
    assert (cache.stats.hits, cache.stats.misses) == (1, 3)
    assert cache.stats.peak_accounted_bytes <= cache.budget_bytes


def test_the_loaders_sessions_do_not_spin_between_requests(three_bundles):
    # Idle sessions' spinning threads took the cores from the running one (architecture.md).
    cache = BundleCache(1 << 30)
    for path in three_bundles:
        cache.register(open_bundle(path))
    for name in ("red", "green"):
        cache.run(name, _whole_feeds(name))
    for name in ("red", "green"):
        options = cache._entries[name].sessions[WHOLE]._session.get_session_options()
        for key in ("session.intra_op.allow_spinning", "session.inter_op.allow_spinning"):
            assert options.get_session_config_entry(key) == "0"
    cache.close()


def test_a_model_inside_a_fused_bundle_answers_with_its_own_outputs(three_bundles):
    cache = BundleCache(1 << 40)
    cache.register(three_bundles[0])
    feeds = builders.random_feeds(seed=3)
    result = cache.run("red_b", feeds)
    source = oracle_session(three_bundles[0].parent / "red_b.onnx")
    (expected,) = source.run(None, feeds)
    assert list(result) == ["y"]
    assert result["y"].tobytes() == expected.tobytes()
    whole = cache.run("red", {"red_a/x": feeds["x"], "red_b/x": feeds["x"]})
    assert sorted(whole) == ["red_a/y", "red_b/y"]


@pytest.mark.parametrize(
    ("name", "feeds", "outputs", "complaint"),
    [
        # A model's own input left out used to run on the zeros its neighbours get.
        ("red_b", {}, None, "request for 'red_b': inputs do not match the model (missing ['x']"),
        ("red_b", {"x": np.zeros((1, 8), np.float32)}, None, "x is 1x8, the model wants 1x256"),
        (
            "red",
            {"red_a/x": np.zeros((1, 256)), "red_b/x": builders.random_feeds()["x"]},
            None,
            "red_a/x is float64, the model wants float32",
        ),
        (
            "red",
            {"red_a/x": builders.random_feeds()["x"], "red_b/x": builders.random_feeds()["x"]},
            ["z"],
            "no outputs ['z']",
        ),
        ("red_a", builders.random_feeds(), ["z"], "model 'red_a' has no outputs ['z']"),
    ],
)
def test_a_request_that_does_not_fit_is_refused_in_one_line(
    three_bundles, name, feeds, outputs, complaint
):
    cache = BundleCache(1 << 40)
    cache.register(three_bundles[0])
    with pytest.raises(UserInputError) as raised:
        cache.run(name, feeds, outputs)
    assert complaint in str(raised.value)


def test_a_bundle_of_one_model_may_carry_its_name_and_takes_its_feeds(tmp_path):
    source = builders.save(builders.affine(5, width=256), tmp_path / "solo_src.onnx")
    artifact = tmp_path / "solo.onnx"
    fuse_files([("solo", source)], artifact)
    other = fused_pair_bundle(tmp_path, "pair", 6)
    cache = BundleCache(1 << 40)
    cache.register(artifact, name="solo")
    cache.register(other)
    feeds = builders.random_feeds(seed=5)
    (expected,) = oracle_session(source).run(None, feeds)
    assert cache.run("solo", feeds)["y"].tobytes() == expected.tobytes()
    assert [spec.name for spec in cache.input_specs("solo")] == ["x"]
    # Another bundle may not take the name, nor hold a model of that name.
    with pytest.raises(UserInputError, match="already registered: solo"):
        cache.register(artifact, name="solo")
    with pytest.raises(UserInputError, match="already registered: pair"):
        cache.register(artifact, name="pair")


def test_a_bundle_larger_than_the_budget_is_refused(three_bundles):
    bundle = open_bundle(three_bundles[0])
    cache = BundleCache(bundle.footprint.measured_bytes - 1)
    with pytest.raises(UserInputError, match="more than the whole budget"):
        cache.register(bundle)


def test_concurrent_requests_under_a_small_budget(three_bundles):
    bundles = [open_bundle(path) for path in three_bundles]
    loads = _CountingLoads()
    # One bundle at a time, beside the activation arena.
    budget = _room_for(1, bundles)
    cache = BundleCache(budget, "gdsf", session_factory=loads)
    for bundle in bundles:
        cache.register(bundle)
    expected = {}
    for path in three_bundles:
        for half in ("a", "b"):
            model = f"{path.stem}_{half}"
            source = oracle_session(path.parent / f"{model}.onnx")
            expected[model] = {
                seed: source.run(None, builders.random_feeds(seed=seed))[0] for seed in range(4)
            }
    failures: list[BaseException] = []

    def client(index: int) -> None:
        rng = np.random.default_rng(index)
        try:
            for _ in range(25):
                model = str(rng.choice(sorted(expected)))
                seed = int(rng.integers(0, 4))
                got = cache.run(model, builders.random_feeds(seed=seed))["y"]
                assert got.tobytes() == expected[model][seed].tobytes(), model
        except BaseException as error:  # collected and re-raised in the test thread
            failures.append(error)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures, failures[0]
    assert loads.most_at_once == 1  # never two loads of one bundle at once
    assert cache.stats.peak_accounted_bytes <= budget
    assert cache.stats.hits + cache.stats.misses == 8 * 25
    assert sum(cache.stats.loads_by_bundle.values()) == cache.stats.misses


def test_many_first_requests_for_one_bundle_load_it_once(three_bundles):
    loads = _CountingLoads()
    cache = BundleCache(1 << 40, session_factory=loads)
    cache.register(three_bundles[1])
    barrier = threading.Barrier(8)

    def client() -> None:
        barrier.wait()
        cache.run("green_a", builders.random_feeds())

    threads = [threading.Thread(target=client) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert cache.stats.loads_by_bundle == {"green": 1}
    assert cache.stats.misses == 1 and cache.stats.hits == 7


@pytest.mark.slow
def test_real_memory_stays_within_the_budget(four_mib_bundles):
    figures = _probe(four_mib_bundles, budget_share=0.67, rounds=60)
    assert figures["evictions"] > 0
    grown = figures["peak"] - figures["baseline"]
    # Stated tolerance: 10% of the budget plus 8 MiB for allocator slack and ORT's arenas.
    assert grown <= 1.10 * figures["budget"] + 8 * 2**20, figures


@pytest.mark.slow
def test_memory_returns_after_500_load_evict_cycles(four_mib_bundles):
    # A budget that holds one bundle: every request evicts the other and loads its own.
    figures = _probe(four_mib_bundles[:2], budget_share=0.5, rounds=500)
    assert figures["evictions"] >= 498
    assert figures["end"] <= 1.05 * figures["after_first_cycle"], figures


@pytest.mark.slow
def test_four_workers_share_one_copy_of_the_weights(tmp_path):
    from tests.support.workers import measure_workers

    bundle = fused_pair_bundle(tmp_path, "wide", 30, width=2048)  # 32 MiB of weights, side file
    weights = 2 * 2048 * 2048 * 4
    assert (tmp_path / "wide.onnx.data").stat().st_size >= weights
    private = measure_workers(bundle, workers=4, share_weights=False, runs=2)
    shared = measure_workers(bundle, workers=4, share_weights=True, runs=2)
    # Four private copies against one shared: at least two copies' worth must be saved.
    assert shared.total_pss_bytes <= private.total_pss_bytes - 2 * weights, (private, shared)


def test_a_portable_load_counts_its_transient_only_while_it_loads(tmp_path):
    weights = 2 * 256 * 256 * 9 * 4
    path = tmp_path / "bundle.onnx"
    fuse_files([("convs", builders.save(_wide_convs(0), tmp_path / "convs.onnx"))], path)
    footprint = open_bundle(path).footprint
    # Loading holds the originals and their reordered copies at once; then frees the originals.
    assert footprint.loading_bytes > weights, footprint
    assert footprint.measured_bytes < 2 * weights, footprint
    seen = run_probe(_HELD_PROBE, path)
    # What stays counted is what stays resident, and the transient was real.
    # (a fresh cache's first run may grow the arena again: its activations are allowed)
    allowed = footprint.measured_bytes + footprint.activation_bytes + (2 << 20)
    assert seen["held"] <= allowed, (seen, footprint)
    assert seen["held"] < footprint.loading_peak_bytes / 2, (seen, footprint)
    assert seen["peak"] >= seen["held"] + weights, (seen, footprint)
    assert seen["peak"] <= 1.2 * footprint.loading_peak_bytes + (2 << 20), (seen, footprint)


@pytest.mark.parametrize("budget", ["abc", None, math.nan, True, -1, 0, 1.5])
def test_the_loader_refuses_a_budget_that_is_not_a_positive_number_of_bytes(budget):
    with pytest.raises(UserInputError, match="positive number of bytes"):
        BundleCache(budget_bytes=budget)  # type: ignore[arg-type]


def test_register_takes_a_str_or_any_path_like(tmp_path):
    out = tmp_path / "fused.onnx"
    build_fused(builders.affine_pair_specs(tmp_path / "m", 0), out)
    cache = BundleCache(1 << 30)
    assert cache.register(str(out)).name == "fused"
    outputs = cache.run("a", {"x": np.ones((1, 64), np.float32)})
    assert outputs["y"].shape == (1, 64)


def test_a_request_that_can_never_fit_fails_at_once_rather_than_waiting(tmp_path):
    """Accounting that cannot be met (here a budget lowered below a registered bundle) is an
    error for the request, never a wait that nothing will end."""
    out = tmp_path / "fused.onnx"
    build_fused(builders.affine_pair_specs(tmp_path / "m", 0), out)
    cache = BundleCache(1 << 30)
    bundle = cache.register(out)
    cache.budget_bytes = bundle.footprint.measured_bytes // 2
    raised: list[BaseException] = []

    def request() -> None:
        try:
            cache.run("a", {"x": np.ones((1, 64), np.float32)})
        except UserInputError as error:
            raised.append(error)

    worker = threading.Thread(target=request, daemon=True)
    worker.start()
    worker.join(timeout=60)
    assert not worker.is_alive(), "the request waited for room that could never come"
    assert raised and "does not fit the budget" in str(raised[0])


def test_a_bundle_rebuilt_in_place_is_registered_again_whole(tmp_path):
    """`refresh` finds a rebuilt bundle and puts the new build in the old one's place once no
    request holds it: its models, inputs and weights are the new build's; an unchanged or
    merely rewritten bundle stays as it is."""
    folder = tmp_path / "served"
    path = fused_pair_bundle(folder, "pair", 1, width=32, aot=True)
    cache = BundleCache(1 << 30)
    cache.register(path)
    x = np.ones((1, 32), np.float32)
    before = cache.run("pair_a", {"x": x})["y"]
    assert cache.refresh("pair") is False
    fused_pair_bundle(folder, "pair", 7, width=32, aot=True)  # other weights, same names
    # A resident session keeps serving the version it checked, never half of each.
    assert cache.run("pair_a", {"x": x})["y"].tobytes() == before.tobytes()
    cache.unload("pair")
    with pytest.raises(UserInputError, match="register it again to load the new build"):
        cache.run("pair_a", {"x": x})
    assert cache.refresh("pair_a") is True
    after = cache.run("pair_a", {"x": x})["y"]
    expected = oracle_session(folder / "pair_a.onnx").run(None, {"x": x})[0]
    np.testing.assert_allclose(after, expected, rtol=1e-5, atol=1e-6)  # the new weights
    assert not np.allclose(after, before)
    assert cache.refresh("pair") is False
    assert cache.names()["pair"] == ["pair_a", "pair_b"]
    cache.close()


@pytest.mark.parametrize("standby", [True, False])
def test_an_evicted_ahead_of_time_bundle_stands_by_and_its_next_miss_opens_nothing(
    tmp_path, standby
):
    """Evicted, an ahead-of-time bundle's session stays open with its weights' pages given back
    (they leave the page cache too); its next miss reads them again, opens nothing, and
    answers as before. Without standby every miss opens a session."""
    paths = [
        fused_pair_bundle(tmp_path, name, seed, width=1024, aot=True)
        for seed, name in enumerate(("red", "blue"))
    ]
    bundles = [open_bundle(path) for path in paths]
    standing = max(bundle.session_bytes(WHOLE, True).private_bytes for bundle in bundles)
    budget = _room_for(1, bundles) + standing
    assert budget < _room_for(2, bundles)  # one bundle resident at a time
    cache = BundleCache(budget, "lru", standby=standby)
    for bundle in bundles:
        cache.register(bundle)
    x = np.random.default_rng(0).standard_normal((1, 1024)).astype(np.float32)
    red, blue = ({f"{name}_{half}/x": x for half in "ab"} for name in ("red", "blue"))
    first = cache.run("red", red)
    cache.run("blue", blue)
    assert cache.resident() == ["blue"]
    side = artifact_weights(paths[0])[0]
    assert cached_bytes(side) < side.stat().st_size // 2  # red's pages went
    again = cache.run("red", red)
    assert all(again[name].tobytes() == first[name].tobytes() for name in first)
    stats = cache.stats
    assert stats.misses == 3 and stats.evictions == 2
    opened = (2, 1) if standby else (3, 0)
    assert (stats.sessions_opened, stats.sessions_reused) == opened
    assert stats.peak_accounted_bytes <= budget
    cache.close()


def _mapped_bytes(path: Path) -> int:
    """Bytes of `path` this process has mapped in (Rss of its mappings of the file)."""
    total, inside = 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        fields = line.split()
        if fields and "-" in fields[0] and len(fields) >= 5:  # a mapping's header line
            inside = line.endswith(str(path))
        elif inside and fields[:1] == ["Rss:"]:
            total += int(fields[1]) * 1024
    return total


@pytest.mark.parametrize("loading", ["bulk", "interleaved"])
def test_a_miss_reads_through_the_mapping_its_session_runs_on(tmp_path, loading):
    """A miss reads what its session maps through the mapping the session reads its weights
    from, so the pages are mapped for it before it runs: a fresh session's (the weight pool's
    mapping of the side file, read before the session opens) and one that stood by (its own),
    with nothing else of the file left mapped."""
    path = fused_pair_bundle(tmp_path, "red", 0, width=1024, aot=True)
    side = artifact_weights(path)[0]
    weights = 2 * 1024 * 1024 * 4
    cache = BundleCache(1 << 30, loading=loading)
    cache.register(path)
    cache.load("red")  # opened fresh: its weights read before it opened
    _wait_for_reads(cache, "red")
    assert weights <= _mapped_bytes(side) < weights * 5 // 4
    cache.unload("red", stand_by=True)
    assert _mapped_bytes(side) < weights // 4
    cache.load("red")
    _wait_for_reads(cache, "red")
    assert cache.stats.sessions_reused == 1
    assert weights <= _mapped_bytes(side) < weights * 5 // 4
    cache.close()


def test_a_session_opened_ahead_reads_nothing_and_its_first_request_opens_nothing(tmp_path):
    """Opened ahead, a session stands by with none of its weights read; the first request
    reads them and runs it, bitwise as a loader that opened it on the request. A bundle whose
    weights are not mapped (portable) is not opened ahead."""
    path = fused_pair_bundle(tmp_path, "red", 0, width=1024, aot=True)
    side = artifact_weights(path)[0]
    bundle = open_bundle(path)
    drop_file_pages(bundle.files)
    cache = BundleCache(1 << 30)
    cache.register(bundle)
    assert cache.open_ahead("red") and not cache.open_ahead("red")
    assert cached_bytes(side) < side.stat().st_size // 8 and _mapped_bytes(side) == 0
    feeds = random_feeds(cache.input_specs("red"), seed=1)
    outputs = cache.run("red", feeds)
    assert (cache.stats.opened_ahead, cache.stats.sessions_reused) == (1, 1)
    assert cache.stats.sessions_opened == 0
    fresh = BundleCache(1 << 30)
    fresh.register(path)
    for name, value in fresh.run("red", feeds).items():
        assert value.tobytes() == outputs[name].tobytes()
    portable = fused_pair_bundle(tmp_path / "portable", "blue", 1)
    cache.register(portable)
    assert not cache.open_ahead("blue") and cache.stats.opened_ahead == 1
    cache.close()
    fresh.close()


def test_a_miss_reads_a_weight_another_file_brought_where_its_session_maps_it(tmp_path):
    """Two bundles with the same weights: the second's session maps them from the first's
    side file (pooled), so its miss reads none of its own file and maps none of it; with
    the first evicted (standing by, its pages given back and dropped), the miss brings them
    back in where it maps them, through the first's mapping."""
    first = fused_pair_bundle(tmp_path / "first", "red", 0, width=1024, aot=True)
    second = fused_pair_bundle(tmp_path / "second", "blue", 0, width=1024, aot=True)
    first_side, side = artifact_weights(first)[0], artifact_weights(second)[0]
    weights = 2 * 1024 * 1024 * 4
    cache = BundleCache(1 << 30, loading="interleaved")
    cache.register(first)
    cache.register(second)
    cache.load("red")
    drop_file_pages([side])
    cache.load("blue")
    _wait_for_reads(cache, "blue")
    assert _mapped_bytes(side) == 0 and cached_bytes(side) < side.stat().st_size // 8
    cache.unload("blue")
    cache.unload("red", stand_by=True)
    assert _mapped_bytes(first_side) < weights // 4
    cache.load("blue")
    _wait_for_reads(cache, "blue")
    assert _mapped_bytes(first_side) >= weights and _mapped_bytes(side) == 0
    assert cached_bytes(side) < side.stat().st_size // 8
    cache.close()


def _wait_for_reads(cache: BundleCache, bundle: str) -> None:
    """Wait until the readers of `bundle`'s sessions are done."""
    for session in cache._entries[bundle].sessions.values():
        if isinstance(session, ReadingSession):
            session.reader.wait()


def _dynamic_conv(folder: Path) -> Path:
    """One convolution over an image of any height and width (measured at 1x1 pixels)."""
    return builders.save(builders.dynamic_conv(), folder / "dynamic.onnx")


def _image(side: int) -> dict[str, np.ndarray]:
    return {"x": np.random.default_rng(side).standard_normal((1, 3, side, side), np.float32)}


def test_a_request_larger_than_measured_counts_its_activations_before_it_runs(tmp_path):
    """What a request larger than its bundle was measured on adds to the arena (the
    footprint's activation curve) is counted before it runs: an idle bundle is evicted to make
    room for it, and a request that cannot fit beside its own bundle is refused in one line,
    having run nothing."""
    dynamic = open_bundle(_dynamic_conv(tmp_path))
    other = open_bundle(fused_pair_bundle(tmp_path, "other", 0, width=1024))
    extra = dynamic.footprint.activation_curve.extra_bytes(512 * 512)
    assert extra is not None and extra > other.footprint.alone_bytes  # 512x512: ~32 MiB
    arena = _arena([dynamic, other])
    # Room for both bundles, or for the dynamic one and the 512x512 request, not all three.
    budget = dynamic.footprint.measured_bytes + arena + extra + other.footprint.measured_bytes // 2
    cache = BundleCache(budget, "lru")
    cache.register(dynamic)
    cache.register(other)
    cache.run("other_a", builders.random_feeds(1024))
    cache.run("dynamic", _image(1))
    assert cache.evictions == []
    assert cache.accounted_bytes <= budget

    result = cache.run("dynamic", _image(512))
    assert cache.evictions == ["other"]
    assert cache.stats.peak_accounted_bytes <= budget
    expected = oracle_session(tmp_path / "dynamic.onnx").run(None, _image(512))[0]
    np.testing.assert_allclose(result["y"], expected, rtol=1e-5, atol=1e-6)

    with pytest.raises(UserInputError) as refused:
        cache.run("dynamic", _image(2048))  # about 0.5 GiB of activations
    message = str(refused.value)
    assert "\n" not in message
    assert "needs about" in message and "of activations" in message
    assert "send smaller inputs" in message
    assert cache.stats.arenas_given_back == 1  # the refused request never ran
    assert cache.run("dynamic", _image(64))["y"].shape == (1, 16)  # and the bundle still serves
    cache.close()


def test_a_larger_request_that_finds_its_room_held_waits_for_the_request_holding_it(tmp_path):
    """The room a larger request needs is held by a request that is pinned and queued behind
    it: it lets go of its bundle, the other runs, and it then evicts that one and runs; no
    refusal, nothing over the budget."""
    import time

    from fusedinf_cc.backends.sessions import open_session

    class Slow:
        """A real session whose runs take 0.3 s longer: a request that holds the run lock."""

        def __init__(self, session):
            self.session = session

        def run(self, feeds, outputs=None, **options):
            time.sleep(0.3)
            return self.session.run(feeds, outputs, **options)

        def __getattr__(self, name):
            return getattr(self.session, name)

    def sessions(path, part=None):
        session = open_session(path, shared_arena=True, part=part)
        return Slow(session) if path.stem == "slow" else session

    dynamic = open_bundle(_dynamic_conv(tmp_path))
    other = open_bundle(fused_pair_bundle(tmp_path, "other", 0, width=1024))
    slow = open_bundle(builders.save(builders.affine(3, width=8), tmp_path / "slow.onnx"))
    bundles = [dynamic, other, slow]
    extra = dynamic.footprint.activation_curve.extra_bytes(512 * 512)
    held = sum(b.footprint.measured_bytes for b in bundles) + _arena(bundles)
    # Room for the three, or for the larger request with the other bundle gone.
    budget = held + extra - other.footprint.measured_bytes // 2
    cache = BundleCache(budget, "lru", session_factory=sessions)
    for bundle in bundles:
        cache.register(bundle)
    other_feeds = {"other_a/x": _image(1)["x"].reshape(1, 3)[:, :1].repeat(1024, 1)}
    other_feeds["other_b/x"] = other_feeds["other_a/x"]
    cache.run("other", other_feeds)
    cache.run("dynamic", _image(1))
    slow_feeds = builders.random_feeds(8)
    results: dict[str, object] = {}

    def ask(name, feeds):
        results[name] = cache.run(name, feeds)

    holding = threading.Thread(target=ask, args=("slow", slow_feeds))
    holding.start()  # holds the run lock for 0.3 s
    time.sleep(0.1)
    larger = threading.Thread(target=ask, args=("dynamic", _image(512)))
    larger.start()  # queues first
    time.sleep(0.1)
    queued = threading.Thread(target=ask, args=("other", other_feeds))
    queued.start()  # pinned, queued behind the larger request: its bundle cannot go
    for thread in (holding, larger, queued):
        thread.join(timeout=60)
    assert set(results) == {"slow", "dynamic", "other"}
    expected = oracle_session(tmp_path / "dynamic.onnx").run(None, _image(512))[0]
    np.testing.assert_allclose(results["dynamic"]["y"], expected, rtol=1e-5, atol=1e-6)
    assert cache.stats.waits_for_activations >= 1
    assert "other" in cache.evictions  # evicted once its request had run
    assert cache.stats.peak_accounted_bytes <= budget
    cache.close()


def test_a_request_larger_than_measured_gives_back_what_it_grew(tmp_path):
    """A dynamic-shape bundle measured at 1x1 pixels, then a request of 1500x1500: its
    activations (over 100 MiB) are given back when it ends, not kept by the arena."""
    path = _dynamic_conv(tmp_path)
    result = run_probe(
        f"""
import json
import numpy as np
from fusedinf_cc.runtime.loader import BundleCache
from fusedinf_cc.runtime.loading import ReadingSession
from fusedinf_cc.runtime.procmem import status_bytes
cache = BundleCache(1 << 30)
cache.register({str(path)!r})
rss = lambda: status_bytes()["VmRSS"]
cache.run("dynamic", {{"x": np.ones((1, 3, 1, 1), np.float32)}})  # as measured
before = rss()
cache.run("dynamic", {{"x": np.ones((1, 3, 1500, 1500), np.float32)}})
print(json.dumps([rss() - before, cache.stats.arenas_given_back]))
"""
    )
    grown, given_back = result
    assert given_back == 1
    assert grown < 64 << 20  # the 1500x1500 request's 138 MiB of activations went back
