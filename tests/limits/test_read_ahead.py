"""A run that asks for a read-ahead has it on its disk while it runs, and the old one after.

The setting is the machine's: these need root (this project's machines and CI are); where it
cannot be written they skip, saying why. Each puts back what it found, whatever happens.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from fusedinf_cc.common.errors import UserInputError
from fusedinf_cc.common.sizes import format_bytes
from fusedinf_cc.limits import read_ahead
from fusedinf_cc.limits.cgroups import cgroup_version, whole_disk
from fusedinf_cc.limits.profiles import DeviceProfile
from fusedinf_cc.limits.read_ahead import note_of, read_ahead_set, setting
from fusedinf_cc.limits.run import run_limited
from tests.support.commands import run_cli


@pytest.fixture
def disk(tmp_path, monkeypatch) -> str:
    """The disk that holds tmp_path, whose read-ahead a test may change; put back after, and
    the notes of runs kept apart from any real run's."""
    number = whole_disk(tmp_path)
    path = setting(number)
    if not path.is_file() or not os.access(path, os.W_OK):
        pytest.skip(f"cannot set {path} here (root only)")
    monkeypatch.setattr(read_ahead, "NOTES", tmp_path)
    found = path.read_text()
    yield number
    path.write_text(found)


@pytest.fixture
def cgroup() -> None:
    """A run's group can be made here (a run under a profile needs one)."""
    try:
        cgroup_version()
    except UserInputError as error:
        pytest.skip(str(error))


def _kib(disk: str) -> int:
    return int(setting(disk).read_text())


def _another_than(kib: int) -> int:
    return 256 if kib != 256 else 512


def test_a_run_has_its_read_ahead_while_it_runs_and_the_old_one_after(disk, cgroup, tmp_path):
    before = _kib(disk)
    wanted = _another_than(before)
    seen = tmp_path / "seen"
    child = f"open({str(seen)!r}, 'w').write(open({str(setting(disk))!r}).read())"
    profile = DeviceProfile("test", read_ahead_bytes=wanted * 1024)
    run = run_limited([sys.executable, "-c", child], profile, tmp_path)
    assert run.returncode == 0
    assert int(seen.read_text()) == wanted
    assert _kib(disk) == before and not note_of(disk).exists()
    assert f"read-ahead {format_bytes(wanted * 1024)}" in run.summary()


def test_a_killed_runs_read_ahead_is_put_back_by_the_next_run(disk):
    before = _kib(disk)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    # What a run killed while it ran leaves: its note, and the disk at its value.
    note_of(disk).write_text(json.dumps({"pid": int(dead.stdout), "read_ahead_kb": before}))
    setting(disk).write_text(str(_another_than(before)))
    wanted = _another_than(_another_than(before))
    with read_ahead_set(disk, wanted * 1024):
        assert _kib(disk) == wanted
    assert _kib(disk) == before and not note_of(disk).exists()


def test_a_live_runs_read_ahead_is_left_alone_in_one_line(disk):
    before = _kib(disk)
    holder = subprocess.Popen(["sleep", "30"])
    try:
        note_of(disk).write_text(json.dumps({"pid": holder.pid, "read_ahead_kb": before}))
        with (
            pytest.raises(UserInputError, match=f"another run \\(process {holder.pid}\\)"),
            read_ahead_set(disk, 4096 * 1024),
        ):
            pass
        assert _kib(disk) == before and note_of(disk).exists()
    finally:
        holder.kill()
        holder.wait()


def test_simulate_takes_the_read_ahead_and_reports_it(small_models, disk, cgroup, tmp_path):
    before = _kib(disk)
    wanted = _another_than(before)
    models = [f"{name}={path}" for name, path in small_models.items()]
    report = tmp_path / "sim.json"
    result = run_cli(
        "simulate", *models, "--synthetic", "--requests", "6", "--rate", "50", "--aot",
        "--work-dir", tmp_path / "work", "--read-ahead", f"{wanted}KiB", "--json", report,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"under custom (read-ahead {format_bytes(wanted * 1024)}): "), last
    assert json.loads(report.read_text())["device"]["profile"]["read_ahead_bytes"] == wanted * 1024
    assert _kib(disk) == before


def test_a_read_ahead_that_cannot_be_is_one_line(small_models, tmp_path):
    models = [f"{name}={path}" for name, path in small_models.items()]
    result = run_cli(
        "simulate", *models, "--synthetic", "--work-dir", tmp_path / "work",
        "--read-ahead", "1000",
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: --read-ahead '1000': a whole number of KiB (128KiB, 8MiB, 0)"
    ]
