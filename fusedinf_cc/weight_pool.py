"""One mapping per distinct weight in a process, shared by every session that holds it.

An ahead-of-time artifact's weights are already in the layout its kernels read, so a session can
use them where they lie in the side file. The pool maps each weight (by the digest its manifest
records) read-only from the first artifact that brings it, and gives every later session that
needs the same weight the same memory through ONNX Runtime's `add_initializer`: two bundles
that contain one model then hold one copy of its weights, not two. A mapping lives as long as a
session holds it; the pool only remembers it weakly.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import threading
import weakref
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fusedinf_cc.weight_records import WeightRecord


class SharedWeight:
    """A weight mapped from a side file, and the ONNX Runtime value that reads it in place."""

    __slots__ = ("__weakref__", "array", "value")

    def __init__(self, data_file: int, record: WeightRecord):
        """Map `record` from the open file descriptor `data_file`: its pages only, so that
        dropping the weight unmaps them (np.memmap does the same at 3-4x the cost)."""
        from fusedinf_cc.backends.onnxruntime import import_onnxruntime

        start = record.offset - record.offset % mmap.ALLOCATIONGRANULARITY
        mapping = mmap.mmap(
            data_file, record.offset + record.length - start, offset=start, access=mmap.ACCESS_READ
        )
        count = record.length // np.dtype(record.dtype).itemsize
        flat = np.frombuffer(mapping, dtype=record.dtype, count=count, offset=record.offset - start)
        self.array = flat.reshape(record.shape)
        self.value: Any = import_onnxruntime().OrtValue.ortvalue_from_numpy(self.array)


class WeightPool:
    """Weights by digest, mapped once per process while any session holds them."""

    def __init__(self) -> None:
        self._live: weakref.WeakValueDictionary[str, SharedWeight] = weakref.WeakValueDictionary()
        self._lock = threading.Lock()

    def acquire(
        self, data_file: Path, records: Sequence[WeightRecord]
    ) -> list[tuple[str, SharedWeight]]:
        """(initializer name, weight) for each record; mapped from `data_file` if not yet live.
        The caller keeps the weights for as long as its session runs."""
        acquired = []
        with self._lock, contextlib.ExitStack() as opened:
            descriptor = None
            for record in records:
                weight = self._live.get(record.digest)
                if weight is None:
                    if descriptor is None:
                        descriptor = os.open(data_file, os.O_RDONLY)
                        opened.callback(os.close, descriptor)
                    weight = SharedWeight(descriptor, record)
                    self._live[record.digest] = weight
                acquired.append((record.name, weight))
        return acquired

    def live_digests(self) -> set[str]:
        with self._lock:
            return set(self._live.keys())


DEFAULT_POOL = WeightPool()


def mapped_bytes(record: WeightRecord) -> int:
    """Memory a mapping of `record` occupies: whole pages, from the one its offset falls in."""
    start = record.offset - record.offset % mmap.ALLOCATIONGRANULARITY
    end = record.offset + record.length
    return -(-(end - start) // mmap.PAGESIZE) * mmap.PAGESIZE


def shared_bytes_by_digest(records: Iterable[WeightRecord]) -> dict[str, int]:
    """What each distinct weight of an artifact costs once, however many names use it."""
    return {record.digest: mapped_bytes(record) for record in records}


def artifact_weights(artifact: Path) -> tuple[Path, tuple[WeightRecord, ...]]:
    """The side file and weight records the manifest beside `artifact` lists (none for
    artifacts built without --aot). The records are trusted as the manifest is: `bundle verify`
    checks the files against their hashes."""
    from fusedinf_cc.files import external_data_name
    from fusedinf_cc.manifest import cached_manifest

    manifest = cached_manifest(artifact)
    if manifest is None:
        return artifact, ()
    data_name = (manifest.artifact and manifest.artifact.external_data) or external_data_name(
        artifact
    )
    return artifact.with_name(data_name), tuple(manifest.weights)
