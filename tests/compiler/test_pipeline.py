"""The pipeline: deterministic output, and the manifest embedded as the sidecar says."""

from __future__ import annotations

import onnx

from fusedinf_cc.artifacts.manifest import METADATA_KEY
from fusedinf_cc.passes.base import FusionOptions
from tests.support import builders
from tests.support.commands import fuse_files


def test_embedded_manifest_maps_the_same_names_as_the_sidecar(tmp_path):
    a = builders.save(builders.affine(0), tmp_path / "a.onnx")
    b = builders.save(builders.affine(1), tmp_path / "b.onnx")
    out = tmp_path / "fused.onnx"
    manifest = fuse_files([("a", a), ("b", b)], out)
    embedded = {p.key: p.value for p in onnx.load(out).metadata_props}[METADATA_KEY]
    assert '"a/y"' in embedded and '"seconds"' not in embedded
    assert manifest.artifact is not None and manifest.artifact.size_bytes == out.stat().st_size


def test_fusing_is_deterministic(tmp_path):
    a = builders.save(builders.affine(0), tmp_path / "a.onnx")
    b = builders.save(builders.affine(1), tmp_path / "b.onnx")
    first, second = tmp_path / "first.onnx", tmp_path / "second.onnx"
    fuse_files([("a", a), ("b", b)], first, FusionOptions(share_inputs="auto"))
    fuse_files([("a", a), ("b", b)], second, FusionOptions(share_inputs="auto"))
    assert first.read_bytes() == second.read_bytes()
