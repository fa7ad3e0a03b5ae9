"""What the installed ONNX Runtime can run, said at `fuse` time rather than at load."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from tests.support import builders
from tests.support.commands import assert_clean_failure, run_cli


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


def test_fuse_refuses_a_fused_model_the_installed_runtime_cannot_run(tmp_path):
    decoder = builders.save(image_decoder(), tmp_path / "decoder.onnx")
    affine = builders.save(builders.affine(0, width=4), tmp_path / "affine.onnx")
    out = tmp_path / "fused.onnx"
    result = run_cli("fuse", f"decoder={decoder}", f"affine={affine}", "-o", out)
    assert_clean_failure(
        result, out, mentions=f"ONNX Runtime {ort.__version__} here has no CPU kernel for "
        "ImageDecoder-20"
    )  # fmt: skip
    assert "--opset N" in result.stderr
    # A TensorRT engine or another runtime may still take the model: no ONNX Runtime check.
    plain = run_cli("fuse", f"a={affine}", f"b={affine}", "-o", tmp_path / "plain.onnx")
    assert plain.returncode == 0 and "warning" not in plain.stderr


def test_the_default_opset_falls_to_the_highest_the_runtime_runs_every_operator_at(tmp_path):
    """An opset-18 global mean (ReduceMean-18) and an opset-17 model, fused for a runtime whose
    ReduceMean kernels end before 18: at the models' highest opset it would not load, so they
    are fused at 17, where every operator runs, with a warning; with every kernel there, at 18."""
    from fusedinf_cc.backends.onnxruntime import cpu_kernel_versions
    from fusedinf_cc.common.errors import FusedInfWarning
    from fusedinf_cc.compiler.build import fused_at_an_opset_that_runs
    from fusedinf_cc.compiler.pipeline import fuse
    from fusedinf_cc.onnx_io.model_io import load_sources
    from fusedinf_cc.passes.base import FusionOptions

    mean = builders.make_model(
        [helper.make_node("ReduceMean", ["x", "axes"], ["y"], keepdims=1, noop_with_empty_axes=0)],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 1, 1])],
        [builders.tensor("axes", np.array([2, 3], np.int64))],
        opset=18,
    )
    specs = [
        ("mean", builders.save(mean, tmp_path / "mean.onnx")),
        ("affine", builders.save(builders.affine(0), tmp_path / "affine.onnx")),
    ]
    everything = cpu_kernel_versions()
    older = dict(everything)
    older[("", "ReduceMean")] = tuple(r for r in older[("", "ReduceMean")] if r[0] < 18)
    at_18 = fuse(load_sources(specs), FusionOptions())
    assert at_18.model.opset_imports[""] == 18
    with pytest.warns(
        FusedInfWarning, match="ReduceMean-18 at the models. opset 18; fused at opset 17"
    ):
        chosen = fused_at_an_opset_that_runs(at_18, specs, FusionOptions(), older, 17)
    assert chosen.model.opset_imports[""] == 17
    assert fused_at_an_opset_that_runs(at_18, specs, FusionOptions(), everything, 17) is at_18
