"""Writes are all or none: a full disk, a clashing path or a killed process never leaves half an
artifact or half an install, and what a killed process leaves is cleaned by the next run."""

from __future__ import annotations

import gzip
import io
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from fusedinf_cc.common.files import staging_dir
from tests.support import builders
from tests.support.commands import build_dist, run_cli
from tests.support.disks import on_a_small_disk

pytest.importorskip("onnxruntime", reason="needs ONNX Runtime")

_FILL_THE_DISK = """
import hashlib, json, subprocess, sys
from pathlib import Path
disk, small, large = Path(sys.argv[1]), sys.argv[2:4], sys.argv[4:6]
def fuse(models):
    return subprocess.run([sys.executable, "-m", "fusedinf_cc", "fuse", *models, "-o",
                           str(disk / "t.onnx")], capture_output=True, text=True)
def files():
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(disk.iterdir())}
first = fuse(small)
before = files()
second = fuse(large)
print(json.dumps({"first": first.returncode, "second": second.returncode,
                  "stderr": second.stderr, "before": before, "after": files()}))
"""


def test_a_full_disk_leaves_the_previous_output_and_nothing_else(tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    for name, width in (("a", 8), ("b", 8), ("c", 400), ("d", 400)):
        builders.save(builders.affine(ord(name), width=width), models / f"{name}.onnx")
    specs = [f"{n}={models / f'{n}.onnx'}" for n in "abcd"]
    seen = on_a_small_disk(
        tmp_path / "disk", 256 * 1024, _FILL_THE_DISK, str(tmp_path / "disk"), *specs
    )
    assert seen["first"] == 0 and set(seen["before"]) == {
        "t.onnx",
        "t.onnx.manifest.json",
        "t.part-a.onnx",
        "t.part-b.onnx",
    }
    assert seen["second"] == 2, seen["stderr"]
    assert "No space left on device" in seen["stderr"] and "Traceback" not in seen["stderr"]
    assert len(seen["stderr"].strip().splitlines()) == 1
    assert seen["after"] == seen["before"]  # the old artifact, whole, and no staging folder


def test_an_output_whose_manifest_path_is_a_folder_is_refused_before_any_work(tmp_path):
    builders.save(builders.affine(1), tmp_path / "a.onnx")
    (tmp_path / "t.onnx.manifest.json").mkdir()
    result = run_cli("fuse", tmp_path / "a.onnx", "-o", tmp_path / "t.onnx")
    assert result.returncode == 2 and "is a folder" in result.stderr
    assert not (tmp_path / "t.onnx").exists()


def test_staging_folders_of_dead_processes_are_removed_by_the_next_write(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    stale = tmp_path / f".t.onnx.fusedinf-{dead.stdout.strip()}-abc123"
    stale.mkdir()
    (stale / "partial.onnx.data").write_bytes(b"\0" * 4096)
    live = tmp_path / f".t.onnx.fusedinf-{os.getpid()}-def456"
    live.mkdir()
    unrelated = tmp_path / ".cache"
    unrelated.mkdir()
    builders.save(builders.affine(1), tmp_path / "a.onnx")
    assert run_cli("fuse", tmp_path / "a.onnx", "-o", tmp_path / "t.onnx").returncode == 0
    assert not stale.exists() and live.exists() and unrelated.exists()
    with staging_dir(tmp_path / "u.onnx") as staging:  # its own name says whose it is
        assert staging.name.startswith(f".u.onnx.fusedinf-{os.getpid()}-")


def test_a_killed_fuse_leaves_at_most_a_staging_folder_that_the_next_run_removes(tmp_path):
    for name in "ab":
        builders.save(builders.affine(ord(name), width=1500), tmp_path / f"{name}.onnx")
    out = tmp_path / "t.onnx"
    args = [sys.executable, "-m", "fusedinf_cc", "fuse", str(tmp_path / "a.onnx"),
            str(tmp_path / "b.onnx"), "-o", str(out)]  # fmt: skip
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # Kill it once its staging folder exists (or once it is done, on a fast machine).
    for _ in range(600):
        if any(p.name.startswith(".t.onnx.fusedinf-") for p in tmp_path.iterdir()):
            break
        if process.poll() is not None:
            break
        subprocess.run(["sleep", "0.01"], check=True)
    process.kill()
    process.wait()
    assert subprocess.run(args, capture_output=True, check=False).returncode == 0
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == [
        "a.onnx",
        "b.onnx",
        "t.onnx",
        "t.onnx.data",
        "t.onnx.manifest.json",
        "t.part-a.onnx",
        "t.part-b.onnx",
    ], left


@pytest.fixture
def dist(tmp_path: Path) -> Path:
    (tmp_path / "models").mkdir()
    for seed in range(3):
        builders.save(builders.affine(seed, width=16), tmp_path / "models" / f"m{seed}.onnx")
    return build_dist(
        tmp_path,
        '[bundles.pair]\nmodels = { a = "models/m0.onnx", b = "models/m1.onnx" }\n'
        '[bundles.solo]\nmodels = { c = "models/m2.onnx" }\n',
    )


def _repacked(archive: Path, out: Path, change: dict[str, bytes]) -> Path:
    """`archive` with some members' bytes replaced (their headers follow the new bytes)."""
    with (
        tarfile.open(archive, "r:gz") as source,
        gzip.open(out, "wb") as raw,
        tarfile.open(fileobj=raw, mode="w") as target,
    ):
        for member in source.getmembers():
            data = source.extractfile(member).read()  # type: ignore[union-attr]
            data = change.get(member.name, data)
            member.size = len(data)
            target.addfile(member, io.BytesIO(data))
    return out


def test_unpack_installs_every_bundle_or_none(dist, tmp_path):
    archive = tmp_path / "b.tar.gz"
    assert run_cli("bundle", "pack", dist, "-o", archive).returncode == 0
    with tarfile.open(archive, "r:gz") as tar:
        solo = tar.extractfile("solo/solo.onnx").read()  # type: ignore[union-attr]
    damaged = bytearray(solo)
    damaged[-1] ^= 0xFF  # same size, another sha256: only the second bundle is bad
    bad = _repacked(archive, tmp_path / "bad.tar.gz", {"solo/solo.onnx": bytes(damaged)})
    result = run_cli("bundle", "unpack", bad, "-o", tmp_path / "edge")
    assert result.returncode == 2 and "nothing was installed" in result.stderr, result.stderr
    assert list((tmp_path / "edge").iterdir()) == []  # not even the good bundle, no staging


def test_unpack_refuses_a_member_larger_than_its_index_records_before_writing_it(dist, tmp_path):
    archive = tmp_path / "b.tar.gz"
    assert run_cli("bundle", "pack", dist, "-o", archive).returncode == 0
    with tarfile.open(archive, "r:gz") as tar:
        pair = tar.extractfile("pair/pair.onnx").read()  # type: ignore[union-attr]
    padded = pair + b"\0" * (4 << 20)
    bad = _repacked(archive, tmp_path / "big.tar.gz", {"pair/pair.onnx": padded})
    result = run_cli("bundle", "unpack", bad, "-o", tmp_path / "edge")
    assert result.returncode == 2 and "its bundle.json says" in result.stderr, result.stderr
    assert not (tmp_path / "edge").exists() or list((tmp_path / "edge").iterdir()) == []


_UNPACK_ON_A_SMALL_DISK = """
import json, subprocess, sys
from pathlib import Path
disk, archive = Path(sys.argv[1]), sys.argv[2]
done = subprocess.run([sys.executable, "-m", "fusedinf_cc", "bundle", "unpack", archive, "-o",
                       str(disk / "edge")], capture_output=True, text=True)
left = sorted(str(p.relative_to(disk)) for p in disk.rglob("*"))
print(json.dumps({"rc": done.returncode, "stderr": done.stderr, "left": left}))
"""


def test_unpack_onto_a_full_disk_is_one_line_and_leaves_nothing(dist, tmp_path):
    archive = tmp_path / "b.tar.gz"
    assert run_cli("bundle", "pack", dist, "-o", archive).returncode == 0
    disk = tmp_path / "disk"
    seen = on_a_small_disk(disk, 8 * 1024, _UNPACK_ON_A_SMALL_DISK, str(disk), str(archive))
    assert seen["rc"] == 2 and "No space left on device" in seen["stderr"], seen["stderr"]
    assert len(seen["stderr"].strip().splitlines()) == 1
    assert seen["left"] in ([], ["edge"])


def test_pack_refuses_an_output_inside_the_folder_it_packs(dist):
    target = dist / "pair" / "pair.onnx"
    before = target.read_bytes()
    result = run_cli("bundle", "pack", dist, "-o", target)
    assert result.returncode == 2 and "inside" in result.stderr
    assert target.read_bytes() == before
