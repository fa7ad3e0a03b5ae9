"""A careless user's inputs and interruptions: one line and a clear exit code, never a traceback,
and nothing half-written."""

from __future__ import annotations

import hashlib
import random
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import onnx
import pytest

from tests.support import builders
from tests.support.commands import run_cli
from tests.support.disks import on_a_small_disk

pytest.importorskip("onnxruntime", reason="needs ONNX Runtime")


def _one_line(result: subprocess.CompletedProcess[str], code: int = 2) -> str:
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def _files(folder: Path) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.iterdir())
        if p.is_file()
    }


@pytest.mark.parametrize("sent", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupted_fuse_exits_130_in_one_line_and_keeps_the_previous_output(tmp_path, sent):
    """Signals at random moments of a real fuse, from its imports on. The interpreter's own
    start (its `site` imports, the first ~40 ms, before any of this package runs) is Python's:
    a signal there ends it with Python's traceback, before anything is written."""
    models = tmp_path / "models"
    models.mkdir()
    for name in "ab":
        builders.save(builders.affine(ord(name), width=1100), models / f"{name}.onnx")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    args = [sys.executable, "-m", "fusedinf_cc", "fuse", str(models / "a.onnx"),
            str(models / "b.onnx"), "-o", str(out_dir / "t.onnx")]  # fmt: skip
    started = time.perf_counter()
    assert subprocess.run(args, capture_output=True, check=False).returncode == 0
    whole = time.perf_counter() - started
    before = _files(out_dir)
    rng = random.Random(7 + sent)
    for _ in range(5):
        process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(rng.uniform(0.1, whole))
        process.send_signal(sent)
        stdout, stderr = process.communicate(timeout=120)
        done = subprocess.CompletedProcess(args, process.returncode, stdout, stderr)
        left = sorted(p.name for p in out_dir.iterdir())
        assert left == sorted(before), left  # no staging folder, no stray file
        if done.returncode == 0:  # it had finished: the new output, whole
            before = _files(out_dir)
            continue
        assert _one_line(done, 130) == "error: interrupted"
        now = _files(out_dir)
        if now != before:
            # The signal came after the new artifact was in place (signals wait while its
            # files are renamed): then all of it is new, and it runs.
            assert run_cli("run", out_dir / "t.onnx").returncode == 0
            before = now
    assert run_cli("run", out_dir / "t.onnx").returncode == 0


@pytest.fixture
def fused(tmp_path: Path) -> Path:
    builders.save(builders.affine(1, width=8), tmp_path / "a.onnx")
    out = tmp_path / "fused.onnx"
    assert run_cli("fuse", tmp_path / "a.onnx", "-o", out).returncode == 0
    return out


def test_an_output_that_is_a_folder_is_one_line_before_any_work(fused, tmp_path):
    folder = tmp_path / "a-folder"
    folder.mkdir()
    assert "is a folder" in _one_line(run_cli("run", fused, "-o", folder))
    assert "is a folder" in _one_line(
        run_cli("bench", "--fused", fused, "--json", folder, "--runs", "1", "--rounds", "1")
    )
    simulated = run_cli("simulate", f"a={tmp_path / 'a.onnx'}", "--synthetic", "--json", folder)
    assert "is a folder" in _one_line(simulated)


def test_a_full_disk_under_run_output_is_one_line_and_leaves_nothing(tmp_path):
    builders.save(builders.affine(3, width=1100), tmp_path / "wide.onnx")  # 4.4 KB of outputs
    fused = tmp_path / "wide-fused.onnx"
    assert run_cli("fuse", tmp_path / "wide.onnx", "-o", fused).returncode == 0
    script = f"""
import json, subprocess, sys
from pathlib import Path
disk = Path(sys.argv[1])
done = subprocess.run([sys.executable, "-m", "fusedinf_cc", "run", "{fused}", "-o",
                       str(disk / "outputs.npz")], capture_output=True, text=True)
print(json.dumps({{"rc": done.returncode, "stderr": done.stderr,
                  "left": sorted(p.name for p in disk.iterdir())}}))
"""
    disk = tmp_path / "disk"
    seen = on_a_small_disk(disk, 4096, script, str(disk))  # one page: less than the outputs
    assert seen["rc"] == 2 and "No space left on device" in seen["stderr"], seen["stderr"]
    assert len(seen["stderr"].strip().splitlines()) == 1 and seen["left"] == []


def test_unpack_refuses_a_name_too_long_for_the_file_system(tmp_path):
    archive = tmp_path / "long.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo("b/" + "x" * 300)
        tar.addfile(info)
    line = _one_line(run_cli("bundle", "unpack", archive, "-o", tmp_path / "out"))
    assert "longer than file systems allow" in line
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


def test_outputs_named_by_an_existing_file_are_one_line(fused, tmp_path):
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    dist = tmp_path / "dist"
    (tmp_path / "fusedinf.toml").write_text(
        f'[bundles.pair]\nmodels = {{ a = "{tmp_path / "a.onnx"}" }}\n'
    )
    assert run_cli("bundle", "build", tmp_path / "fusedinf.toml", "--out", dist).returncode == 0
    archive = tmp_path / "b.tar.gz"
    assert run_cli("bundle", "pack", dist, "-o", archive).returncode == 0
    assert "not a folder" in _one_line(run_cli("bundle", "unpack", archive, "-o", plain))
    assert "not a folder" in _one_line(run_cli("export", "triton", dist / "pair", "-o", plain))
    assert plain.read_text() == "x"


def test_a_source_whose_external_data_climbs_out_is_one_line(tmp_path):
    sub = tmp_path / "sub"
    sub.mkdir()
    onnx.save_model(
        builders.affine(1, width=64), sub / "m.onnx", save_as_external_data=True,
        all_tensors_to_one_file=True, location="w.data", size_threshold=0,
    )  # fmt: skip
    model = onnx.load(sub / "m.onnx", load_external_data=False)
    for tensor in model.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = "../w.data"
    onnx.save(model, sub / "m.onnx")
    shutil.move(sub / "w.data", tmp_path / "w.data")
    assert "outside the base directory" in _one_line(
        run_cli("fuse", sub / "m.onnx", "-o", tmp_path / "t.onnx")
    )
    assert "escapes model directory" in _one_line(run_cli("run", sub / "m.onnx"))
    assert not (tmp_path / "t.onnx").exists()


def test_feeds_and_traces_that_are_not_what_they_claim_are_one_line(fused, tmp_path):
    empty = tmp_path / "empty.npz"
    np.savez(empty)
    assert "missing" in _one_line(run_cli("run", fused, "--inputs", empty))
    zero = tmp_path / "zero.npz"
    zero.write_bytes(b"")
    assert "not an .npz" in _one_line(run_cli("verify", fused, "--inputs", zero))
    binary = tmp_path / "trace.csv"
    binary.write_bytes(bytes(range(256)) * 4)
    functions = tmp_path / "functions.json"
    functions.write_text('{"f": ["a"]}')
    line = _one_line(
        run_cli("simulate", f"a={tmp_path / 'a.onnx'}", "--trace", binary, "--functions",
                functions, "--work-dir", tmp_path / "work")
    )  # fmt: skip
    assert "not a CSV trace" in line


def test_a_shape_the_declared_dims_admit_but_the_model_rejects_is_one_line(tmp_path):
    # A Reshape to a fixed element count: any batch is declared, only batch 1 runs.
    model = builders.make_model(
        [onnx.helper.make_node("Reshape", ["x", "shape"], ["y"])],
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["n", 4])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2, 2])],
        [builders.tensor("shape", np.array([2, 2], np.int64))],
    )
    builders.save(model, tmp_path / "r.onnx")
    out = tmp_path / "fused.onnx"
    assert run_cli("fuse", tmp_path / "r.onnx", "-o", out).returncode == 0
    line = _one_line(run_cli("verify", out, "--shapes", "r/x:3x4"))
    assert "cannot run it on these inputs" in line


def test_a_full_disk_under_bundle_pack_is_one_line_and_leaves_nothing(tmp_path):
    (tmp_path / "models").mkdir()
    builders.save(builders.affine(4, width=300), tmp_path / "models" / "a.onnx")
    (tmp_path / "fusedinf.toml").write_text('[bundles.one]\nmodels = { a = "models/a.onnx" }\n')
    dist = tmp_path / "dist"
    assert run_cli("bundle", "build", tmp_path / "fusedinf.toml", "--out", dist).returncode == 0
    script = f"""
import json, subprocess, sys
from pathlib import Path
disk = Path(sys.argv[1])
done = subprocess.run([sys.executable, "-m", "fusedinf_cc", "bundle", "pack", "{dist}", "-o",
                       str(disk / "b.tar.gz")], capture_output=True, text=True)
print(json.dumps({{"rc": done.returncode, "stderr": done.stderr,
                  "left": sorted(p.name for p in disk.iterdir())}}))
"""
    disk = tmp_path / "disk"
    seen = on_a_small_disk(disk, 16 * 1024, script, str(disk))  # less than the 350 KB of weights
    assert seen["rc"] == 2 and "No space left on device" in seen["stderr"], seen["stderr"]
    assert len(seen["stderr"].strip().splitlines()) == 1 and seen["left"] == []
