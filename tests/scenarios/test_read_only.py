"""A dist folder nobody may write to serves, runs and verifies, and is left exactly as it was.

Footprints are measured once per machine and kept in a cache outside the model folder. Root
(as CI runs) ignores write bits, so as root every command runs in a mount namespace of its own
where the folder is a read-only bind mount (a container's image or a Jetson's read-only root);
as anyone else, the folder's write bits are taken away.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from fusedinf_cc.runtime.bundle import open_bundle
from fusedinf_cc.runtime.footprint import FootprintCache
from tests.support import builders
from tests.support.commands import build_dist
from tests.support.serving import serve_one_request

ort = pytest.importorskip("onnxruntime", reason="needs ONNX Runtime")
# Runs the rest of the line with the folder "$0" mounted read-only, in a namespace of its own.
_READ_ONLY_MOUNT = 'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" "$0" && exec "$@"'


def _reader(folder: Path, command: list[str]) -> list[str]:
    """`command` as a reader that cannot write `folder`."""
    if os.geteuid() != 0:
        return command
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", _READ_ONLY_MOUNT,
            str(folder), *command]  # fmt: skip


def _snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {
        str(path.relative_to(folder)): (path.read_bytes(), path.stat().st_mtime_ns)
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


@pytest.fixture
def read_only_dist() -> Iterator[tuple[Path, Path]]:
    """(dist, cache folder): a built dist that the reader cannot write, and a cache it can."""
    root = Path(tempfile.mkdtemp(prefix="fusedinf-read-only-"))
    cache = Path(tempfile.mkdtemp(prefix="fusedinf-footprints-"))
    try:
        models = root / "models"
        models.mkdir()
        for seed in range(2):
            builders.save(builders.affine(seed, width=32), models / f"m{seed}.onnx")
        build_dist(
            root, '[bundles.pair]\nmodels = { a = "models/m0.onnx", b = "models/m1.onnx" }\n'
        )
        if os.geteuid() == 0:
            probe = _reader(root, ["sh", "-c", f"! touch {root}/probe 2>/dev/null"])
            if subprocess.run(probe, capture_output=True, check=False).returncode != 0:
                pytest.skip("root here cannot make a read-only bind mount in a mount namespace")
        else:
            for path in [root, *root.rglob("*")]:
                path.chmod(path.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
        yield root / "dist", cache
    finally:
        for path in [root, *root.rglob("*")]:
            path.chmod(path.stat().st_mode | stat.S_IWUSR)
        shutil.rmtree(root)
        shutil.rmtree(cache)


def _cli(dist: Path, cache: Path, *args: str | Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "FUSEDINF_CACHE_DIR": str(cache), "COLUMNS": "200"}
    command = [sys.executable, "-m", "fusedinf_cc", *map(str, args)]
    return subprocess.run(
        _reader(dist.parent, command), capture_output=True, text=True, env=env, check=False
    )


def test_a_read_only_dist_serves_runs_and_verifies_and_is_left_unchanged(read_only_dist):
    dist, cache = read_only_dist
    artifact = dist / "pair" / "pair.onnx"
    before = _snapshot(dist.parent)

    ran = _cli(dist, cache, "run", artifact)
    assert ran.returncode == 0, ran.stderr
    measured = sorted((cache / "footprints").iterdir())
    assert len(measured) == 1  # the footprint went to the cache, once
    stamp = measured[0].stat().st_mtime_ns
    assert _cli(dist, cache, "run", artifact, "--model", "a").returncode == 0
    assert measured[0].stat().st_mtime_ns == stamp  # read back, not measured again

    checked = _cli(dist, cache, "verify", artifact)
    assert checked.returncode == 0 and "outputs match" in checked.stdout, checked.stderr
    assert _cli(dist, cache, "bundle", "verify", dist).returncode == 0

    pytest.importorskip("starlette", reason="needs the serve extra")
    env = {**os.environ, "FUSEDINF_CACHE_DIR": str(cache)}
    outputs, _ = serve_one_request(dist, env, wrap=lambda command: _reader(dist.parent, command))
    x = np.ones((1, 32), np.float32)
    expected = ort.InferenceSession(str(dist.parent / "models" / "m1.onnx")).run(None, {"x": x})
    np.testing.assert_allclose(outputs, expected[0].ravel(), rtol=1e-6)
    assert measured[0].stat().st_mtime_ns == stamp

    assert _snapshot(dist.parent) == before  # not a byte, not a timestamp changed


def test_a_footprint_is_kept_per_artifact_and_machine_outside_the_model_folder(tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    builders.save(builders.affine(3, width=32), models / "m.onnx")
    artifact = models / "m.onnx"
    cache = FootprintCache(tmp_path / "cache")
    before = _snapshot(models)
    first = open_bundle(artifact, footprints=cache)
    assert first.footprint.measured_bytes > 0
    (record,) = (tmp_path / "cache" / "footprints").iterdir()
    stamp = record.stat().st_mtime_ns
    again = open_bundle(artifact, footprints=cache)
    assert again.footprint == first.footprint and record.stat().st_mtime_ns == stamp
    assert _snapshot(models) == before

    # A damaged record is measured again, never trusted: bad accounting must not reach a budget.
    record.write_text(json.dumps({**json.loads(record.read_text()), "measured_bytes": -(10**15)}))
    assert cache.get(record.name.split("-")[0]) is None
    assert open_bundle(artifact, footprints=cache).footprint.measured_bytes > 0
