"""One copy of each distinct weight in a process, shared by every session that holds it.

An ahead-of-time artifact's weights are already in the layout its kernels read, so a session can
use them where they lie in the side file. The pool maps each weight (by the digest its manifest
records) read-only from the first artifact that brings it, and gives every later session that
needs the same weight the same memory through ONNX Runtime's `add_initializer`: two bundles
that contain one model then hold one copy of its weights, not two. A side file is mapped once
while anything holds that mapping, so a reader can bring a session's pages in where the
session will map them (`where_mapped`). A weight lives as long as a session holds it; the pool
only remembers it weakly.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import threading
import weakref
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fusedinf_cc.artifacts.weight_records import WeightRecord


class SharedWeight:
    """A weight read in place from a mapping of its side file, and the ONNX Runtime value over it.

    The weights of one side file share one mapping: one system call per load instead of one per
    weight (16-18 instead of 25-30 us a weight; a fused zoo bundle has 60-140 of them, and its
    session starts in 4-8 ms). A mapping lives while any of its weights does, so a weight that
    goes gives its pages back (`MADV_DONTNEED`) rather than leave them in the process beside
    the one that stays.
    """

    __slots__ = ("__weakref__", "_mapping", "_pages", "array", "digest", "value")

    def __init__(self, mapping: mmap.mmap, record: WeightRecord, ort_value: Any):
        """`mapping`: the whole side file, read-only; `ort_value`: `OrtValue` (passed in so
        that this module does not import ONNX Runtime)."""
        count = record.length // np.dtype(record.dtype).itemsize
        flat = np.frombuffer(mapping, dtype=record.dtype, count=count, offset=record.offset)
        self.array = flat.reshape(record.shape)
        self.value: Any = ort_value.ortvalue_from_numpy(self.array)
        self.digest = record.digest
        start = record.offset - record.offset % mmap.PAGESIZE
        self._mapping = mapping
        self._pages = (start, record.offset + record.length - start)

    def give_back_pages(self) -> None:
        """Unmap the weight's pages from this process, keeping the weight: the next read of
        them faults them in again (from the page cache, or from storage once dropped there).
        The pages are the file's: a neighbour that shares the first or last one reads it back
        from the page cache. Systems without madvise unmap with the whole file instead."""
        with contextlib.suppress(AttributeError, ValueError, OSError):
            self._mapping.madvise(mmap.MADV_DONTNEED, *self._pages)

    def __del__(self) -> None:
        self.give_back_pages()


class MappedSpan:
    """A weight's bytes in a mapping of its side file, before any session maps it there."""

    __slots__ = ("array",)

    def __init__(self, mapping: mmap.mmap, record: WeightRecord):
        self.array = np.frombuffer(
            mapping, dtype=np.uint8, count=record.length, offset=record.offset
        )


class WeightPool:
    """Weights by digest, mapped once per process while any session holds them."""

    def __init__(self) -> None:
        self._live: weakref.WeakValueDictionary[str, SharedWeight] = weakref.WeakValueDictionary()
        # One mapping per side file (by its identity on disk), while a weight or a reader holds it.
        self._mappings: weakref.WeakValueDictionary[tuple[int, ...], mmap.mmap] = (
            weakref.WeakValueDictionary()
        )
        self._lock = threading.Lock()

    def _mapping_of(self, data_file: Path) -> mmap.mmap:
        """The read-only mapping of `data_file` the pool maps its weights from: the live one
        (by the file's identity on disk), or a new one. Raises OSError where the file cannot
        be opened."""
        with open(data_file, "rb") as data:
            status = os.fstat(data.fileno())
            identity = (status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns)
            mapping = self._mappings.get(identity)
            if mapping is None:
                mapping = mmap.mmap(data.fileno(), 0, access=mmap.ACCESS_READ)
                self._mappings[identity] = mapping
            return mapping

    def acquire(
        self, data_file: Path, records: Sequence[WeightRecord]
    ) -> list[tuple[str, SharedWeight]]:
        """(initializer name, weight) for each record; mapped from `data_file` if not yet live.
        The caller keeps the weights for as long as its session runs."""
        from fusedinf_cc.backends.onnxruntime import import_onnxruntime

        ort_value = import_onnxruntime().OrtValue

        def new_weight(mapping: mmap.mmap, record: WeightRecord) -> SharedWeight:
            weight = SharedWeight(mapping, record, ort_value)
            self._live[record.digest] = weight
            return weight

        found = self._live_or_new(data_file, records, new_weight)
        return [(record.name, weight) for record, weight in zip(records, found, strict=True)]

    def where_mapped(self, data_file: Path, records: Sequence[WeightRecord]) -> list[Any]:
        """Where a session about to map `records` of `data_file` will find each weight: the
        live one, wherever it is mapped (another artifact's side file, perhaps with its pages
        given back), or else its span of this file's one mapping, each with its
        bytes as `.array`. What a reader brings a miss's weights in through before the
        session opens: the pages then land where the session maps them, and a weight live
        from another file is not read again from this one."""
        return self._live_or_new(data_file, records, MappedSpan)

    def _live_or_new(
        self,
        data_file: Path,
        records: Sequence[WeightRecord],
        new: Callable[[mmap.mmap, WeightRecord], Any],
    ) -> list[Any]:
        """Each record's live weight, or `new(mapping, record)` over the file's mapping."""
        found: list[Any] = []
        with self._lock:
            mapping = None
            for record in records:
                weight = self._live.get(record.digest)
                if weight is None:
                    if mapping is None:
                        mapping = self._mapping_of(data_file)
                    weight = new(mapping, record)
                found.append(weight)
        return found

    def live_digests(self) -> set[str]:
        with self._lock:
            return set(self._live.keys())


DEFAULT_POOL = WeightPool()


def mapped_bytes(record: WeightRecord) -> int:
    """Memory `record` occupies once mapped: whole pages, from the one its offset falls in."""
    start = record.offset - record.offset % mmap.PAGESIZE
    end = record.offset + record.length
    return -(-(end - start) // mmap.PAGESIZE) * mmap.PAGESIZE


def shared_bytes_by_digest(records: Iterable[WeightRecord]) -> dict[str, int]:
    """What each distinct weight of an artifact costs once, however many names use it."""
    return {record.digest: mapped_bytes(record) for record in records}


def artifact_weights(artifact: Path) -> tuple[Path, tuple[WeightRecord, ...]]:
    """The side file and weight records the manifest beside `artifact` lists (none for
    artifacts built without --aot). The records are trusted as the manifest is: `bundle verify`
    checks the files against their hashes."""
    from fusedinf_cc.artifacts.manifest import cached_manifest
    from fusedinf_cc.common.files import external_data_name

    manifest = cached_manifest(artifact)
    if manifest is None:
        return artifact, ()
    data_name = (manifest.artifact and manifest.artifact.external_data) or external_data_name(
        artifact
    )
    return artifact.with_name(data_name), tuple(manifest.weights)
