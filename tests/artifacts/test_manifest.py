"""The manifest: round trips, and refuses formats it does not know."""

from __future__ import annotations

import json

import pytest

from fusedinf_cc.artifacts.manifest import Manifest, ModelEntry, read_manifest
from fusedinf_cc.artifacts.weight_records import WeightRecord
from fusedinf_cc.common.errors import UserInputError


def test_manifest_round_trips_and_refuses_unknown_formats(tmp_path):
    manifest = Manifest(
        models=[ModelEntry("a", "a.onnx", "00", {"x": "a/x"}, {"y": "a/y"})],
        weights=[WeightRecord("w", "d0", 4096, 64, "float32", (4, 4), packable=True)],
    )
    path = tmp_path / "m.json"
    path.write_text(manifest.to_json())
    assert read_manifest(path) == manifest
    data = json.loads(path.read_text())
    data["weights"][0]["shape"] = ["four", 4]
    path.write_text(json.dumps(data))
    with pytest.raises(UserInputError, match="manifest is malformed"):
        read_manifest(path)
    data["weights"] = manifest.to_dict()["weights"]
    data["format"] = "fusedinf-bundle/99"
    path.write_text(json.dumps(data))
    with pytest.raises(UserInputError, match="fusedinf-bundle/99"):
        read_manifest(path)
    path.write_text("[1, 2]")
    with pytest.raises(UserInputError, match="not a JSON manifest"):
        read_manifest(path)
