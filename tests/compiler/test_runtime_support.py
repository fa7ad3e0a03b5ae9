"""What the installed ONNX Runtime can run, said at `fuse` time rather than at load."""

from __future__ import annotations

import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from tests.support import builders, oracle
from tests.support.commands import run_cli


def image_decoder() -> onnx.ModelProto:
    """A valid opset-20 model whose one operator ONNX Runtime implements no CPU kernel for."""
    graph = helper.make_graph(
        [helper.make_node("ImageDecoder", ["encoded"], ["image"])],
        "decoder",
        [helper.make_tensor_value_info("encoded", TensorProto.UINT8, [None])],
        [helper.make_tensor_value_info("image", TensorProto.UINT8, [None, None, 3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    onnx.checker.check_model(model, full_check=True)
    return model


def test_fuse_says_at_once_when_the_installed_runtime_cannot_run_the_fused_model(tmp_path):
    decoder = builders.save(image_decoder(), tmp_path / "decoder.onnx")
    affine = builders.save(builders.affine(0, width=4), tmp_path / "affine.onnx")
    out = tmp_path / "fused.onnx"
    result = run_cli("fuse", f"decoder={decoder}", f"affine={affine}", "-o", out)
    assert result.returncode == 0, result.stderr
    (line,) = [x for x in result.stderr.splitlines() if x.startswith("warning:")]
    assert f"ONNX Runtime {ort.__version__} here has no CPU kernel for ImageDecoder-20" in line
    assert "--opset N" in line and out.exists()
    with pytest.raises(Exception, match="ImageDecoder"):  # what the warning foretold
        oracle.outputs(out, {})
    # A fused model the runtime runs gets no warning.
    plain = run_cli("fuse", f"a={affine}", f"b={affine}", "-o", tmp_path / "plain.onnx")
    assert plain.returncode == 0 and "warning" not in plain.stderr
