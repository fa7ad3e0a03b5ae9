"""Loading policies: when a newly opened session's weights are read from storage.

Named as EdgeCaffe names its policies, so that results compare:
- `bulk`: read every weight, then run (the first request waits for the whole read, which
  happens before it takes the run lock, so other requests keep computing meanwhile);
- `linear`: read each weight when inference first reaches it, nothing overlapping (an
  ahead-of-time session's mapping left to page faults);
- `interleaved`: a reader thread runs ahead of inference, in the order the graph uses the
  weights, so reading and computing overlap.
They differ only for sessions that map their weights (ahead-of-time bundles): a portable
session reads its weights while it is created, which is `bulk` whatever is asked. The read
starts before the session opens (through the reader's own mapping of the side file), so
ONNX Runtime's parsing of the graph overlaps it too; the session's mapping then finds the
pages in the page cache.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fusedinf_cc.backends.base import Session, TensorSpec
from fusedinf_cc.backends.weight_reader import WeightReader, address_of
from fusedinf_cc.common.errors import UserInputError

LOADING_POLICIES = ("bulk", "linear", "interleaved")
DEFAULT_LOADING = "interleaved"


def check_loading(name: str | None) -> str:
    """The loading policy named (None: the default), or a one-line refusal."""
    if name is None:
        return DEFAULT_LOADING
    if name not in LOADING_POLICIES:
        raise UserInputError(
            f"unknown loading policy {name!r}; choose from {', '.join(LOADING_POLICIES)}"
        )
    return name


def start_reading(
    spans: tuple[Path, Sequence[tuple[int, int]]] | None, policy: str
) -> WeightReader | None:
    """Apply `policy` to a session about to open, given the spans of its side file it will map
    (`Bundle.weight_spans`; None: it maps none): read them now (`bulk`), start reading them on
    a thread (`interleaved`: the read overlaps the session's opening, then its first run), or
    leave them to be read as inference needs them (`linear`). Returns the reader still
    reading, for `reading` to tie to the session. A file that cannot be read is left to the
    session's opening to refuse."""
    if spans is None or policy == "linear":
        return None
    try:
        reader = WeightReader.of_file(*spans)
    except OSError:
        return None
    return _apply(reader, policy)


def start_reading_weights(weights: Sequence[Any], policy: str) -> WeightReader | None:
    """As `start_reading`, for a session already open: its mapped weights (`SharedWeight`s)
    read through its own mappings, in the order they lie in them."""
    if not weights or policy == "linear":
        return None
    return _apply(WeightReader(sorted(weights, key=address_of)), policy)


def _apply(reader: WeightReader, policy: str) -> WeightReader | None:
    """Read now (`bulk`: nothing left reading) or start reading on a thread (`interleaved`)."""
    if policy == "bulk":
        reader.read()
        return None
    reader.start()
    return reader


def reading(session: Session, reader: WeightReader | None) -> Session:
    """`session`, tied to the reader still bringing its weights in (`start_reading`), which
    stops when the session closes."""
    return session if reader is None else ReadingSession(session, reader)


class ReadingSession:
    """A session whose weights a reader thread is still bringing in."""

    def __init__(self, session: Session, reader: WeightReader):
        self.session = session
        self.reader = reader
        self.inputs: Sequence[TensorSpec] = session.inputs
        self.outputs: Sequence[TensorSpec] = session.outputs

    def run(
        self, feeds: Mapping[str, np.ndarray], outputs: Sequence[str] | None = None, **options: Any
    ) -> dict[str, np.ndarray]:
        return self.session.run(feeds, outputs, **options)

    def close(self) -> None:
        self.reader.stop()
        self.session.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.session, name)
