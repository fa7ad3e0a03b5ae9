"""A request for one model of a bundle runs that model's part, not the whole fused graph."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from fusedinf_cc.artifacts.manifest import read_manifest
from fusedinf_cc.common.errors import UserInputError
from fusedinf_cc.compiler.build import build_fused
from fusedinf_cc.runtime.bundle import WHOLE, Bundle, SessionKey, open_bundle
from fusedinf_cc.runtime.ledger import least_budget
from fusedinf_cc.runtime.loader import BundleCache
from tests.support import builders
from tests.support.commands import build_dist, run_cli
from tests.support.oracle import session as oracle_session
from tests.support.serving import serve_one_request


def picky(seed: int) -> onnx.ModelProto:
    """y = x * w + sum(range(0, 4, step)): ONNX Runtime refuses a `step` of zero, as a
    voice-activity model refuses a sample rate of zero."""
    rng = np.random.default_rng(seed)
    return builders.make_model(
        [
            helper.make_node("Range", ["start", "limit", "step"], ["steps"]),
            helper.make_node("ReduceSum", ["steps"], ["total"], keepdims=0),
            helper.make_node("Mul", ["x", "w"], ["scaled"]),
            helper.make_node("Add", ["scaled", "total"], ["y"]),
        ],
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8]),
            helper.make_tensor_value_info("step", TensorProto.FLOAT, []),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])],
        [
            builders.tensor("start", np.array(0.0, np.float32)),
            builders.tensor("limit", np.array(4.0, np.float32)),
            builders.tensor("w", rng.standard_normal((1, 8)).astype(np.float32)),
        ],
    )


@pytest.fixture
def sources(tmp_path: Path) -> dict[str, Path]:
    return {
        "a": builders.save(builders.affine(0, width=64), tmp_path / "a.onnx"),
        "picky": builders.save(picky(1), tmp_path / "picky.onnx"),
    }


def _whole_feeds(x: np.ndarray) -> dict[str, np.ndarray]:
    """A request for the whole pair, by fused names, with a step the picky model accepts."""
    return {"a/x": x, "picky/x": x[:, :8], "picky/step": np.array(1, np.float32)}


def _built(sources: dict[str, Path], out: Path, **options: object) -> Path:
    build_fused([f"{name}={path}" for name, path in sources.items()], out, **options)
    return out


@pytest.mark.parametrize("aot", [False, True], ids=["portable", "aot"])
def test_a_model_request_runs_its_part_on_its_own_inputs(tmp_path, sources, aot):
    artifact = _built(sources, tmp_path / "pair.onnx", aot=aot)
    manifest = read_manifest(artifact.with_name("pair.onnx.manifest.json"))
    part = manifest.part("a")
    assert part is not None and part.inputs == ["a/x"] and part.nodes < part.nodes_of_whole
    cache = BundleCache(1 << 30)
    cache.register(artifact)
    assert [spec.name for spec in cache.input_specs("a")] == ["x"]
    assert cache.sessions("pair") == ["a"]  # the whole was never opened
    x = np.random.default_rng(3).standard_normal((1, 64)).astype(np.float32)
    # The other model refuses a zero step: fed zeros, as a whole-graph request would feed it,
    # it fails. The part never runs it.
    got = cache.run("a", {"x": x})["y"]
    expected = oracle_session(sources["a"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    whole = cache.run("pair", _whole_feeds(x))
    assert got.tobytes() == whole["a/y"].tobytes()  # the same kernels: the same bits
    assert cache.sessions("pair") == ["a", "pair"]
    assert cache.stats.misses == 1 and cache.stats.sessions_opened == 2


def test_an_ort_format_bundle_has_parts_of_its_own_format(tmp_path, sources):
    artifact = _built(sources, tmp_path / "pair.ort")
    manifest = read_manifest(tmp_path / "pair.ort.manifest.json")
    assert [part.path for part in manifest.parts] == ["pair.part-a.ort", "pair.part-picky.ort"]
    assert sorted(p.name for p in tmp_path.glob("pair.part-*")) == [
        "pair.part-a.ort",
        "pair.part-picky.ort",
    ]  # the .onnx cuts they were optimised from are not left behind
    cache = BundleCache(1 << 30)
    cache.register(artifact)
    x = np.random.default_rng(5).standard_normal((1, 64)).astype(np.float32)
    got = cache.run("a", {"x": x})["y"]
    assert cache.sessions("pair") == ["a"]
    assert got.tobytes() == cache.run("pair", _whole_feeds(x))["a/y"].tobytes()
    assert run_cli("verify", artifact).returncode == 0


@pytest.mark.parametrize("options", [{"single_file": True}, {"parts": False}])
def test_a_bundle_without_parts_still_serves_a_model(tmp_path, sources, options):
    """`--single-file` and `--no-parts` write no parts (and a rebuild removes an earlier
    build's): a model's request runs the whole graph, other models on zeros (here the picky
    one fails on them, in one line)."""
    _built(sources, tmp_path / "pair.onnx")
    assert (tmp_path / "pair.part-a.onnx").is_file()
    artifact = _built(sources, tmp_path / "pair.onnx", **options)
    assert read_manifest(tmp_path / "pair.onnx.manifest.json").parts == []
    assert not list(tmp_path.glob("pair.part-*"))
    cache = BundleCache(1 << 30)
    cache.register(artifact)
    with pytest.raises(UserInputError, match="delta in Range operator can not be zero"):
        cache.run("a", {"x": np.ones((1, 64), np.float32)})
    assert cache.sessions("pair") == ["pair"]


def test_a_backbone_that_cse_made_common_is_in_each_heads_part(tmp_path):
    heads = {
        name: builders.save(builders.stem_and_head(7, seed), tmp_path / f"{name}.onnx")
        for name, seed in (("h0", 1), ("h1", 2))
    }
    artifact = _built(heads, tmp_path / "heads.onnx", share_inputs="auto", aot=True)
    manifest = read_manifest(tmp_path / "heads.onnx.manifest.json")
    assert any(p.name == "cse" and p.changed for p in manifest.passes)
    # Each head's part computes the one stem too: the parts have nodes in common.
    computed = [
        {name for node in onnx.load(tmp_path / part.path).graph.node for name in node.output}
        for part in manifest.parts
    ]
    assert len(computed) == 2 and computed[0] & computed[1]
    cache = BundleCache(1 << 30)
    cache.register(artifact)
    image = np.random.default_rng(0).standard_normal((1, 3, 16, 16)).astype(np.float32)
    whole = cache.run("heads", {"image": image})
    for name in heads:
        got = cache.run(name, {"image": image})["pooled"]
        expected = oracle_session(heads[name]).run(None, {"image": image})[0]
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
        assert got.tobytes() == whole[f"{name}/pooled"].tobytes()
    assert run_cli("verify", artifact).returncode == 0


def test_eviction_closes_a_bundles_parts_with_it(tmp_path, sources):
    first = _built(sources, tmp_path / "first.onnx", aot=True)
    second = _built(sources, tmp_path / "second.onnx", aot=True)
    bundles = [open_bundle(first, name="first"), open_bundle(second, name="second")]
    # Room for one bundle (as it loads) and the arena, not two.
    budget = least_budget(bundle.footprint.load_need for bundle in bundles)
    cache = BundleCache(budget)
    for bundle in bundles:
        cache.register(bundle)
    x = np.ones((1, 64), np.float32)
    cache.run("first", _whole_feeds(x))
    cache.load("first")
    assert cache.sessions("first") == ["first"]
    cache.run("second", _whole_feeds(x))
    assert cache.evictions == ["first"] and cache.sessions("first") == []
    assert cache.accounted_bytes <= budget


def test_a_changed_part_is_refused_and_leaves_nothing_loaded(tmp_path, sources):
    artifact = _built(sources, tmp_path / "pair.onnx", aot=True)
    cache = BundleCache(1 << 30)
    bundle = cache.register(artifact)  # its footprint measured on the parts as built
    part = tmp_path / "pair.part-a.onnx"
    model = onnx.load(part, load_external_data=False)
    model.doc_string = "edited after the build"
    onnx.save(model, part)
    with pytest.raises(UserInputError, match=r"part 'pair\.part-a\.onnx' \(model 'a'\) differs"):
        cache.run("a", {"x": np.ones((1, 64), np.float32)})
    # Nothing of the bundle stays counted (the shared arena may: it never shrinks).
    assert cache.resident() == [] and cache.accounted_bytes <= bundle.footprint.activation_bytes
    part.unlink()
    with pytest.raises(UserInputError, match=r"part 'pair\.part-a\.onnx' \(model 'a'\) is missing"):
        cache.run("a", {"x": np.ones((1, 64), np.float32)})
    # The whole still serves the bundle's own requests.
    x = np.ones((1, 64), np.float32)
    cache.run("pair", _whole_feeds(x))
    assert cache.resident() == ["pair"]


def test_a_model_request_names_its_own_inputs_and_outputs(tmp_path, sources):
    cache = BundleCache(1 << 30)
    cache.register(_built(sources, tmp_path / "pair.onnx", aot=True))
    x = np.ones((1, 64), np.float32)
    with pytest.raises(UserInputError, match="has no outputs"):
        cache.run("a", {"x": x}, outputs=["logits"])
    with pytest.raises(UserInputError, match=r"unexpected \['step'\]"):
        cache.run("a", {"x": x, "step": np.array(1, np.float32)})
    with pytest.raises(UserInputError, match=r"missing \['x'\]"):
        cache.run("a", {})


def test_rebuilding_removes_parts_the_new_build_does_not_have(tmp_path, sources):
    artifact = _built(sources, tmp_path / "pair.onnx")
    assert (tmp_path / "pair.part-picky.onnx").is_file()
    _built({"a": sources["a"], "b": sources["a"]}, artifact, dedup=False)
    assert sorted(p.name for p in tmp_path.glob("pair.part-*")) == [
        "pair.part-a.onnx",
        "pair.part-b.onnx",
    ]


def test_run_and_serve_ask_only_the_models_own_inputs(tmp_path):
    wide = builders.save(builders.affine(0, width=32), tmp_path / "wide.onnx")
    builders.save(picky(1), tmp_path / "picky.onnx")
    dist = build_dist(
        tmp_path,
        '[bundles.pair]\nmodels = { b = "wide.onnx", picky = "picky.onnx" }\ntargets = ["onnx"]\n'
        "aot = true\n",
    )
    artifact = dist / "pair" / "pair.onnx"
    result = run_cli("run", artifact, "--model", "b")
    assert result.returncode == 0, result.stderr
    outputs, _ = serve_one_request(dist, dict(os.environ), model="b", width=32)
    x = np.ones((1, 32), np.float32)
    expected = oracle_session(wide).run(None, {"x": x})[0]
    np.testing.assert_allclose(np.array(outputs, np.float32), expected.ravel(), rtol=1e-5)
    index = json.loads((dist / "pair" / "bundle.json").read_text())
    assert {"pair.part-b.onnx", "pair.part-picky.onnx"} <= set(index["files"])


def test_bench_model_compares_its_part_with_the_model_built_alone(tmp_path, sources):
    artifact = _built(sources, tmp_path / "pair.onnx", aot=True)
    report_path = tmp_path / "bench.json"
    result = run_cli(
        "bench", "--fused", artifact, "--model", "a", "--runs", "3", "--warmup", "0",
        "--rounds", "1", "--json", report_path,
    )  # fmt: skip
    # The fused side was fed a's input only: had it run the whole graph, it would have lacked
    # the picky model's inputs.
    assert result.returncode == 0, result.stderr
    assert "its part" in result.stdout
    report = json.loads(report_path.read_text())
    assert report["environment"]["model"] == "a"
    assert {c["label"] for c in report["configs"]} == {
        f"{side}/sequential/{spin}" for side in ("separate", "fused") for spin in ("spin", "nospin")
    }
    (alone,) = report["separate_models"]
    assert alone["name"] == "a" and alone["path"].endswith("a.aot.onnx")
    unknown = run_cli("bench", "--fused", artifact, "--model", "nope", "--runs", "1")
    assert unknown.returncode == 2 and "no model 'nope'" in unknown.stderr


def test_a_bundle_spec_can_ask_for_no_parts(tmp_path):
    builders.save(builders.affine(0, width=32), tmp_path / "a.onnx")
    builders.save(builders.affine(1, width=32), tmp_path / "b.onnx")
    dist = build_dist(
        tmp_path,
        '[bundles.pair]\nmodels = { a = "a.onnx", b = "b.onnx" }\ntargets = ["onnx", "ort"]\n'
        "parts = false\n",
    )
    assert not list((dist / "pair").glob("*.part-*"))
    (tmp_path / "fusedinf.toml").write_text(
        '[bundles.pair]\nmodels = { a = "a.onnx" }\nparts = "no"\n'
    )
    result = run_cli("bundle", "build", tmp_path / "fusedinf.toml", "--out", tmp_path / "d2")
    assert result.returncode == 2 and "parts is true or false" in result.stderr


@pytest.fixture
def large_pair(tmp_path: Path) -> Path:
    """An `--aot` bundle of two models of 4.6 MiB of weights each."""
    sources = {
        name: builders.save(builders.affine(seed, width=1100), tmp_path / f"{name}.onnx")
        for seed, name in enumerate("ab")
    }
    return _built(sources, tmp_path / "large.onnx", aot=True)


def _counted(bundle: Bundle, key: SessionKey) -> tuple[int, dict[str, int]]:
    """What the loader counts for a session of `bundle`: its own bytes, its pooled weights."""
    counted = bundle.session_bytes(key, pooled=True)
    return counted.private_bytes, dict(counted.weights)


def test_the_budget_counts_the_sessions_a_bundle_holds(tmp_path, large_pair):
    bundle = open_bundle(large_pair)
    assert set(bundle.footprint.parts) == {"a", "b"}  # measured beside the whole
    arena = bundle.footprint.activation_bytes
    part, weights = _counted(bundle, "a")
    whole, all_weights = _counted(bundle, WHOLE)
    assert set(weights) < set(all_weights)  # the part maps its model's weights only
    assert part + sum(weights.values()) < whole + sum(all_weights.values())
    cache = BundleCache(bundle.footprint.alone_bytes)  # room for the whole, not much more
    cache.register(bundle)
    x = np.ones((1, 1100), np.float32)
    cache.run("a", {"x": x})
    assert cache.accounted_bytes == part + sum(weights.values()) + arena
    # The whole does not fit beside the part: the bundle's idle part closes, the bundle stays.
    cache.run("large", {"a/x": x, "b/x": x})
    assert cache.sessions("large") == ["large"] and cache.evictions == []
    assert cache.stats.peak_accounted_bytes <= cache.budget_bytes


def test_a_part_fits_beside_another_bundle_where_its_whole_would_not(tmp_path, large_pair):
    other = _built(
        {"c": builders.save(builders.affine(7, width=1100), tmp_path / "c.onnx"),
         "d": builders.save(builders.affine(8, width=1100), tmp_path / "d.onnx")},
        tmp_path / "other.onnx", aot=True,
    )  # fmt: skip
    first, second = open_bundle(large_pair), open_bundle(other)
    part, weights = _counted(second, "c")
    whole_private, whole_weights = _counted(first, WHOLE)
    arena = max(first.footprint.activation_bytes, second.footprint.activation_bytes)
    cache = BundleCache(whole_private + sum(whole_weights.values()) + part
                        + sum(weights.values()) + arena)  # fmt: skip
    cache.register(first)
    cache.register(second)
    x = np.ones((1, 1100), np.float32)
    cache.run("large", {"a/x": x, "b/x": x})
    cache.run("c", {"x": x})
    assert sorted(cache.resident()) == ["large", "other"] and cache.evictions == []
    cache.run("other", {"c/x": x, "d/x": x})  # its whole does not fit beside the first
    assert cache.evictions == ["large"]
    assert cache.stats.peak_accounted_bytes <= cache.budget_bytes
