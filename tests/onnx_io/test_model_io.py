"""Source models read with their external data memory-mapped."""

from __future__ import annotations

import onnx

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
