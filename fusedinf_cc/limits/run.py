"""Run a command inside a group made for it, and say what the kernel counted."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from fusedinf_cc.common.sizes import format_bytes
from fusedinf_cc.limits.cgroups import GROUP_ENV, GroupUse, RunGroup, current_group, whole_disk
from fusedinf_cc.limits.profiles import DeviceProfile
from fusedinf_cc.limits.read_ahead import read_ahead_set


@dataclass(frozen=True)
class LimitedRun:
    returncode: int
    profile: DeviceProfile
    use: GroupUse

    @property
    def out_of_memory(self) -> bool:
        return self.use.oom_kills > 0

    def summary(self) -> str:
        """One line: the profile, and what the run used under it."""
        use = self.use
        parts = []
        if use.peak_memory_bytes is not None:
            parts.append(f"peak memory {format_bytes(use.peak_memory_bytes)}")
        if use.read_bytes is not None:
            parts.append(f"{format_bytes(use.read_bytes)} read from storage")
        parts.append(f"{use.oom_kills} killed out of memory")
        return f"under {self.profile.describe()}: {', '.join(parts)}"


def run_limited(argv: Sequence[str], profile: DeviceProfile, folder: Path) -> LimitedRun:
    """Run `argv` (inheriting this process's output) in a group made for it under `profile`,
    throttled on the disk that holds `folder` (whose read-ahead is the profile's while it
    runs, where the profile gives one); the group is gone when this returns."""
    read_ahead = (
        contextlib.nullcontext()
        if profile.read_ahead_bytes is None
        else read_ahead_set(whole_disk(folder), profile.read_ahead_bytes)
    )
    with read_ahead, RunGroup(profile, folder) as group:
        env = {**os.environ, GROUP_ENV: group.to_env()}
        completed = subprocess.run(list(argv), env=env, preexec_fn=group.join, check=False)
        use = group.use()
    return LimitedRun(completed.returncode, profile, use)


def inside_a_run_group() -> bool:
    """Whether this process already runs in a group a run made (so it makes no other)."""
    return current_group() is not None
