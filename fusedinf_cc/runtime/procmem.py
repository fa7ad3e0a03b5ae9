"""Process memory from /proc: the peak RSS the kernel kept, and a sampler for peak heap.

`VmHWM` (peak resident set) counts memory-mapped file pages too, so a model whose weights are
mmapped looks large there while costing no copy; `RssAnon` (private memory) is what a copy of
the weights would grow, and the kernel keeps no peak of it, so `PeakAnonSampler` polls it.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import threading
from pathlib import Path
from types import TracebackType

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")
_LIBC = ctypes.util.find_library("c")


def status_bytes(path: Path = _STATUS) -> dict[str, int]:
    """The `kB` fields of /proc/<pid>/status (VmHWM, VmRSS, RssAnon, RssFile, ...) in bytes."""
    fields = {}
    try:
        text = path.read_text()
    except OSError:
        return fields
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if len(parts) == 2 and parts[1] == "kB":
            fields[key] = int(parts[0]) * 1024
    return fields


class PeakAnonSampler:
    """Polls the process's private (anonymous) memory in a thread and keeps the highest reading."""

    def __init__(self, interval_s: float = 0.005):
        self.interval_s = interval_s
        self.peak_bytes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        while not self._stop.is_set():
            self.peak_bytes = max(self.peak_bytes, status_bytes().get("RssAnon", 0))
            self._stop.wait(self.interval_s)

    def __enter__(self) -> PeakAnonSampler:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_bytes = max(self.peak_bytes, status_bytes().get("RssAnon", 0))


def proportional_set_size(pid: int) -> int:
    """PSS from /proc/PID/smaps_rollup: private pages plus each shared page divided by its users."""
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) * 1024
    return 0


def release_freed_memory() -> None:
    """Hand memory freed by a closed session back to the OS (glibc keeps it otherwise)."""
    if _LIBC:
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(_LIBC).malloc_trim(0)


def reset_peak_rss() -> bool:
    """Restart the kernel's count of this process's peak RSS (`VmHWM`) from the current RSS;
    False where the kernel does not allow it (then VmHWM keeps the earlier peak, which only
    overstates what comes after)."""
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return True
