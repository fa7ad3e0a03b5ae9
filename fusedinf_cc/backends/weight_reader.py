"""Read a session's mapped weights from storage: all at once, or on a thread beside inference.

An ahead-of-time session maps its weights (`weight_pool`); left alone, each page is read from
storage when a kernel first touches it, so the first inference stalls on every read in turn.
`WeightReader` reads the pages in the order the graph first uses them (the order of the side
file, `compiler/targets/weight_order.py`), in chunks, with `madvise(MADV_POPULATE_READ)`: one
call reads and maps a chunk, outside the interpreter lock, so a reader on its own thread runs
ahead of the inference that needs those pages. Where the kernel lacks that advice (before
Linux 5.14) each page is touched instead, which reads it the same way, fault by fault.
A reader holds what it reads through until it stops, so that a read done before the session
opens (`bulk`) stays mapped where the session will map it (`WeightPool.where_mapped`).
`WeightReader.of_file` reads a file's pages through a mapping of its own, closed once read.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import mmap
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

# <asm-generic/mman-common.h>; Python's mmap module does not name it.
MADV_POPULATE_READ = 22
# A chunk read per call: small enough that stopping a reader waits for little (15 ms of a
# 67 MB/s card), large enough that a fast disk is not held to one call's latency.
CHUNK_BYTES = 1 << 20
# A short read's head comes in smaller pieces, each advised in (`MADV_WILLNEED`) before it
# is mapped: a page fault reads the disk's whole read-around window (8 MiB here) before its
# first page is ready, so the first 1 MiB arrived 2.4 ms in, where 256 KiB advised arrive
# 0.4 ms in and a run that need not wait for more starts on them. A longer read's run waits
# for more than its head anyway, and the head's pieces, one request at a time, delay the rest.
HEAD_BYTES = 1 << 20
HEAD_PIECE_BYTES = 256 << 10
SHORT_READ_BYTES = 8 << 20


class WeightReader:
    """The pages of some mapped weights, read in order, once."""

    def __init__(self, weights: Sequence[Any]):
        """`weights`: what to read, in order: objects whose `.array` lies in a mapped side
        file (`SharedWeight`s, or `WeightPool.where_mapped`'s spans)."""
        self._weights: list[Any] = list(weights)  # holds their mappings open until it stops
        self._mapping: mmap.mmap | None = None  # a file's, where `of_file` made this reader
        self.ranges = _page_ranges((address_of(w), int(w.array.nbytes)) for w in self._weights)
        self.size = sum(length for _, length in self.ranges)
        self.bytes_read = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._progress = threading.Condition()
        self._started = 0.0
        # When the chunk the wait measures the read's rate from arrived, and the bytes read by
        # then: the head's first piece, until the first chunk after the head arrives.
        self._first: tuple[float, int] | None = None
        self._done = False

    @classmethod
    def of_file(cls, path: Path, spans: Iterable[tuple[int, int]] | None = None) -> WeightReader:
        """A reader of `spans` of a file ((offset, length), in the order to read; None: the
        whole file), through a read-only mapping of its own that it closes when done or
        stopped. Raises OSError where the file cannot be opened."""
        reader = cls(())
        with open(path, "rb") as file:
            size = os.fstat(file.fileno()).st_size
            if size == 0:
                return reader
            reader._mapping = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ)
        view = np.frombuffer(reader._mapping, dtype=np.uint8)
        base = int(view.__array_interface__["data"][0])
        del view  # the mapping closes only once nothing views it
        wanted = [(0, size)] if spans is None else spans
        reader.ranges = _page_ranges(
            (base + offset, min(length, size - offset))
            for offset, length in wanted
            if 0 <= offset < size and length > 0
        )
        reader.size = sum(length for _, length in reader.ranges)
        return reader

    def read(self, stopped: Callable[[], bool] = lambda: False) -> None:
        """Read every page now (`bulk`), or until `stop` or `stopped()` (asked between
        chunks)."""
        self._started = self._started or time.perf_counter()
        last_in_head: bool | None = None  # whether the chunk before was the head's
        try:
            for address, chunk, in_head in self._chunks():
                if self._stop.is_set() or stopped():
                    return
                if in_head:
                    advise_in(address, chunk)
                populate(address, chunk)
                with self._progress:
                    self.bytes_read += chunk
                    if in_head is not last_in_head:  # the first chunk, and the first after the head
                        self._first = (time.perf_counter(), self.bytes_read)
                        last_in_head = in_head
                    self._progress.notify_all()
        finally:
            with self._progress:
                self._done = True
                self._let_go()
                self._progress.notify_all()

    def _chunks(self) -> Iterator[tuple[int, int, bool]]:
        """(address, length, in the head) of each call's read, in order: a short read's first
        `HEAD_BYTES` in pieces of `HEAD_PIECE_BYTES`, the rest in chunks of `CHUNK_BYTES`."""
        head_left = HEAD_BYTES if self.size <= SHORT_READ_BYTES else 0
        for start, length in self.ranges:
            offset = 0
            while offset < length:
                in_head = head_left > 0
                chunk = min(HEAD_PIECE_BYTES if in_head else CHUNK_BYTES, length - offset)
                yield start + offset, chunk, in_head
                offset += chunk
                head_left -= chunk

    def start(self) -> None:
        """Read on a thread of its own (`interleaved`), while the caller computes."""
        self._started = time.perf_counter()
        self._thread = threading.Thread(target=self.read, name="fusedinf-weight-reader")
        self._thread.daemon = True
        self._thread.start()

    def wait_until_within(self, seconds: float | None) -> None:
        """Return once the rest of the read should take no longer than `seconds` (what the
        inference that needs it is expected to take); at once for None (nothing known) or a
        reader not started. The rate is the one read at since the first chunk after the head
        arrived: the wait for that one is the storage's latency, not its bandwidth (2.4 ms for
        1 MiB here, where the next 43 MiB came at 1.3 GB/s under the emulated NVMe profile),
        and the head's pieces come one request at a time. Until that chunk, the head's rate
        judges, so a short read lets its inference start on the head's first piece."""
        if seconds is None or self._thread is None:
            return
        with self._progress:
            while not self._done:
                if self._first is not None and self._within(seconds, *self._first):
                    return
                self._progress.wait(0.05)

    def _within(self, seconds: float, first_at: float, read_by_then: int) -> bool:
        """Whether what is left would arrive within `seconds`, at the rate read at since
        `first_at` (until more has arrived, the rate of the read up to then)."""
        left = self.size - self.bytes_read
        since = self.bytes_read - read_by_then
        if since:
            return left * (time.perf_counter() - first_at) <= seconds * since
        return left * (first_at - self._started) <= seconds * read_by_then

    def wait(self) -> None:
        if self._thread is not None:
            self._thread.join()

    def stop(self) -> None:
        """Stop reading (after the chunk in flight) and let go of the weights."""
        self._stop.set()
        self.wait()
        self._let_go()
        self._weights = []

    @property
    def reading(self) -> bool:
        """Whether it reads on a thread that has not finished."""
        return self._thread is not None and not self._done

    def _let_go(self) -> None:
        """Close a mapping of its own, once read or stopped (what it read stays in the page
        cache)."""
        if self._mapping is not None:
            self._mapping.close()
            self._mapping = None


def address_of(weight: Any) -> int:
    """Where a mapped weight's array starts in memory."""
    return int(weight.array.__array_interface__["data"][0])


def _page_ranges(spans: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """(address, length) of whole pages covering each (address, length) span, neighbours
    merged, in order."""
    ranges: list[tuple[int, int]] = []
    for address, nbytes in spans:
        start = address - address % mmap.PAGESIZE
        end = address + nbytes
        if ranges and ranges[-1][0] <= start <= ranges[-1][0] + ranges[-1][1]:
            first = ranges[-1][0]
            ranges[-1] = (first, max(ranges[-1][1], end - first))
        else:
            ranges.append((start, end - start))
    return ranges


class _Advice:
    """`madvise` through the C library (ctypes lets go of the interpreter lock while the call
    reads), or None where it cannot populate."""

    def __init__(self) -> None:
        self.madvise: Any = None
        with contextlib.suppress(OSError, AttributeError, TypeError):
            libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
            libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
            libc.madvise.restype = ctypes.c_int
            self.madvise = libc.madvise


_ADVICE = _Advice()


def advise_in(address: int, length: int) -> None:
    """Start reading the pages of [address, address + length) into the page cache without
    waiting for them (`MADV_WILLNEED`: one request to storage of the range's own size); a
    kernel that refuses the advice leaves them to `populate`."""
    madvise = _ADVICE.madvise
    if madvise is not None:
        madvise(address, length, mmap.MADV_WILLNEED)


def populate(address: int, length: int) -> None:
    """Bring the pages of [address, address + length) in, reading storage where they are not
    in the page cache."""
    madvise = _ADVICE.madvise
    if madvise is not None:
        if madvise(address, length, MADV_POPULATE_READ) == 0:
            return
        if ctypes.get_errno() == errno.EINVAL:
            _ADVICE.madvise = None  # a kernel without the advice: it will not learn it
    pages = (ctypes.c_ubyte * length).from_address(address)
    np.frombuffer(pages, dtype=np.uint8)[:: mmap.PAGESIZE].max()  # one read of each page
