"""An ahead-of-time side file lies in the order the graph first reads its weights."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from onnx.external_data_helper import ExternalDataInfo

from fusedinf_cc.compiler.build import build_fused
from fusedinf_cc.compiler.targets.weight_order import order_by_first_use
from tests.support import builders

ort = pytest.importorskip("onnxruntime", reason="needs ONNX Runtime")


def _chain(length: int, width: int = 64) -> onnx.ModelProto:
    """x @ w0 @ w1 ... with the weights listed last-used first, as a runtime may hold them."""
    nodes, weights = [], []
    for index in range(length):
        source = "x" if index == 0 else f"h{index - 1}"
        target = "y" if index == length - 1 else f"h{index}"
        nodes.append(helper.make_node("MatMul", [source, f"w{index}"], [target]))
        values = np.random.default_rng(index).standard_normal((width, width)).astype(np.float32)
        weights.append(builders.tensor(f"w{index}", values))
    return builders.make_model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, width])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, width])],
        list(reversed(weights)),
    )


def _offsets_by_first_use(path):
    model = onnx.load(str(path), load_external_data=False)
    stored = {t.name: ExternalDataInfo(t).offset for t in model.graph.initializer}
    return [stored[node.input[1]] for node in model.graph.node]


def _run(path):
    x = np.linspace(-1, 1, 64, dtype=np.float32).reshape(1, 64)
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})


def test_the_side_file_is_rewritten_in_first_use_order_and_computes_the_same(tmp_path):
    path = tmp_path / "chain.onnx"
    onnx.save(
        _chain(6), path, save_as_external_data=True, location="chain.onnx.data", size_threshold=0
    )
    before = _offsets_by_first_use(path)
    assert before == sorted(before, reverse=True)  # written in the order listed: last used first
    expected = _run(path)
    assert order_by_first_use(path, "chain.onnx.data")
    after = _offsets_by_first_use(path)
    assert after == sorted(after)
    assert all(offset % 64 == 0 for offset in after)
    assert _run(path)[0].tobytes() == expected[0].tobytes()
    assert not order_by_first_use(path, "chain.onnx.data")  # already in order: untouched


def test_an_ahead_of_time_bundle_and_its_records_follow_first_use(tmp_path):
    source = tmp_path / "chain.onnx"
    builders.save(_chain(8), source)
    out = tmp_path / "fused.onnx"
    manifest = build_fused([f"c={source}"], out, aot=True)
    offsets = [record.offset for record in manifest.weights]
    assert len(offsets) == 8 and offsets == sorted(offsets)
    model = onnx.load(str(out), load_external_data=False)
    first_read = {}
    for index, node in enumerate(model.graph.node):
        for name in node.input:
            first_read.setdefault(name, index)
    assert [first_read[r.name] for r in manifest.weights] == sorted(
        first_read[r.name] for r in manifest.weights
    )
