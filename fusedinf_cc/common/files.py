"""File plumbing shared by the compiler and the runtime: hashing and atomic writes.

Kept apart from `model_io` so that runtime processes (loader, bench workers) need not import onnx.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

from fusedinf_cc.common.errors import UserInputError

_HASH_CHUNK_BYTES = 1 << 20


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


def check_output_folder(target: Path) -> None:
    """The folder `target` will be written into exists: checked before long work, not after."""
    if not target.parent.is_dir():
        raise UserInputError(f"{target}: output folder {target.parent} does not exist")


class staging_dir:  # noqa: N801 - used like a function in `with` statements
    """A temporary folder in the target's own directory, so the final rename stays atomic."""

    def __init__(self, target: Path):
        self.target = target

    def __enter__(self) -> Path:
        check_output_folder(self.target)
        try:
            prefix = f".{self.target.name}."
            self.path = Path(tempfile.mkdtemp(prefix=prefix, dir=self.target.parent))
        except OSError as error:
            raise UserInputError(f"{self.target}: cannot write there ({error.strerror})") from None
        return self.path

    def __exit__(self, *exc_info: object) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
