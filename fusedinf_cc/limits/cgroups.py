"""A control group made for one run: a device profile's limits, enforced by the kernel.

cgroup v2 (`memory.max`, `io.max rbps=`, `cpu.max`) where the unified hierarchy is mounted at
/sys/fs/cgroup; v1 (`memory.limit_in_bytes`, `blkio.throttle.read_bps_device`,
`cpu.cfs_quota_us`) where its controllers are. The group is created under a name of our own
(`fusedinf-<pid>-<random>`) beside the others, holds only the processes of the run, and is
removed when the run ends; a group a killed run left is removed by the next run once its
process is gone. The read limit applies to the whole disk that holds the artifacts, which is
what a device's storage is; a folder on a file system with no disk under it (tmpfs, overlay)
cannot be throttled and is refused.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

from fusedinf_cc.common.errors import UserInputError
from fusedinf_cc.common.files import process_alive
from fusedinf_cc.limits.profiles import DeviceProfile

ROOT = Path("/sys/fs/cgroup")
PREFIX = "fusedinf-"
# What the run's processes find in their environment: their group, so that they report its use
# and do not make another.
GROUP_ENV = "FUSEDINF_RUN_GROUP"
_CFS_PERIOD_US = 100_000


@dataclass(frozen=True)
class GroupUse:
    """What the group's processes used, as the kernel counted it."""

    peak_memory_bytes: int | None  # page cache included
    oom_kills: int
    read_bytes: int | None  # from the throttled disk

    def to_record(self) -> dict:
        return {
            "peak_memory_bytes": self.peak_memory_bytes,
            "oom_kills": self.oom_kills,
            "read_bytes": self.read_bytes,
        }


@dataclass
class RunGroup:
    """The group (one folder under v2; one per controller under v1) for a run under `profile`,
    its reads throttled on the disk that holds `folder`."""

    profile: DeviceProfile
    folder: Path
    version: int = 0
    device: str | None = None  # "major:minor" of the throttled disk
    paths: list[Path] = field(default_factory=list)

    def __enter__(self) -> RunGroup:
        self.version = cgroup_version()
        if self.profile.read_bytes_per_s is not None:
            self.device = whole_disk(self.folder)
        name = f"{PREFIX}{os.getpid()}-{secrets.token_hex(3)}"
        try:
            if self.version == 2:
                self._make_v2(ROOT / name)
            else:
                self._make_v1(name)
        except BaseException:
            self.remove()
            raise
        return self

    def __exit__(self, *_: object) -> None:
        self.remove()

    # made ----------------------------------------------------------------------------------
    def _make_v2(self, path: Path) -> None:
        controllers = set((ROOT / "cgroup.subtree_control").read_text().split())
        needed = {"memory", "io", "cpu"} & self._wanted_controllers()
        missing = needed - controllers
        if missing:
            raise UserInputError(
                f"cgroup v2 here does not give child groups the {', '.join(sorted(missing))} "
                f"controller (enable it in {ROOT}/cgroup.subtree_control)"
            )
        _mkdir(path)
        self.paths.append(path)
        profile = self.profile
        if profile.memory_bytes is not None:
            _write(path / "memory.max", str(profile.memory_bytes))
        if self.device is not None:
            _write(path / "io.max", f"{self.device} rbps={profile.read_bytes_per_s}")
        if profile.cpus is not None:
            _write(path / "cpu.max", f"{round(profile.cpus * _CFS_PERIOD_US)} {_CFS_PERIOD_US}")

    def _make_v1(self, name: str) -> None:
        profile = self.profile
        # The memory group is made even without a memory limit: it counts the run's peak.
        memory = ROOT / "memory" / name
        _mkdir(memory)
        self.paths.append(memory)
        if profile.memory_bytes is not None:
            _write(memory / "memory.limit_in_bytes", str(profile.memory_bytes))
        if self.device is not None:
            blkio = ROOT / "blkio" / name
            _mkdir(blkio)
            self.paths.append(blkio)
            _write(
                blkio / "blkio.throttle.read_bps_device",
                f"{self.device} {profile.read_bytes_per_s}",
            )
        if profile.cpus is not None:
            cpu = ROOT / "cpu" / name
            _mkdir(cpu)
            self.paths.append(cpu)
            _write(cpu / "cpu.cfs_period_us", str(_CFS_PERIOD_US))
            _write(cpu / "cpu.cfs_quota_us", str(round(profile.cpus * _CFS_PERIOD_US)))

    def _wanted_controllers(self) -> set[str]:
        wanted = {"memory"}
        if self.device is not None:
            wanted.add("io")
        if self.profile.cpus is not None:
            wanted.add("cpu")
        return wanted

    # joined --------------------------------------------------------------------------------
    def join(self) -> None:
        """Put this process in the group (a child's `preexec_fn`: before it runs anything)."""
        pid = str(os.getpid())
        for path in self.paths:
            with open(path / "cgroup.procs", "w") as stream:
                stream.write(pid)

    def to_env(self) -> str:
        return json.dumps(
            {
                "profile": self.profile.to_record(),
                "version": self.version,
                "device": self.device,
                "paths": [str(p) for p in self.paths],
            }
        )

    # read ----------------------------------------------------------------------------------
    def use(self) -> GroupUse:
        return read_use(self.version, self.paths, self.device)

    # removed -------------------------------------------------------------------------------
    def remove(self) -> None:
        """Stop what is left of the run and remove the group's folders."""
        for path in reversed(self.paths):
            _remove_group(path)
        self.paths.clear()


def read_use(version: int, paths: list[Path], device: str | None) -> GroupUse:
    """The use of the group in `paths` (as `RunGroup.to_env` records them)."""
    peak = read_bytes = None
    kills = 0
    for path in paths:
        if version == 2:
            peak = _read_int(path / "memory.peak")
            kills = _field(path / "memory.events", "oom_kill") or 0
            if device is not None:
                read_bytes = _io_stat_v2(path / "io.stat", device)
        elif path.parent.name == "memory":
            peak = _read_int(path / "memory.max_usage_in_bytes")
            kills = _field(path / "memory.oom_control", "oom_kill") or 0
        elif path.parent.name == "blkio" and device is not None:
            read_bytes = _io_service_bytes_v1(path / "blkio.throttle.io_service_bytes", device)
    return GroupUse(peak, kills, read_bytes)


def current_group() -> dict | None:
    """The group this process runs in, where a run made one for it (its `to_env` record)."""
    text = os.environ.get(GROUP_ENV)
    return json.loads(text) if text else None


def current_use() -> GroupUse | None:
    """What this run's group has used so far, read from inside it."""
    record = current_group()
    if record is None:
        return None
    return read_use(record["version"], [Path(p) for p in record["paths"]], record["device"])


def device_record() -> dict | None:
    """For a report: the profile this process runs under and what its group used so far;
    None outside a run group."""
    record = current_group()
    use = current_use()
    if record is None or use is None:
        return None
    return {"profile": record["profile"], "device": record["device"], "use": use.to_record()}


def cgroup_version() -> int:
    """2 where the unified hierarchy is at /sys/fs/cgroup, 1 where the v1 memory controller
    is; one line saying why where neither can be written."""
    if (ROOT / "cgroup.controllers").is_file():
        version, probe = 2, ROOT
    elif (ROOT / "memory" / "memory.limit_in_bytes").is_file():
        version, probe = 1, ROOT / "memory"
    else:
        raise UserInputError(
            f"no cgroup here to run under a device profile: {ROOT} has neither cgroup v2 nor "
            "the v1 memory controller"
        )
    if not os.access(probe, os.W_OK):
        raise UserInputError(
            f"cannot make a cgroup under {probe} to run under a device profile (permission "
            "denied: run as root, or with a delegated cgroup)"
        )
    remove_stale_groups(probe)
    return version


def whole_disk(folder: Path) -> str:
    """`major:minor` of the disk that holds `folder` (the disk, where it is on a partition)."""
    try:
        device = os.stat(folder).st_dev
    except OSError as error:
        raise UserInputError(f"{folder}: {error.strerror}") from None
    number = f"{os.major(device)}:{os.minor(device)}"
    block = Path("/sys/dev/block") / number
    if not block.exists():
        raise UserInputError(
            f"{folder} is on no disk the kernel can throttle (device {number}: a tmpfs, overlay "
            "or network file system); give a folder on a local disk"
        )
    if (block / "partition").exists():
        return (block.resolve().parent / "dev").read_text().strip()
    return number


def remove_stale_groups(root: Path) -> None:
    """Remove the groups of runs whose process is gone (a run killed before it cleaned up)."""
    hierarchies = [root] if root == ROOT else [ROOT / c for c in ("memory", "blkio", "cpu")]
    for hierarchy in hierarchies:
        for path in hierarchy.glob(f"{PREFIX}*"):
            match = re.match(rf"{PREFIX}(\d+)-", path.name)
            if match and not process_alive(int(match.group(1))):
                _remove_group(path)


def _remove_group(path: Path) -> None:
    """Kill what is left in the group (only the run's own processes), then remove it."""
    for _ in range(50):
        try:
            left = [int(p) for p in (path / "cgroup.procs").read_text().split()]
        except OSError:
            left = []
        for pid in left:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        try:
            path.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(0.05)  # its last processes are still exiting


def _mkdir(path: Path) -> None:
    try:
        path.mkdir()
    except OSError as error:
        raise UserInputError(f"cannot make the cgroup {path} ({error.strerror})") from None


def _write(path: Path, value: str) -> None:
    try:
        path.write_text(value)
    except OSError as error:
        raise UserInputError(f"cannot set {path.name} to {value!r} ({error.strerror})") from None


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _field(path: Path, key: str) -> int | None:
    """`key`'s number in a file of `key value` lines."""
    try:
        for line in path.read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == key:
                return int(value)
    except (OSError, ValueError):
        return None
    return None


def _io_service_bytes_v1(path: Path, device: str) -> int | None:
    """Bytes read from `device`: the `MAJ:MIN Read N` line of blkio.throttle.io_service_bytes."""
    try:
        for line in path.read_text().splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[0] == device and parts[1] == "Read":
                return int(parts[2])
    except (OSError, ValueError):
        return None
    return 0


def _io_stat_v2(path: Path, device: str) -> int | None:
    """Bytes read from `device`: `rbytes=` on its line of io.stat."""
    try:
        for line in path.read_text().splitlines():
            parts = line.split()
            if parts and parts[0] == device:
                fields = dict(p.split("=", 1) for p in parts[1:] if "=" in p)
                return int(fields.get("rbytes", 0))
    except (OSError, ValueError):
        return None
    return 0
