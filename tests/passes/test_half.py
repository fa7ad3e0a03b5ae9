"""half: the FP16 copy of a graph that TensorRT 11 builds, its interface kept; INT8 from Q/DQ."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx_ir as ir
import pytest
from onnx import helper

from fusedinf_cc.backends.tensorrt.options import (
    EngineOptions,
)
from fusedinf_cc.common.errors import UserInputError
from fusedinf_cc.common.tolerances import (
    DEFAULT_ATOL,
    DEFAULT_RTOL,
    FP16_ATOL,
    FP16_RTOL,
    default_tolerances,
)
from fusedinf_cc.compiler.targets.tensorrt import model_for_builder
from tests.support import builders
from tests.support.builders import FLOAT
from tests.support.commands import run_cli


def _fused(tmp_path: Path) -> ir.Model:
    a = builders.save(builders.affine(0, batch="n"), tmp_path / "a.onnx")
    b = builders.save(builders.small_cnn(1), tmp_path / "b.onnx")
    out = tmp_path / "fused.onnx"
    result = run_cli("fuse", a, b, "-o", out)
    assert result.returncode == 0, result.stderr
    return ir.load(out)


def test_fp16_for_tensorrt_11_converts_the_graph_and_keeps_its_interface(tmp_path):
    ort = pytest.importorskip("onnxruntime", reason="runs both graphs on ONNX Runtime")
    fused = _fused(tmp_path)
    half = model_for_builder(fused, EngineOptions(fp16=True), "11.4.0.106", "fused.engine")
    assert model_for_builder(fused, EngineOptions(fp16=True), "10.3.0", "f.engine") is fused

    def interface(model: ir.Model) -> list[tuple[str, ir.DataType | None]]:
        return [(v.name, v.dtype) for v in [*model.graph.inputs, *model.graph.outputs]]

    assert interface(half) == interface(fused)
    weights = [v.const_value.dtype for v in half.graph.initializers.values() if v.const_value]
    assert ir.DataType.FLOAT16 in weights and ir.DataType.FLOAT not in weights
    half_path = tmp_path / "half.onnx"
    ir.save(half, half_path)
    sessions = [
        ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        for path in (tmp_path / "fused.onnx", half_path)
    ]
    rng = np.random.default_rng(0)
    feeds = {
        i.name: rng.standard_normal([d if isinstance(d, int) else 2 for d in i.shape]).astype(
            np.float32
        )
        for i in sessions[0].get_inputs()
    }
    runs = [
        dict(zip([o.name for o in s.get_outputs()], s.run(None, feeds), strict=True))
        for s in sessions
    ]
    full, reduced = runs
    for name, expected in full.items():
        assert reduced[name].dtype == np.float32
        np.testing.assert_allclose(reduced[name], expected, rtol=FP16_RTOL, atol=FP16_ATOL)
    # FP16 is not FP32: the defaults would fail what FP16's tolerances pass.
    assert not all(
        np.allclose(reduced[name], expected, rtol=DEFAULT_RTOL, atol=DEFAULT_ATOL)
        for name, expected in full.items()
    )
    assert default_tolerances({"fp16": True}) == (FP16_RTOL, FP16_ATOL)
    assert default_tolerances({"fp16": False}) == (DEFAULT_RTOL, DEFAULT_ATOL)


def test_int8_for_tensorrt_11_needs_qdq_nodes(tmp_path):
    fused = _fused(tmp_path)
    with pytest.raises(UserInputError, match="takes its scales from Q/DQ nodes"):
        model_for_builder(fused, EngineOptions(int8=True), "11.4.0.106", "fused.engine")
    scale, zero = builders.tensor("s", np.float32(0.05)), builders.tensor("z", np.int8(0))
    quantized = builders.make_model(
        [
            helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
            helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"]),
        ],
        [helper.make_tensor_value_info("x", FLOAT, [4])],
        [helper.make_tensor_value_info("y", FLOAT, [4])],
        [scale, zero],
    )
    model = ir.serde.deserialize_model(quantized)
    kept = model_for_builder(model, EngineOptions(int8=True), "11.4.0.106", "q.engine")
    assert kept is model
