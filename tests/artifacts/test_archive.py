"""`bundle pack` and `unpack`: reproducible archives, and nothing unsafe or unlisted unpacked."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

from tests.support.commands import run_cli


def _archive(path: Path, members: list[tuple[tarfile.TarInfo, bytes]]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for info, data in members:
            info.size = len(data) if info.isfile() else 0
            tar.addfile(info, io.BytesIO(data) if info.isfile() else None)
    return path


def _index(files: dict[str, bytes]) -> bytes:
    import hashlib

    return json.dumps(
        {
            "format": "fusedinf-dist/1",
            "name": "x",
            "cache_key": "k",
            "artifacts": [],
            "files": {name: hashlib.sha256(data).hexdigest() for name, data in files.items()},
        }
    ).encode()


def _link(name: str, target: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.SYMTYPE
    info.linkname = target
    return info


def test_pack_is_reproducible_and_unpack_restores_verified_bundles(project):
    assert run_cli("bundle", "build", "fusedinf.toml", "--out", "dist", cwd=project).returncode == 0
    for name in ("a.tar.gz", "b.tar.gz"):
        assert run_cli("bundle", "pack", "dist", "-o", name, cwd=project).returncode == 0
    assert (project / "a.tar.gz").read_bytes() == (project / "b.tar.gz").read_bytes()
    result = run_cli("bundle", "unpack", "a.tar.gz", "-o", "edge", cwd=project)
    assert result.returncode == 0, result.stderr
    assert run_cli("bundle", "verify", "edge", cwd=project).returncode == 0
    run = run_cli("run", project / "edge" / "pair" / "pair.onnx")
    assert run.returncode == 0, run.stderr


@pytest.mark.parametrize(
    ("members", "expected"),
    [
        ([(tarfile.TarInfo("/etc/x"), b"x")], "absolute path '/etc/x'"),
        ([(tarfile.TarInfo("x/../../evil"), b"x")], "climbs out with '..'"),
        (
            [
                (tarfile.TarInfo("x/bundle.json"), _index({})),
                (_link("x/m.onnx", "/etc/passwd"), b""),
            ],
            "'x/m.onnx' is a link",
        ),
        (
            [
                (tarfile.TarInfo("x/bundle.json"), _index({"m.onnx": b"m"})),
                (tarfile.TarInfo("x/m.onnx"), b"m"),
                (tarfile.TarInfo("x/extra.sh"), b"#!/bin/sh"),
            ],
            "'x/extra.sh' is not named by its bundle's bundle.json",
        ),
        (
            [
                (tarfile.TarInfo("x/bundle.json"), _index({"m.onnx": b"m"})),
                (tarfile.TarInfo("x/m.onnx"), b"tampered"),
            ],
            "x/m.onnx: sha256 differs",
        ),
    ],
)
def test_unpack_refuses_unsafe_or_unlisted_entries(tmp_path, members, expected):
    archive = _archive(tmp_path / "evil.tar.gz", members)
    result = run_cli("bundle", "unpack", archive, "-o", tmp_path / "out")
    assert result.returncode == 2, result.stdout + result.stderr
    assert expected in result.stderr
    out = tmp_path / "out"
    assert not out.exists() or not [p for p in out.iterdir() if not p.name.startswith(".")]
    assert not (tmp_path / "evil").exists()
