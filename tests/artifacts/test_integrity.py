"""An artifact is a set of files; no reader trusts one of them alone, and paths read from files
stay inside their folder."""

from __future__ import annotations

import json
import shutil

import pytest

from fusedinf_cc.artifacts.manifest import manifest_path_for
from fusedinf_cc.common.errors import UserInputError
from fusedinf_cc.compiler.build import build_fused
from fusedinf_cc.runtime.bundle import open_bundle
from tests.support import builders
from tests.support.commands import run_cli


@pytest.mark.parametrize("aot", [False, True])
def test_a_side_file_from_another_build_is_refused_not_run(tmp_path, aot):
    """The state an interrupted overwrite leaves: this build's model and manifest beside the
    next build's side file. Without the side file's digest it loads and answers wrongly."""
    out = tmp_path / "ow.onnx"
    other = tmp_path / "other" / "ow.onnx"
    width = 64 if aot else 1100  # a portable model keeps weights under 8 MiB inside itself
    build_fused(builders.affine_pair_specs(tmp_path / "m0", 0, width), out, aot=aot)
    other.parent.mkdir()
    build_fused(builders.affine_pair_specs(tmp_path / "m1", 1, width), other, aot=aot)
    side = out.with_name(out.name + ".data")
    assert side.is_file()
    assert run_cli("run", out).returncode == 0
    shutil.copyfile(other.with_name(other.name + ".data"), side)
    result = run_cli("run", out)
    assert result.returncode == 2, result.stdout
    assert "differs from the one it was built with" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    side.unlink()
    with pytest.raises(UserInputError, match="is missing"):
        open_bundle(out)


@pytest.mark.parametrize("field", ["path", "external_data"])
def test_a_manifest_cannot_name_a_file_outside_its_folder(tmp_path, field):
    out = tmp_path / "fused.onnx"
    build_fused(builders.affine_pair_specs(tmp_path / "m", 0), out, aot=True)
    sidecar = manifest_path_for(out)
    manifest = json.loads(sidecar.read_text())
    manifest["artifact"][field] = "../../etc/passwd"
    sidecar.write_text(json.dumps(manifest))
    with pytest.raises(UserInputError, match="not a plain file name"):
        open_bundle(out)
    result = run_cli("run", out)
    assert result.returncode == 2 and "not a plain file name" in result.stderr
