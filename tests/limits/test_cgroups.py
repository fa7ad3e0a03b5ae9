"""A group made for a run: the kernel holds the run to the profile, and the group goes with it.

These need a writable cgroup (v1 or v2), as root on this project's machines and its CI; where
there is none they skip, saying why.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fusedinf_cc.common.errors import UserInputError
from fusedinf_cc.compiler.build import build_fused
from fusedinf_cc.limits import cgroups
from fusedinf_cc.limits.cgroups import RunGroup, whole_disk
from fusedinf_cc.limits.profiles import DeviceProfile
from fusedinf_cc.runtime.pagecache import artifact_files, drop_file_pages
from tests.support import builders
from tests.support.commands import run_cli


@pytest.fixture(autouse=True)
def writable_cgroup() -> None:
    try:
        cgroups.cgroup_version()
    except UserInputError as error:
        pytest.skip(str(error))


def _our_groups() -> set[str]:
    roots = [cgroups.ROOT] + [cgroups.ROOT / c for c in ("memory", "blkio", "cpu")]
    return {p.name for root in roots if root.is_dir() for p in root.glob(f"{cgroups.PREFIX}*")}


def test_a_cold_read_inside_the_group_runs_at_the_profiles_bandwidth(tmp_path):
    """What a load reads from storage comes at the profile's speed, within 15%."""
    specs = builders.affine_pair_specs(tmp_path / "models", seed=3, width=1800)  # 24.7 MiB
    artifact = tmp_path / "big.onnx"
    build_fused(specs, artifact, aot=True)
    (side,) = [path for path in artifact_files(artifact) if path.name.endswith(".data")]
    size = side.stat().st_size
    profile = DeviceProfile("test", read_bytes_per_s=25 * 10**6)
    with RunGroup(profile, tmp_path) as group:
        drop_file_pages([side])
        started = time.perf_counter()
        subprocess.run(
            ["cat", str(side)], stdout=subprocess.DEVNULL, preexec_fn=group.join, check=True
        )
        seconds = time.perf_counter() - started
        use = group.use()
    speed = size / seconds
    assert 0.85 * 25e6 <= speed <= 1.15 * 25e6, f"{speed / 1e6:.1f} MB/s"
    assert use.read_bytes is not None and use.read_bytes >= 0.95 * size
    assert use.oom_kills == 0 and use.peak_memory_bytes is not None
    assert not set(group.paths) & {Path(p) for p in _our_groups()}


def test_the_group_is_removed_with_what_is_left_in_it_and_a_dead_runs_group_is_too(tmp_path):
    before = _our_groups()
    with RunGroup(DeviceProfile("test", memory_bytes=2**30), tmp_path) as group:
        sleeper = subprocess.Popen(["sleep", "60"], preexec_fn=group.join)
        made = set(group.paths)
        assert all(path.is_dir() for path in made)
    assert sleeper.wait(timeout=10) != 0  # killed with the group
    assert all(not path.exists() for path in made) and _our_groups() == before
    # A group whose run was killed before it could clean up goes at the next run.
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    version = cgroups.cgroup_version()
    root = cgroups.ROOT if version == 2 else cgroups.ROOT / "memory"
    stale = root / f"{cgroups.PREFIX}{dead.stdout.strip()}-abcdef"
    stale.mkdir()
    cgroups.cgroup_version()
    assert not stale.exists()


def test_a_folder_no_disk_holds_is_refused_in_one_line():
    shm = Path("/dev/shm")
    if not shm.is_dir() or os.stat(shm).st_dev == os.stat("/").st_dev:
        pytest.skip("no tmpfs at /dev/shm here")
    with pytest.raises(UserInputError, match="on no disk the kernel can throttle"):
        whole_disk(shm)


def test_simulate_runs_under_a_profile_and_reports_what_it_read(small_models, tmp_path):
    models = [f"{name}={path}" for name, path in small_models.items()]
    report = tmp_path / "sim.json"
    common = ["--synthetic", "--requests", "12", "--rate", "50", "--policy", "lru"]
    common += ["--work-dir", tmp_path / "work", "--aot", "--loading", "bulk,interleaved"]
    result = run_cli(
        "simulate", *models, *common, "--read-bandwidth", "200MB/s", "--memory-limit", "2GiB",
        "--json", report,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("under custom (memory 2.0 GiB, reads 200 MB/s): peak memory")
    assert last.endswith("0 killed out of memory")
    import json

    written = json.loads(report.read_text())
    device = written["device"]
    assert device["profile"]["read_bytes_per_s"] == 200 * 10**6
    assert device["device"] == whole_disk(tmp_path)
    assert all(r["bytes_read"] > 0 and r["baseline_rss_bytes"] > 0 for r in written["results"])
    replayed = {(r["deployment"], r["loading"]) for r in written["results"]}
    assert replayed == {(d, loading) for d, _ in replayed for loading in ("bulk", "interleaved")}
    assert _our_groups() == set() or all(
        not name.startswith(f"{cgroups.PREFIX}{os.getpid()}") for name in _our_groups()
    )


def test_a_run_over_its_memory_limit_is_one_line_and_leaves_no_group(small_models, tmp_path):
    before = _our_groups()
    models = [f"{name}={path}" for name, path in small_models.items()]
    result = run_cli(
        "simulate", *models, "--synthetic", "--work-dir", tmp_path / "work",
        "--memory-limit", "24MiB",
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: the run needed more memory than its limit (24.0 MiB)")
    assert _our_groups() == before
