"""The page cache between a bundle's files and storage: dropped when a bundle leaves, counted
when a load reads.

A bundle that leaves memory closes its sessions; its files' pages would stay in the page cache,
and on a machine with memory to spare the next load finds them there and reads nothing. On the
boxes this is for, memory is the limit and the page cache is the first thing to go, so a reload
reads storage. Dropping the pages of files no session maps any more (`drop_file_pages`) makes a
reload cost here what it costs there; pages a session still maps (a pooled weight another bundle
holds) are kept by the kernel. `read_file_pages` brings a file in (reading ahead, `prefetch.py`);
`storage_read_bytes` is what this process has read from storage.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable
from pathlib import Path

from fusedinf_cc.artifacts.manifest import cached_manifest
from fusedinf_cc.backends.weight_reader import WeightReader
from fusedinf_cc.common.files import external_data_name

_IO = Path("/proc/self/io")


def artifact_files(artifact: Path) -> tuple[Path, ...]:
    """The files a session of `artifact` reads: the artifact, its weights file, its parts and
    stages (those its manifest records; for a plain model, a weights file beside it if there is
    one)."""
    manifest = cached_manifest(artifact)
    files = list(whole_files(artifact))
    if manifest is not None:
        files += [artifact.with_name(part.path) for part in [*manifest.parts, *manifest.stages]]
    return tuple(path for path in files if path.is_file())


def whole_files(artifact: Path) -> tuple[Path, ...]:
    """The files a session of the whole artifact reads: the artifact and its weights file."""
    manifest = cached_manifest(artifact)
    record = manifest.artifact if manifest is not None else None
    data = record.external_data if record is not None else None
    files = (artifact, artifact.with_name(data or external_data_name(artifact)))
    return tuple(path for path in files if path.is_file())


# Versions of files this process has synced, by (device, inode, mtime): a bundle's files are
# written once, so after one sync their pages stay clean, and an eviction need not flush again.
_synced: set[tuple[int, int, int]] = set()


def drop_file_pages(paths: Iterable[Path]) -> None:
    """Ask the kernel to drop these files' cached pages that no process maps. Pages not yet
    written back cannot be dropped, so each version of a file is synced once first (a freshly
    built bundle's are dirty). A file that cannot be opened is left as it is."""
    for path in paths:
        with contextlib.suppress(OSError):
            descriptor = os.open(path, os.O_RDONLY)
            try:
                status = os.fstat(descriptor)
                version = (status.st_dev, status.st_ino, status.st_mtime_ns)
                if version not in _synced:
                    os.fdatasync(descriptor)
                    _synced.add(version)
                os.posix_fadvise(descriptor, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(descriptor)


def read_file_pages(path: Path, stopped: Callable[[], bool] = lambda: False) -> None:
    """Bring `path` into the page cache through a mapping of its own, in chunks, until done or
    `stopped()` (asked between chunks); nothing stays mapped. A file that cannot be read is
    left as it is."""
    with contextlib.suppress(OSError, ValueError):
        WeightReader.of_file(path).read(stopped)


def storage_read_bytes() -> int | None:
    """Bytes this process has caused to be read from storage (`read_bytes` of /proc/self/io),
    page faults on mapped files included; None where the kernel does not say."""
    try:
        for line in _IO.read_text().splitlines():
            key, _, value = line.partition(":")
            if key == "read_bytes":
                return int(value)
    except (OSError, ValueError):
        return None
    return None
