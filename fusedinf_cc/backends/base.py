"""What every runtime provides: a loaded artifact (`Session`) and the tensors it takes and gives."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np


@dataclass(frozen=True)
class TensorSpec:
    """A run-time input or output: its name, numpy dtype and shape (str or None where dynamic)."""

    name: str
    dtype: np.dtype
    shape: tuple[int | str | None, ...]
    index_rows: int | None = None  # an integer input that indexes a table of this many rows


class Session(Protocol):
    """A loaded artifact, ready to run."""

    inputs: Sequence[TensorSpec]
    outputs: Sequence[TensorSpec]

    def run(
        self, feeds: Mapping[str, np.ndarray], outputs: Sequence[str] | None = None
    ) -> dict[str, np.ndarray]: ...

    def close(self) -> None: ...
