"""The streamed single-file writer produces the model onnx itself would, weights included."""

from __future__ import annotations

import io

import numpy as np
import onnx
import onnx_ir as ir

from fusedinf_cc.onnx_io.stream import write_streamed
from tests.support import builders


def test_streamed_file_parses_to_the_same_model_and_leaves_the_model_unchanged(tmp_path):
    big = np.random.default_rng(0).standard_normal((300, 300)).astype(np.float32)
    proto = builders.affine(0, width=300, weight=big)
    proto.graph.initializer.append(builders.tensor("unused_small", np.arange(3, dtype=np.int64)))
    model = ir.from_proto(proto)
    expected = ir.to_proto(model)
    stream = io.BytesIO()
    write_streamed(model, stream)
    parsed = onnx.load_from_string(stream.getvalue())
    by_name = {t.name: t for t in parsed.graph.initializer}
    assert by_name.keys() == {t.name for t in expected.graph.initializer}
    for tensor in expected.graph.initializer:
        np.testing.assert_array_equal(
            onnx.numpy_helper.to_array(by_name[tensor.name]), onnx.numpy_helper.to_array(tensor)
        )
    assert parsed.graph.node == expected.graph.node
    assert ir.to_proto(model) == expected  # initializers back, in their order
    onnx.checker.check_model(parsed, full_check=True)
