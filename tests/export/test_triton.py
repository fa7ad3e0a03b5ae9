"""`export triton`: a Triton model repository entry that Triton's own schema accepts."""

from __future__ import annotations

import numpy as np
import pytest

from tests.support import builders
from tests.support.commands import run_cli


def test_triton_export_parses_as_triton_model_config(project):
    text_format = pytest.importorskip("google.protobuf.text_format")
    model_config = pytest.importorskip(
        "tritonclient.grpc.model_config_pb2", reason="needs tritonclient (the dev extra)"
    )
    assert run_cli("bundle", "build", "fusedinf.toml", "--out", "dist", cwd=project).returncode == 0
    result = run_cli("export", "triton", "dist/pair", "-o", "repo", cwd=project)
    assert result.returncode == 0, result.stderr
    folder = project / "repo" / "pair"
    config = text_format.Parse((folder / "config.pbtxt").read_text(), model_config.ModelConfig())
    assert config.name == "pair" and config.platform == "onnxruntime_onnx"
    # every tensor has the dynamic batch dim n: Triton batches along it
    assert config.max_batch_size == 8
    fp32 = model_config.DataType.Value("TYPE_FP32")
    assert [(t.name, t.data_type, list(t.dims)) for t in config.input] == [("x", fp32, [8])]
    assert sorted((t.name, t.data_type, list(t.dims)) for t in config.output) == [
        ("a/y", fp32, [8]),
        ("b/y", fp32, [8]),
    ]
    assert config.instance_group[0].kind == model_config.ModelInstanceGroup.Kind.Value("KIND_CPU")
    assert (folder / "1" / "model.onnx").read_bytes() == (
        project / "dist" / "pair" / "pair.onnx"
    ).read_bytes()

    solo = run_cli("export", "triton", "dist/solo", "-o", "repo", cwd=project)
    assert solo.returncode == 0, solo.stderr
    config = text_format.Parse(
        (project / "repo" / "solo" / "config.pbtxt").read_text(), model_config.ModelConfig()
    )
    assert config.max_batch_size == 0 and list(config.input[0].dims) == [1, 4]
    again = run_cli("export", "triton", "dist/solo", "-o", "repo", cwd=project)
    assert again.returncode == 2 and "exists" in again.stderr


def test_triton_export_copies_the_external_weights_file(tmp_path):
    big = builders.affine(0, width=1500, weight=np.ones((1500, 1500), np.float32))
    builders.save(big, tmp_path / "big.onnx")
    (tmp_path / "fusedinf.toml").write_text('[bundles.big]\nmodels = { m = "big.onnx" }\n')
    assert (
        run_cli("bundle", "build", "fusedinf.toml", "--out", "dist", cwd=tmp_path).returncode == 0
    )
    assert (tmp_path / "dist" / "big" / "big.onnx.data").is_file()
    assert run_cli("export", "triton", "dist/big", "-o", "repo", cwd=tmp_path).returncode == 0
    assert (tmp_path / "repo" / "big" / "1" / "big.onnx.data").is_file()
