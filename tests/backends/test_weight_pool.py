"""Bundles that hold the same model share its weights: one mapping per process, counted once."""

from __future__ import annotations

import gc
import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from fusedinf_cc.artifacts.manifest import manifest_path_for, read_manifest
from fusedinf_cc.artifacts.weight_records import PREPACKING_OPS
from fusedinf_cc.backends.onnxruntime import PREPACKING_KEY
from fusedinf_cc.backends.sessions import open_session
from fusedinf_cc.backends.weight_pool import WeightPool, artifact_weights
from fusedinf_cc.backends.weight_reader import address_of
from fusedinf_cc.compiler.build import build_fused
from fusedinf_cc.runtime.bundle import WHOLE, open_bundle
from fusedinf_cc.runtime.feeds import random_feeds
from fusedinf_cc.runtime.ledger import MemoryLedger
from fusedinf_cc.runtime.loader import BundleCache
from tests.support import builders
from tests.support.commands import run_probe


@pytest.fixture(scope="module")
def overlapping(zoo, tmp_path_factory) -> dict[str, Path]:
    """Two ahead-of-time bundles that both contain squeezenet1_1, and squeezenet alone."""
    folder = tmp_path_factory.mktemp("overlap")
    squeeze, head, mobile = zoo("squeezenet1_1"), zoo("head0"), zoo("mobilenet_v3_small")
    built = {
        "ab": [f"squeeze={squeeze}", f"head={head}"],
        "ac": [f"squeeze={squeeze}", f"mobile={mobile}"],
        "alone": [f"squeeze={squeeze}"],
    }
    for name, models in built.items():
        build_fused(models, folder / f"{name}.onnx", aot=True)
    return {name: folder / f"{name}.onnx" for name in built}


def _digests(artifact: Path) -> dict[str, int]:
    return {r.digest: r.length for r in read_manifest(manifest_path_for(artifact)).weights}


def test_records_cover_the_side_file_and_a_shared_model_has_the_same_digests(overlapping):
    for name in ("ab", "ac"):
        model = onnx.load(str(overlapping[name]), load_external_data=False)
        external = {
            t.name for t in model.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL
        }
        packed = {
            n for node in model.graph.node if node.op_type in PREPACKING_OPS for n in node.input
        }
        records = read_manifest(manifest_path_for(overlapping[name])).weights
        assert {r.name for r in records} == external
        # Weights a kernel would pack into its own copy are marked, for sessions that pack.
        assert {r.name for r in records if r.packable} == external & packed
    assert external & packed  # mobilenet's classifier (Gemm) in "ac"
    alone = _digests(overlapping["alone"])
    # squeezenet's weights, as ONNX Runtime laid them out, are the same in every bundle.
    assert set(alone) <= set(_digests(overlapping["ab"])) & set(_digests(overlapping["ac"]))
    assert sum(alone.values()) > 4 << 20


def test_two_sessions_map_a_shared_weight_once_and_answer_the_same(overlapping):
    pool = WeightPool()
    first = open_session(overlapping["ab"], weight_pool=pool)
    second = open_session(overlapping["ac"], weight_pool=pool)
    live = pool.live_digests()
    assert live == set(_digests(overlapping["ab"])) | set(_digests(overlapping["ac"]))
    for path, pooled in ((overlapping["ab"], first), (overlapping["ac"], second)):
        feeds = random_feeds(pooled.inputs)
        unpooled = open_session(path, weight_pool=None).run(feeds)
        for name, value in pooled.run(feeds).items():
            np.testing.assert_array_equal(value, unpooled[name])
    # A weight lives while any session holds it, and no longer.
    first.close()
    gc.collect()
    assert pool.live_digests() == set(_digests(overlapping["ac"]))
    second.close()
    gc.collect()
    assert pool.live_digests() == set()


def test_a_side_file_is_mapped_once_and_its_weights_lie_in_that_mapping(overlapping, tmp_path):
    """What a reader brings in through `where_mapped` is what the session's weights map; a
    file written again under the same name gets a mapping of its own."""
    pool = WeightPool()
    side = artifact_weights(overlapping["ab"])[0]
    records = read_manifest(manifest_path_for(overlapping["ab"])).weights
    ahead = pool.where_mapped(side, records)  # before any session: spans of one mapping

    def base_of(spans: list) -> int:
        return address_of(spans[0]) - records[0].offset

    base = base_of(ahead)
    assert [address_of(span) - base for span in ahead] == [r.offset for r in records]
    assert base_of(pool.where_mapped(side, records)) == base  # the same mapping again
    session = open_session(overlapping["ab"], weight_pool=pool)
    addresses = [address_of(weight) for weight in session.mapped_weights]
    assert addresses and all(base <= a < base + side.stat().st_size for a in addresses)
    # Once a session maps them, the weights themselves, wherever they lie.
    live = {id(weight) for weight in session.mapped_weights}
    assert all(id(found) in live for found in pool.where_mapped(side, records))
    session.close()
    gc.collect()  # no weight lives now; `ahead` still holds the first mapping
    copy = tmp_path / side.name
    copy.write_bytes(side.read_bytes())
    rewritten = pool.where_mapped(copy, records)
    assert base_of(rewritten) != base
    assert base_of(pool.where_mapped(copy, records)) == base_of(rewritten)
    copy.write_bytes(side.read_bytes())  # a new file at the same path
    os.utime(copy, ns=(0, 1))  # a different modification time, whatever the clock's grain
    assert base_of(pool.where_mapped(copy, records)) != base_of(rewritten)


def test_a_session_that_packs_weights_leaves_the_packable_ones_out_of_the_pool(overlapping):
    records = read_manifest(manifest_path_for(overlapping["ac"])).weights
    every = {r.digest for r in records}
    unpacked = {r.digest for r in records if not r.packable}
    assert unpacked < every
    ahead_of_time, packing = WeightPool(), WeightPool()
    plain = open_session(overlapping["ac"], weight_pool=ahead_of_time)
    packed = open_session(
        overlapping["ac"], weight_pool=packing, options={"config": {PREPACKING_KEY: "0"}}
    )
    assert ahead_of_time.live_digests() == every  # no packed copies: every weight is pooled
    assert packing.live_digests() == unpacked
    feeds = random_feeds(plain.inputs)
    for name, value in plain.run(feeds).items():
        np.testing.assert_allclose(value, packed.run(feeds)[name], rtol=1e-5, atol=1e-5)


_PRIVATE_MEMORY_PROBE = """
import json, sys
from pathlib import Path
from fusedinf_cc.backends.onnxruntime import PREPACKING_KEY, import_onnxruntime
from fusedinf_cc.runtime.feeds import random_feeds
from fusedinf_cc.runtime.procmem import status_bytes
from fusedinf_cc.backends.sessions import open_session
import_onnxruntime()
options = {"config": {PREPACKING_KEY: "0"}} if sys.argv[1] == "prepack" else None
before = status_bytes()["RssAnon"]
session = open_session(Path(sys.argv[2]), options=options)
session.run(random_feeds(session.inputs))
print(json.dumps(status_bytes()["RssAnon"] - before))
"""


def test_an_ahead_of_time_session_keeps_no_packed_copy_of_its_weights(overlapping):
    records = read_manifest(manifest_path_for(overlapping["ac"])).weights
    packable = sum(r.length for r in records if r.packable)
    assert packable > 4 << 20  # mobilenet_v3_small's classifier

    def private_growth(mode: str) -> int:
        return run_probe(_PRIVATE_MEMORY_PROBE, mode, overlapping["ac"])

    saved = private_growth("prepack") - private_growth("default")
    assert saved >= 0.7 * packable, (saved, packable)


_FILE_PAGES_PROBE = """
import json, sys
from pathlib import Path
import numpy as np
from fusedinf_cc.runtime.feeds import random_feeds
from fusedinf_cc.runtime.procmem import status_bytes
from fusedinf_cc.backends.sessions import open_session
from fusedinf_cc.backends.weight_pool import WeightPool
pool = WeightPool() if sys.argv[1] == "pool" else None
before = status_bytes()["RssFile"]
sessions = [open_session(Path(p), weight_pool=pool) for p in sys.argv[2:]]
for s in sessions:
    s.run(random_feeds(s.inputs))
print(json.dumps(status_bytes()["RssFile"] - before))
"""


def _file_pages(mode: str, artifacts: list[Path]) -> int:
    return run_probe(_FILE_PAGES_PROBE, mode, *artifacts)


def test_a_process_holds_one_copy_of_a_weight_two_bundles_contain(overlapping):
    both = [overlapping["ab"], overlapping["ac"]]
    shared = sum(_digests(overlapping["alone"]).values())
    saved = _file_pages("none", both) - _file_pages("pool", both)
    assert 0.8 * shared <= saved <= 1.3 * shared, (saved, shared)


_RELEASE_PROBE = """
import gc, json, sys
from pathlib import Path
from fusedinf_cc.runtime.feeds import random_feeds
from fusedinf_cc.runtime.procmem import status_bytes
from fusedinf_cc.backends.sessions import open_session
from fusedinf_cc.backends.weight_pool import WeightPool
pool = WeightPool()
first, second = (open_session(Path(p), weight_pool=pool) for p in sys.argv[1:])
for s in (first, second):
    s.run(random_feeds(s.inputs))
before = status_bytes()["RssFile"]
first.close()
gc.collect()
print(json.dumps(before - status_bytes()["RssFile"]))
"""


def test_a_closed_session_gives_back_the_weights_no_other_session_holds(overlapping):
    # "ab" loads first, so the squeezenet weights that "ac" shares live in the mapping of ab's
    # side file: closing "ab" must still give back the head's pages around them.
    own = set(_digests(overlapping["ab"])) - set(_digests(overlapping["ac"]))
    own_bytes = sum(_digests(overlapping["ab"])[digest] for digest in own)
    assert own_bytes > 1 << 20
    freed = run_probe(_RELEASE_PROBE, overlapping["ab"], overlapping["ac"])
    assert 0.8 * own_bytes <= freed <= 1.3 * own_bytes, (freed, own_bytes)


def test_the_budget_counts_a_shared_weight_once(overlapping):
    ab = open_bundle(overlapping["ab"])
    ac = open_bundle(overlapping["ac"])
    common = set(ab.shared_weights) & set(ac.shared_weights)
    # The pool maps a weight once, from the first bundle that brings it (ab), and keeps that
    # mapping while any bundle holds the weight; a weight's pages depend on where it lies in
    # its side file, so each bundle's copy is counted at ab's size.
    mapped_by_ab = sum(ab.shared_weights[d] for d in common)
    shared = sum(ac.shared_weights[d] for d in common)  # what ac does not map again
    arena = max(ab.footprint.activation_bytes, ac.footprint.activation_bytes)
    together = ab.footprint.measured_bytes + ac.footprint.measured_bytes - shared + arena
    loading = max(ab.footprint.loading_bytes, ac.footprint.loading_bytes)  # the one loading
    cache = BundleCache(together + loading + (shared // 2), "lru")  # shared must count once
    for bundle in (ab, ac):
        cache.register(bundle)
        cache.load(bundle.name)
    assert cache.resident() == ["ab", "ac"] and cache.stats.evictions == 0
    assert cache.accounted_bytes == together
    # Evicting one bundle frees its own bytes; the weights the other holds stay counted.
    cache.unload("ab")
    assert cache.accounted_bytes == ac.footprint.measured_bytes - shared + mapped_by_ab + arena
    cache.close()

    unpooled = BundleCache(together + loading + (shared // 2), "lru", pool_weights=False)
    for bundle in (ab, ac):
        unpooled.register(bundle)
        unpooled.load(bundle.name)
    assert unpooled.resident() == ["ac"] and unpooled.stats.evictions == 1
    unpooled.close()


def test_an_eviction_is_weighed_by_the_bytes_it_would_free(overlapping):
    bundles = {n: open_bundle(overlapping[n], name=n) for n in ("ab", "ac", "alone")}
    ledger = MemoryLedger(1 << 40)
    for name, bundle in bundles.items():  # each with its whole open
        ledger.register(name, bundle.footprint.load_need)
        ledger.count(name, WHOLE, bundle.session_bytes(WHOLE, pooled=True), opening=False)
    ab, alone = (bundles[n].session_bytes(WHOLE, pooled=True) for n in ("ab", "alone"))
    ab_private, ab_shared = ab.private_bytes, dict(ab.weights)
    alone_private, alone_shared = alone.private_bytes, dict(alone.weights)
    assert ab_shared == bundles["ab"].shared_weights
    # Every squeezenet weight stays with another bundle: each frees only what it alone holds.
    assert ledger.freed_by("alone") == alone_private
    own = sum(size for digest, size in ab_shared.items() if digest not in alone_shared)
    assert ledger.freed_by("ab") == ab_private + own
    ledger.release("ac")
    ledger.release("alone")  # nothing else resident: all of it goes
    assert ledger.freed_by("ab") == ab_private + sum(ab_shared.values())


def test_real_memory_of_two_resident_bundles_stays_within_the_shared_budget(overlapping):
    figures = run_probe(_RESIDENT_PROBE, overlapping["ab"], overlapping["ac"])
    assert figures["evictions"] == 0
    # Stated tolerance, as for unshared bundles: 10% of what is accounted plus 8 MiB.
    assert figures["grown"] <= 1.10 * figures["accounted"] + 8 * 2**20, figures


_RESIDENT_PROBE = """
import json, sys
from pathlib import Path
from fusedinf_cc.runtime.worker import WARMUP_MODEL
from fusedinf_cc.backends.onnxruntime import OnnxRuntimeSession
from fusedinf_cc.runtime.feeds import random_feeds
from fusedinf_cc.runtime.bundle import open_bundle
from fusedinf_cc.runtime.loader import BundleCache
from fusedinf_cc.runtime.procmem import status_bytes
import numpy as np
bundles = [open_bundle(Path(p)) for p in sys.argv[1:]]
warm = OnnxRuntimeSession(WARMUP_MODEL, shared_arena=True)
warm.run({"x": np.zeros((1, 8), np.float32)})
arena = max(b.footprint.activation_bytes for b in bundles)
loading = max(b.footprint.loading_bytes for b in bundles)
cache = BundleCache(sum(b.footprint.measured_bytes for b in bundles) + loading + arena, "lru")
for b in bundles:
    cache.register(b)
baseline = status_bytes()["VmRSS"]
for b in bundles:
    cache.run(b.name, random_feeds(cache.input_specs(b.name)))
print(json.dumps({"grown": status_bytes()["VmHWM"] - baseline, "accounted": cache.accounted_bytes,
                  "evictions": cache.stats.evictions}))
"""


_ARENA_PROBE = """
import json, sys
from pathlib import Path
import numpy as np
from fusedinf_cc.runtime.worker import WARMUP_MODEL
from fusedinf_cc.backends.onnxruntime import OnnxRuntimeSession
from fusedinf_cc.runtime.feeds import random_feeds
from fusedinf_cc.runtime.bundle import open_bundle
from fusedinf_cc.runtime.loader import BundleCache
from fusedinf_cc.runtime.procmem import status_bytes
share = sys.argv[1] == "shared"
bundles = [open_bundle(Path(p)) for p in sys.argv[2:]]
warm = OnnxRuntimeSession(WARMUP_MODEL, shared_arena=share)
warm.run({"x": np.zeros((1, 8), np.float32)})
cache = BundleCache(1 << 40, "lru", share_arena=share)
for b in bundles:
    cache.register(b)
feeds = {b.name: random_feeds(cache.input_specs(b.name)) for b in bundles}
cache.close()
baseline = status_bytes()["RssAnon"]
for b in bundles:
    cache.run(b.name, feeds[b.name])
print(json.dumps({"anon": status_bytes()["RssAnon"] - baseline,
                  "accounted": cache.accounted_bytes, "evictions": cache.stats.evictions}))
"""


def test_idle_bundles_keep_no_activations_with_the_shared_arena(overlapping):
    artifacts = [overlapping[name] for name in ("ab", "ac", "alone")]

    def probe(mode: str) -> dict:
        return run_probe(_ARENA_PROBE, mode, *artifacts)

    shared, own = probe("shared"), probe("own")
    activations = sorted(open_bundle(a).footprint.activation_bytes for a in artifacts)
    # Three resident bundles: one arena instead of three, in memory and in the accounting.
    assert own["accounted"] - shared["accounted"] == sum(activations) - activations[-1]
    assert own["anon"] - shared["anon"] >= 0.5 * (sum(activations) - activations[-1]), (
        shared,
        own,
        activations,
    )


_REPEAT_PROBE = """
import json, sys
from pathlib import Path
import numpy as np
from fusedinf_cc.runtime.procmem import status_bytes
from fusedinf_cc.backends.sessions import open_session
options = {"enable_mem_pattern": True} if sys.argv[2] == "pattern" else None
session = open_session(Path(sys.argv[1]), shared_arena=True, options=options)
feeds = {"x": np.ones((1, 1 << 20), np.float32)}
before = status_bytes()["RssAnon"]
session.run(feeds)
first = status_bytes()["RssAnon"] - before
for _ in range(5):
    session.run(feeds)
print(json.dumps({"first": first, "later": status_bytes()["RssAnon"] - before - first}))
"""


def test_a_shared_arena_session_keeps_one_runs_activations_not_two(tmp_path):
    """With a memory pattern, a session's second run takes one planned block that the shared
    arena keeps beside the first run's tensors; loader sessions run without one."""
    nodes = []
    for branch in "ab":  # two branches of 4 MiB activations
        previous = "x"
        for index, op in enumerate(("Relu", "Sigmoid", "Neg", "Abs", "Relu", "Sigmoid")):
            nodes.append(helper.make_node(op, [previous], [f"{branch}{index}"]))
            previous = f"{branch}{index}"
        nodes.append(helper.make_node("ReduceSum", [previous], [f"y{branch}"], keepdims=0))
    model = builders.make_model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1 << 20])],
        [helper.make_tensor_value_info(f"y{b}", TensorProto.FLOAT, []) for b in "ab"],
    )
    path = builders.save(model, tmp_path / "wide.onnx")

    def probe(mode: str) -> dict[str, int]:
        return run_probe(_REPEAT_PROBE, path, mode)

    default, pattern = probe("default"), probe("pattern")
    assert default["first"] >= 4 * 2**20, default
    assert default["later"] <= 2**20, default  # later runs reuse the first run's memory
    assert pattern["later"] >= 0.75 * pattern["first"], pattern  # the planned block, again
