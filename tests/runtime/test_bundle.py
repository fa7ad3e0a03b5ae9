"""Opening a bundle: checked against its manifest, its footprint known, a changed file refused."""

from __future__ import annotations

import json

import onnx
import pytest

from fusedinf_cc.artifacts.manifest import manifest_path_for
from fusedinf_cc.common.errors import UserInputError
from fusedinf_cc.runtime.bundle import open_bundle
from tests.support.bundles import fused_pair_bundle


def test_an_engine_manifest_with_a_negative_size_is_refused(tmp_path):
    engine = tmp_path / "fused.engine"
    engine.write_bytes(b"not a real plan")
    manifest = {
        "format": "fusedinf-bundle/1",
        "models": [],
        "footprint": {"engine_bytes": 10, "device_memory_bytes": -(10**15)},
    }
    manifest_path_for(engine).write_text(json.dumps(manifest))
    with pytest.raises(UserInputError, match="not a number of bytes"):
        open_bundle(engine)


def test_a_changed_artifact_is_refused(tmp_path):
    path = fused_pair_bundle(tmp_path, "solo", 8, width=64)
    model = onnx.load(path)
    model.doc_string = "edited after the build"
    onnx.save(model, path)
    with pytest.raises(UserInputError, match="sha256 differs from its manifest"):
        open_bundle(path)
