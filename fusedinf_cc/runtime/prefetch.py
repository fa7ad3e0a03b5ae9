"""Prefetch: read the bundle the next request will likely ask for while this one computes.

Where one model's request is usually followed by another's (a detector, then its classifier;
a function that calls two bundles in turn), the second's miss reads storage only after the
first has finished computing. The loader learns from the requests it serves which bundle
follows which (`Successors`), and when a request starts computing it reads the likely next
bundle's files into the page cache on a thread of its own (`Prefetcher`), where that bundle is
not resident. It opens no session and counts nothing against the budget: the pages it reads
are the kernel's to reclaim, and a miss that finds them in memory opens without reading
storage. A wrong guess costs storage bandwidth, never memory the budget counts.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from fusedinf_cc.runtime.pagecache import read_file_pages

# A successor is guessed once seen this often after a bundle, and at least this share of the
# times that bundle was followed: a pattern, not a coincidence.
_LEAST_SEEN = 2
_LEAST_SHARE = 0.5


class Successors:
    """Which bundle followed which, over the requests served so far."""

    def __init__(self) -> None:
        self._after: dict[str, Counter[str]] = {}
        self._last: str | None = None

    def saw(self, bundle: str) -> None:
        """A request for `bundle` arrived (after whichever came before it)."""
        if self._last is not None and self._last != bundle:
            self._after.setdefault(self._last, Counter())[bundle] += 1
        self._last = bundle

    def likely_after(self, bundle: str) -> str | None:
        """The bundle that has most often followed `bundle`, where it is a pattern."""
        followers = self._after.get(bundle)
        if not followers:
            return None
        (name, seen), total = followers.most_common(1)[0], sum(followers.values())
        return name if seen >= _LEAST_SEEN and seen >= _LEAST_SHARE * total else None


class Prefetcher:
    """Reads files into the page cache on a thread of its own, started when there is something
    to read and gone when there is not. The newest guess wins: files still waiting when another
    guess is made are dropped (the file being read is finished)."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._wanted: list[Path] = []
        self._cancels = 0  # `cancel` calls: a read under way stops when this moves
        self._thread: threading.Thread | None = None

    def fetch(self, files: Sequence[Path]) -> None:
        with self._condition:
            self._wanted = list(files)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="fusedinf-prefetch", daemon=True
                )
                self._thread.start()

    def cancel(self) -> None:
        """Stop reading (after the chunk under way) and forget what was wanted; returns once
        nothing is being read."""
        with self._condition:
            self._wanted = []
            self._cancels += 1
            thread = self._thread
        if thread is not None:
            thread.join()

    def _run(self) -> None:
        while True:
            with self._condition:
                if not self._wanted:
                    self._thread = None
                    return
                path, cancels = self._wanted.pop(0), self._cancels
            read_file_pages(path, stopped=lambda cancels=cancels: self._cancels != cancels)
