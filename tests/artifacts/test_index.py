"""A dist folder's index (bundle.json): every file hashed, and `bundle verify` naming what is
damaged."""

from __future__ import annotations

import json
import shutil

import pytest

from fusedinf_cc.artifacts.index import INDEX, verify_bundle_dir
from fusedinf_cc.common.errors import UserInputError
from fusedinf_cc.runtime.loader import BundleCache
from tests.support.commands import run_cli


def test_verify_lists_what_is_damaged(project):
    assert run_cli("bundle", "build", "fusedinf.toml", "--out", "dist", cwd=project).returncode == 0
    dist = project / "dist"
    with open(dist / "pair" / "pair.ort", "r+b") as stream:
        stream.seek(100)
        stream.write(b"\x00\x01\x02")
    (dist / "solo" / "solo.onnx").unlink()
    result = run_cli("bundle", "verify", "dist", cwd=project)
    assert result.returncode == 1
    assert "pair/pair.ort: sha256 differs" in result.stdout
    assert "solo/solo.onnx: missing" in result.stdout


@pytest.mark.parametrize("where", ["absolute", "climbs"])
def test_a_bundle_index_cannot_name_a_file_outside_its_folder(pair_dist, tmp_path, where):
    from fusedinf_cc.serve.app import register_dist

    outside = tmp_path / "elsewhere.onnx"
    shutil.copyfile(pair_dist / "pair" / "pair.onnx", outside)
    index_file = pair_dist / "pair" / INDEX
    index = json.loads(index_file.read_text())
    index["artifacts"][0]["path"] = str(outside) if where == "absolute" else "../../elsewhere.onnx"
    index_file.write_text(json.dumps(index))
    with pytest.raises(UserInputError, match="not a file of this bundle"):
        register_dist(BundleCache(1 << 30), pair_dist, "ort-cpu")
    assert any("not a file of this bundle" in p for p in verify_bundle_dir(pair_dist / "pair"))
    assert run_cli("bundle", "verify", pair_dist).returncode == 1


def test_a_built_bundle_hashes_its_manifests_too(pair_dist):
    manifest = pair_dist / "pair" / "pair.onnx.manifest.json"
    assert manifest.name in json.loads((pair_dist / "pair" / INDEX).read_text())["files"]
    manifest.write_text(manifest.read_text().replace('"a/x"', '"a/z"'))
    assert any("sha256 differs" in p for p in verify_bundle_dir(pair_dist / "pair"))
