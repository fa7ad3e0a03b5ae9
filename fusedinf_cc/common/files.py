"""File plumbing shared by the compiler and the runtime: hashing and atomic writes.

Kept apart from `model_io` so that runtime processes (loader, bench workers) need not import onnx.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import shutil
import signal
import stat
import tempfile
import time
from pathlib import Path

from fusedinf_cc.common.errors import UserInputError

_HASH_CHUNK_BYTES = 1 << 20


def remove_stale_staging(folder: Path) -> list[Path]:
    """Remove the staging folders in `folder` whose process is gone (or that are older than
    `STALE_STAGING_SECONDS`); returns what was removed. Errors are ignored: a folder that
    cannot be removed now is tried again next time."""
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    now = time.time()
    for entry in entries:
        match = _STAGING_NAME.match(entry.name)
        if match is None or not entry.is_dir(follow_symlinks=False):
            continue
        try:
            old = now - entry.stat(follow_symlinks=False).st_mtime > STALE_STAGING_SECONDS
        except OSError:
            continue
        if old or not process_alive(int(match.group(1))):
            shutil.rmtree(entry.path, ignore_errors=True)
            removed.append(Path(entry.path))
    return removed


def process_alive(pid: int) -> bool:
    """Whether process `pid` may still run (one of another user's counts as running)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True  # someone else's process, or not a pid we can ask about: leave it
    return True


def external_data_name(out_path: Path) -> str:
    """The side file that holds a large model's tensors, next to the model."""
    return out_path.name + ".data"


def sha256_file(path: Path) -> str:
    """Hash a file in chunks so that multi-GiB models are never read into memory at once."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while chunk := stream.read(_HASH_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def write_text_atomic(path: Path, text: str) -> None:
    """Write a small text file (a manifest) via a temporary file and a rename."""
    with staging_dir(path) as staging:
        staged = staging / path.name
        staged.write_text(text, encoding="utf-8")
        os.replace(staged, path)


# Held back while an artifact's files are renamed into place, delivered right after.
_DEFERRED_SIGNALS = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}


def commit_staged(staged: list[Path], folder: Path) -> None:
    """Rename staged files into `folder`, in order: an artifact's side file, then its model,
    then its manifest. Nothing is written here, so a full disk cannot stop it halfway, and
    Ctrl-C or SIGTERM wait until every file is in place. Only SIGKILL or a power cut can fall
    between two renames, and what that leaves every reader refuses (each file's digest is in
    the manifest): never a model beside another build's weights."""
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, _DEFERRED_SIGNALS)
    try:
        for path in staged:
            os.replace(path, folder / path.name)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)


def check_output_folder(target: Path) -> None:
    """The folder `target` will be written into exists: checked before long work, not after."""
    if not target.parent.is_dir():
        raise UserInputError(f"{target}: output folder {target.parent} does not exist")


def read_small_file(path: Path, what: str, max_bytes: int) -> bytes:
    """A regular file of at most `max_bytes`, whole, or one line saying why not: never a
    device, a pipe or a folder, whose reading would not end or would fill memory."""
    try:
        # Opened without blocking: a pipe with no writer would wait forever before any check.
        descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        with open(descriptor, "rb") as stream:
            if not stat.S_ISREG(os.fstat(stream.fileno()).st_mode):
                raise UserInputError(f"{path}: not a regular file, so not a {what}")
            data = stream.read(max_bytes + 1)
    except FileNotFoundError:
        raise UserInputError(f"{path}: no such {what}") from None
    except IsADirectoryError:
        raise UserInputError(f"{path}: a folder, not a {what}") from None
    except OSError as error:
        raise UserInputError(f"{path}: cannot read the {what} ({error.strerror})") from None
    if len(data) > max_bytes:
        raise UserInputError(f"{path}: more than a {what} can be ({max_bytes} bytes)")
    return data


def as_path(value: object, what: str) -> Path:
    """A path a caller of the library gave: `str` or `os.PathLike`, else one line."""
    if isinstance(value, str) or (isinstance(value, os.PathLike) and not isinstance(value, bytes)):
        text = os.fspath(value)
        if isinstance(text, str):
            return Path(text)
    raise UserInputError(f"{what}: a path (str or os.PathLike), not {type(value).__name__}")


def check_folder(folder: Path, flag: str = "-o") -> None:
    """What `flag` names is a folder or nothing yet, never a file: checked before long work."""
    if folder.exists() and not folder.is_dir():
        raise UserInputError(f"{flag} {folder}: not a folder")


def make_output_folder(folder: Path, flag: str = "-o") -> None:
    """Create the folder `flag` names (and its parents); one line if it is a file or cannot be."""
    check_folder(folder, flag)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserInputError(f"{flag} {folder}: cannot create it ({error.strerror})") from None


def check_output_file(target: Path) -> None:
    """`target` can be written as a file: its folder exists and it is not itself a folder."""
    check_output_folder(target)
    if target.is_dir():
        raise UserInputError(f"{target} is a folder; give a file name")


# `.TARGET.fusedinf-PID-RANDOM`: whose staging folder it is, so that a later run can tell one
# left by a killed process (SIGKILL, a power cut) from one a running process still fills.
_STAGING_MARK = ".fusedinf-"
_STAGING_NAME = re.compile(r"^\..+\.fusedinf-(\d+)-[A-Za-z0-9_]+$")
# A folder this old is stale whoever made it: a process id can be reused.
STALE_STAGING_SECONDS = 24 * 3600


_USER_ERRNOS = {
    errno.ENOSPC,
    errno.EDQUOT,
    errno.EFBIG,
    errno.EROFS,
    errno.EACCES,
    errno.EPERM,
    errno.ENAMETOOLONG,
}


class staging_dir:  # noqa: N801 - used like a function in `with` statements
    """A temporary folder in the target's own directory, so the final rename stays atomic.

    Its name carries this process's id. Entering one first removes the staging folders beside
    the target that a dead process left behind (or that are older than a day)."""

    def __init__(self, target: Path):
        self.target = target

    def __enter__(self) -> Path:
        check_output_folder(self.target)
        remove_stale_staging(self.target.parent)
        try:
            prefix = f".{self.target.name}{_STAGING_MARK}{os.getpid()}-"
            self.path = Path(tempfile.mkdtemp(prefix=prefix, dir=self.target.parent))
        except OSError as error:
            raise UserInputError(f"{self.target}: cannot write there ({error.strerror})") from None
        return self.path

    def __exit__(self, kind: object, error: object, trace: object) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
        if isinstance(error, OSError) and error.errno in _USER_ERRNOS:
            # A full disk, a read-only folder, a name too long: the user's to fix, in one line.
            raise UserInputError(
                f"{self.target.parent}: cannot write {self.target.name} there "
                f"({error.strerror}); nothing was written"
            ) from None
