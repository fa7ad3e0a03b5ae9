"""Source models read with their external data memory-mapped."""

from __future__ import annotations

import onnx
import pytest

from fusedinf_cc.common.errors import UserInputError
from fusedinf_cc.onnx_io.model_io import load_model
from tests.support import builders
from tests.support.commands import fuse_files
from tests.support.oracle import assert_bitwise


def test_models_with_external_data(tmp_path):
    external = tmp_path / "ext"
    external.mkdir()
    model = builders.affine(0, width=64)
    onnx.save_model(
        model,
        external / "a.onnx",
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="a.weights",
        size_threshold=0,
    )
    b = builders.save(builders.affine(1, width=64), tmp_path / "b.onnx")
    out = tmp_path / "fused.onnx"
    manifest = fuse_files([("a", external / "a.onnx"), ("b", b)], out)
    assert manifest.footprint["weight_bytes"] == 2 * (64 * 64 + 64) * 4
    assert_bitwise(out, manifest)


@pytest.mark.parametrize("external", [False, True])
def test_an_initializer_holding_less_than_it_declares_is_refused(tmp_path, external):
    """2^40 floats declared, 16 bytes held: refused when read, not after it fused."""
    lie = onnx.TensorProto(name="w", data_type=onnx.TensorProto.FLOAT, dims=[2**20, 2**20])
    lie.raw_data = b"\0" * 16
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Add", ["x", "w"], ["y"])],
        "liar",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 2**20])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2**20, 2**20])],
        [lie],
    )
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])
    path = tmp_path / "liar.onnx"
    if external:
        onnx.save(model, path, save_as_external_data=True, location="liar.data", size_threshold=0)
    else:
        onnx.save(model, path)
    with pytest.raises(
        UserInputError, match=r"initializer 'w' declares shape \[1048576, 1048576\]"
    ):
        load_model(path)
