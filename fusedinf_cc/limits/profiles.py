"""Device profiles: the memory, storage read bandwidth and CPU of a box to emulate.

Named profiles exist only where a published figure backs each number (`source`); any other box
is given by its numbers (`--memory-limit 2GiB --read-bandwidth 67MB/s [--cpus 2] [--read-ahead
128KiB]`), alone or overriding a named profile's. The disk's read-ahead is one setting for the
whole machine, so no profile sets it unless asked (`--read-ahead`, `limits/read_ahead.py`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from fusedinf_cc.common.errors import UserInputError
from fusedinf_cc.common.sizes import format_bytes, parse_size


@dataclass(frozen=True)
class DeviceProfile:
    name: str
    memory_bytes: int | None = None  # what the run's processes may hold, page cache included
    read_bytes_per_s: int | None = None  # what they may read from the artifacts' disk
    cpus: float | None = None  # CPU time, in cores
    read_ahead_bytes: int | None = None  # the disk's read-ahead during the run (machine-wide)
    source: str = ""  # where the numbers come from

    def describe(self) -> str:
        parts = []
        if self.memory_bytes is not None:
            parts.append(f"memory {format_bytes(self.memory_bytes)}")
        if self.read_bytes_per_s is not None:
            parts.append(f"reads {self.read_bytes_per_s / 1e6:g} MB/s")
        if self.cpus is not None:
            parts.append(f"{self.cpus:g} CPUs")
        if self.read_ahead_bytes is not None:
            parts.append(f"read-ahead {format_bytes(self.read_ahead_bytes)}")
        return f"{self.name} ({', '.join(parts)})"

    def to_record(self) -> dict:
        return {
            "name": self.name,
            "memory_bytes": self.memory_bytes,
            "read_bytes_per_s": self.read_bytes_per_s,
            "cpus": self.cpus,
            "read_ahead_bytes": self.read_ahead_bytes,
            "source": self.source,
        }


_ORIN_NANO = (
    "Jetson Orin Nano 8GB developer kit: 8 GB of LPDDR5 shared by CPU and GPU (NVIDIA's "
    "module data sheet); sequential reads measured with hdparm -t on the developer kit"
)
PROFILES = {
    "orin-nano-nvme": DeviceProfile(
        "orin-nano-nvme", 8 * 2**30, 1_362 * 10**6, source=f"{_ORIN_NANO}: 1,362 MB/s from NVMe"
    ),
    "orin-nano-sd": DeviceProfile(
        "orin-nano-sd", 8 * 2**30, 67 * 10**6, source=f"{_ORIN_NANO}: 67 MB/s from a microSD card"
    ),
}


def parse_bandwidth(text: str, flag: str = "--read-bandwidth") -> int:
    """`67MB/s`, `1.3GB/s`, `100MiB/s` or bytes per second: positive."""
    value = text.strip()
    size = parse_size(value.removesuffix("/s"), flag)
    if size <= 0:
        raise UserInputError(f"{flag} {text!r}: a bandwidth must be more than 0 bytes a second")
    return size


def parse_read_ahead(text: str) -> int:
    """`128KiB`, `8MiB` or `0` (none): whole KiB, what the kernel's setting counts in."""
    size = parse_size(text, "--read-ahead")
    if size % 1024:
        raise UserInputError(f"--read-ahead {text!r}: a whole number of KiB (128KiB, 8MiB, 0)")
    return size


def device_profile(
    name: str | None,
    memory_limit: str | None = None,
    read_bandwidth: str | None = None,
    cpus: float | None = None,
    read_ahead: str | None = None,
) -> DeviceProfile | None:
    """The profile a command was asked to run under: a named one, with any numbers given
    overriding its own, or one made of the numbers alone; None where none was asked for."""
    asked = (memory_limit, read_bandwidth, cpus, read_ahead)
    if name is None and all(value is None for value in asked):
        return None
    if name is not None and name not in PROFILES:
        known = ", ".join(PROFILES)
        raise UserInputError(f"--device-profile {name!r}: unknown; known: {known}")
    profile = PROFILES[name] if name is not None else DeviceProfile("custom")
    changes: dict = {}
    if memory_limit is not None:
        memory = parse_size(memory_limit, "--memory-limit")
        if memory <= 0:
            raise UserInputError(f"--memory-limit {memory_limit!r}: must be more than 0 bytes")
        changes["memory_bytes"] = memory
    if read_bandwidth is not None:
        changes["read_bytes_per_s"] = parse_bandwidth(read_bandwidth)
    if cpus is not None:
        if not (math.isfinite(cpus) and cpus > 0):
            raise UserInputError(f"--cpus {cpus!r}: a number of cores above 0")
        changes["cpus"] = cpus
    if read_ahead is not None:
        changes["read_ahead_bytes"] = parse_read_ahead(read_ahead)
    if changes and name is not None:
        changes["name"] = f"{name}, changed"
    return replace(profile, **changes)
