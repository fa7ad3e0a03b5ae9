"""The fresh-process worker that bench and footprints run in."""

from __future__ import annotations

import onnx

from fusedinf_cc.runtime.worker import WARMUP_MODEL


def test_warmup_model_is_a_valid_one_node_model():
    model = onnx.load_from_string(WARMUP_MODEL)
    onnx.checker.check_model(model, full_check=True)
    assert [node.op_type for node in model.graph.node] == ["Relu"]
