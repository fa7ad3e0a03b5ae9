"""cleanup: the fused model checked by onnx, held to no stricter check than its sources."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from fusedinf_cc.compiler.build import build_fused
from tests.support import builders, oracle


def test_the_fused_model_is_held_to_no_stricter_check_than_its_sources(tmp_path):
    """`MeanVarianceNormalization` is a function op whose body fails onnx's full check (its
    `Constant`), yet ONNX Runtime runs it: beside it, the fused model gets the structural check
    (a failure on an operator no source fails on is still refused)."""
    mvn_graph = helper.make_graph(
        [helper.make_node("MeanVarianceNormalization", ["x"], ["y"])],
        "mvn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 3, 3, 1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 3, 3, 1])],
    )
    mvn = helper.make_model(mvn_graph, opset_imports=[helper.make_opsetid("", 13)])
    mvn.ir_version = 7
    with pytest.raises(onnx.shape_inference.InferenceError):
        onnx.checker.check_model(mvn, full_check=True)  # the source fails it alone
    onnx.save(mvn, tmp_path / "mvn.onnx")
    mean_graph = helper.make_graph(
        [helper.make_node("Mean", ["a", "b"], ["c"])],
        "mean",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [3]) for n in ("a", "b")],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, [3])],
    )
    mean = helper.make_model(mean_graph, opset_imports=[helper.make_opsetid("", 13)])
    mean.ir_version = 7
    onnx.save(mean, tmp_path / "mean.onnx")
    out = tmp_path / "fused.onnx"
    manifest = build_fused([f"mvn={tmp_path / 'mvn.onnx'}", f"mean={tmp_path / 'mean.onnx'}"], out)
    assert "shape inference fails on source mvn too" in manifest.passes[-1].detail
    x = np.random.default_rng(0).standard_normal((3, 3, 3, 1)).astype(np.float32)
    a, b = np.array([1, 2, 3], np.float32), np.array([3, 4, 7], np.float32)
    got = oracle.outputs(out, {"mvn/x": x, "mean/a": a, "mean/b": b})
    centred = x - x.mean(axis=(0, 2, 3), keepdims=True)
    expected = centred / np.sqrt((centred**2).mean(axis=(0, 2, 3), keepdims=True))
    np.testing.assert_allclose(got["mvn/y"], expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(got["mean/c"], (a + b) / 2)


def test_a_check_failure_that_no_source_shares_is_not_excused(tmp_path):
    from fusedinf_cc.onnx_io.model_io import load_sources
    from fusedinf_cc.passes.cleanup import _sources_failing_alike

    affine = builders.save(builders.affine(0, width=4), tmp_path / "affine.onnx")
    (member,) = load_sources([("affine", affine)])
    failure = "[ShapeInferenceError] Inference error(s): (op_type:MatMul): incompatible shapes"
    assert _sources_failing_alike([member], failure) == []
