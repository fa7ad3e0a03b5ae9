"""A disk's read-ahead, set for one run and put back after it.

How much a page fault or a sequential read brings in at once is the disk's read-ahead
(`/sys/dev/block/<disk>/queue/read_ahead_kb`), not the cgroup's: a throttle cannot emulate it.
It decides how a read that runs ahead of inference arrives: this machine's disk reads ahead
8 MiB, so a mapped side file comes in 8 MiB bursts and the layers whose weights share the last
burst all wait for it; a Jetson's card and NVMe drive read ahead the kernel's default 128 KiB,
and the same read arrives in a steady stream. The setting is one for the whole machine, so a
run changes it only when asked (`--read-ahead`), and puts the old value back when it ends. A
run killed before that leaves a note of the old value, which the next run puts back first.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from fusedinf_cc.common.errors import UserInputError
from fusedinf_cc.common.files import process_alive

SYS_BLOCK = Path("/sys/dev/block")
NOTES = Path(tempfile.gettempdir())  # the setting, like /tmp, does not outlive a reboot


def setting(disk: str) -> Path:
    """The read-ahead setting, in KiB, of the disk `disk` ("major:minor")."""
    return SYS_BLOCK / disk / "queue" / "read_ahead_kb"


def note_of(disk: str) -> Path:
    """Where a run that changed `disk`'s read-ahead notes the value to put back."""
    return NOTES / f"fusedinf-read-ahead-{disk.replace(':', '-')}.json"


@contextlib.contextmanager
def read_ahead_set(disk: str, read_ahead_bytes: int) -> Iterator[None]:
    """`disk`'s read-ahead set to `read_ahead_bytes` (whole KiB) while the block runs, its old
    value put back after. One line where it cannot be set (not root), or where another live run
    has it set already (two runs would put back each other's value)."""
    path, note = setting(disk), note_of(disk)
    noted = _noted(disk)
    if noted is not None:
        holder, left = noted
        if process_alive(holder):
            raise UserInputError(
                f"another run (process {holder}) has set the read-ahead of disk {disk}; "
                "wait for it to end, or run without --read-ahead"
            )
        _write(path, left, disk)  # a run killed before it put this back
    try:
        before = int(path.read_text())
    except (OSError, ValueError) as error:
        raise UserInputError(f"cannot read the read-ahead of disk {disk} ({error})") from None
    note.write_text(json.dumps({"pid": os.getpid(), "read_ahead_kb": before}))
    try:
        _write(path, read_ahead_bytes // 1024, disk)
        yield
    finally:
        with contextlib.suppress(OSError):
            path.write_text(str(before))
        note.unlink(missing_ok=True)


def _noted(disk: str) -> tuple[int, int] | None:
    """(pid, read-ahead in KiB to put back) of the run that noted `disk`'s; None where none
    did. A note that cannot be read says nothing to put back, and goes."""
    note = note_of(disk)
    try:
        left = json.loads(note.read_text())
        return int(left["pid"]), int(left["read_ahead_kb"])
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):
        note.unlink(missing_ok=True)
        return None


def _write(path: Path, kib: int, disk: str) -> None:
    try:
        path.write_text(str(kib))
    except OSError as error:
        raise UserInputError(
            f"cannot set the read-ahead of disk {disk} ({path}: {error.strerror}; "
            "run as root, or without --read-ahead)"
        ) from None
