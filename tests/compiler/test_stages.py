"""Stages: an ahead-of-time artifact cut into spans of its graph that run one after another."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from onnx import TensorProto, helper

from fusedinf_cc.common.errors import UserInputError
from fusedinf_cc.compiler.build import build_fused
from fusedinf_cc.runtime.bundle import open_bundle
from fusedinf_cc.runtime.loader import BundleCache
from tests.support import builders
from tests.support.commands import assert_clean_failure, run_cli

pytest.importorskip("onnxruntime", reason="needs ONNX Runtime")


def chain(length: int, width: int = 256) -> object:
    """x -> MatMul -> Relu -> ... : `length` weights of width x width floats, one after another."""
    nodes, weights = [], []
    for index in range(length):
        source = "x" if index == 0 else f"r{index - 1}"
        nodes.append(helper.make_node("MatMul", [source, f"w{index}"], [f"m{index}"]))
        target = "y" if index == length - 1 else f"r{index}"
        nodes.append(helper.make_node("Relu", [f"m{index}"], [target]))
        values = np.random.default_rng(index).standard_normal((width, width)) / width**0.5
        weights.append(builders.tensor(f"w{index}", values.astype(np.float32)))
    return builders.make_model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, width])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, width])],
        weights,
    )


@pytest.fixture
def staged(tmp_path):
    source = builders.save(chain(8), tmp_path / "chain.onnx")
    out = tmp_path / "chain.aot.onnx"
    manifest = build_fused([f"c={source}"], out, aot=True, stages=4)
    return out, manifest


def test_stages_split_the_weights_evenly_and_pass_on_what_later_ones_read(staged):
    out, manifest = staged
    stages = manifest.stages
    assert [stage.index for stage in stages] == [0, 1, 2, 3]
    assert all(out.with_name(stage.path).is_file() for stage in stages)
    assert [stage.weight_bytes for stage in stages] == [2 * 256 * 256 * 4] * 4
    assert stages[0].inputs == ["c/x"] and stages[-1].outputs == ["c/y"]
    for before, after in itertools.pairwise(stages):
        assert after.inputs == before.outputs and len(before.outputs) == 1  # one value crosses
    rebuilt = build_fused([f"c={out.with_name('chain.onnx')}"], out, aot=True)
    assert rebuilt.stages == [] and not list(out.parent.glob("*.stage-*"))  # none left behind


def test_a_bundle_larger_than_the_budget_runs_stage_by_stage_bitwise(staged):
    out, _ = staged
    bundle = open_bundle(out, name="chain")
    x = np.linspace(-1, 1, 256, dtype=np.float32).reshape(1, 256)
    whole = BundleCache(1 << 30)
    whole.register(bundle)
    expected = whole.run("chain", {"c/x": x})
    whole.close()
    arena = bundle.footprint.activation_bytes
    for loading in ("linear", "interleaved"):
        need = bundle.streamed_bytes(True, ahead=loading == "interleaved") + arena
        assert need < bundle.footprint.loading_peak_bytes + arena
        cache = BundleCache(need, loading=loading)
        cache.register(open_bundle(out, name="chain"))
        got = cache.run("chain", {"c/x": x})
        assert got["c/y"].tobytes() == expected["c/y"].tobytes()
        assert cache.stats.streamed_runs == 1 and cache.stats.sessions_opened == 4
        assert cache.stats.peak_accounted_bytes <= need
        assert cache.resident() == []  # nothing of it stays
        assert [spec.name for spec in cache.input_specs("chain")] == ["c/x"]
        cache.close()


def test_a_staged_bundle_is_measured_stage_by_stage_never_whole(tmp_path):
    """Its footprint is each stage's, measured one at a time: the probe never holds more than
    a stage's weights and what runs beside them, so a bundle larger than the machine's memory
    is measured where it runs. The loader then counts each stage by what was measured of it."""
    source = builders.save(chain(8, width=1024), tmp_path / "wide.onnx")
    out = tmp_path / "wide.aot.onnx"
    manifest = build_fused([f"c={source}"], out, aot=True, stages=4)
    weights = sum(stage.weight_bytes for stage in manifest.stages)  # 32 MiB
    footprint = open_bundle(out, name="wide").footprint
    assert len(footprint.stages) == 4
    for stage, added in zip(manifest.stages, footprint.stages, strict=True):
        assert stage.weight_bytes <= added < stage.weight_bytes + (8 << 20)
    assert max(footprint.stages) < weights / 2  # the whole was never held
    assert footprint.measured_bytes == sum(footprint.stages) >= weights
    bundle = open_bundle(out, name="wide")
    x = np.ones((1, 1024), np.float32)
    need = bundle.streamed_bytes(True, ahead=False) + footprint.activation_bytes
    assert need < weights / 2
    cache = BundleCache(need, loading="linear")
    cache.register(bundle)
    assert cache.run("wide", {"c/x": x})["c/y"].shape == (1, 1024)
    assert cache.stats.streamed_runs == 1 and cache.stats.peak_accounted_bytes <= need
    cache.close()


def test_too_small_a_budget_is_refused_naming_what_fits(staged, tmp_path):
    out, _ = staged
    bundle = open_bundle(out, name="chain")
    with pytest.raises(UserInputError, match=r"more than the whole budget .*, even stage by stage"):
        BundleCache(bundle.footprint.activation_bytes, loading="linear").register(bundle)
    single = tmp_path / "single.aot.onnx"
    build_fused([f"c={out.with_name('chain.onnx')}"], single, aot=True)
    unstaged = open_bundle(single, name="single")
    with pytest.raises(UserInputError, match=r"fuse --aot --stages auto"):
        BundleCache(unstaged.footprint.activation_bytes + 1).register(unstaged)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--stages", "1"], "--stages 1: give a count of at least 2, or auto"),
        (["--stages", "many"], "--stages many: give a count of at least 2, or auto"),
        (["--stages", "99"], "--stages 99: the built graph has"),
        (["--stages", "2", "--no-aot-here"], "add --aot"),
    ],
)
def test_a_stage_count_the_graph_cannot_take_is_one_line(tmp_path, options, message):
    source = builders.save(chain(2), tmp_path / "chain.onnx")
    out = tmp_path / "out.onnx"
    aot = [] if "--no-aot-here" in options else ["--aot"]
    given = [option for option in options if option != "--no-aot-here"]
    result = run_cli("fuse", source, "-o", out, *aot, *given)
    assert_clean_failure(result, out, mentions=message)


def test_a_changed_stage_file_is_refused_not_run(staged):
    out, manifest = staged
    bundle = open_bundle(out, name="chain")
    cache = BundleCache(bundle.streamed_bytes(True, ahead=True) + bundle.footprint.activation_bytes)
    cache.register(bundle)
    stage = out.with_name(manifest.stages[2].path)
    stage.write_bytes(stage.read_bytes() + b"\0")
    with pytest.raises(UserInputError, match=r"its stage 2 .* differs from the one it was built"):
        cache.run("chain", {"c/x": np.zeros((1, 256), np.float32)})
    assert cache.resident() == [] and cache.accounted_bytes == 0  # nothing of it counted
