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
starts before the session opens, so ONNX Runtime's parsing of the graph overlaps it too, and
brings each weight in where the session will map it from (the weight pool's mapping of the
side file, or another file's where the pool already holds that weight): the pages it brings
in are mapped for the session, not only in the page cache.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fusedinf_cc.artifacts.weight_records import WeightRecord
from fusedinf_cc.backends.base import Session, TensorSpec
from fusedinf_cc.backends.weight_pool import WeightPool
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
    weights: tuple[Path, Sequence[WeightRecord]] | None,
    policy: str,
    pool: WeightPool | None = None,
) -> WeightReader | None:
    """Apply `policy` to a session about to open, given its side file and the records of the
    weights it will map (`Bundle.weight_records`; None: it maps none): read them now
    (`bulk`), start reading them on a thread (`interleaved`: the read overlaps the session's
    opening, then its first run), or leave them to be read as inference needs them
    (`linear`). With the `pool` the session maps its weights from, each is read where the
    session will map it (`WeightPool.where_mapped`): the pages land mapped for its first run
    (a cold OCR trio's run took 98 page faults against 208 through a mapping of the reader's
    own), and a weight another artifact brought is read there, not again from this file.
    Returns the reader, for `reading` to tie to the session. A file that cannot be read is
    left to the session's opening to refuse."""
    if weights is None or not weights[1] or policy == "linear":
        return None  # nothing of the file to read
    path, records = weights
    try:
        if pool is None:
            reader = WeightReader.of_file(path, [(r.offset, r.length) for r in records])
        else:
            reader = WeightReader(pool.where_mapped(path, records))
    except OSError:
        return None
    _apply(reader, policy)
    return reader


def start_reading_weights(weights: Sequence[Any], policy: str) -> WeightReader | None:
    """As `start_reading`, for a session already open: its mapped weights (`SharedWeight`s)
    read through its own mappings, in the order they lie in them."""
    if not weights or policy == "linear":
        return None
    reader = WeightReader(sorted(weights, key=address_of))
    _apply(reader, policy)
    return reader


def _apply(reader: WeightReader, policy: str) -> None:
    """Read now (`bulk`) or start reading on a thread (`interleaved`)."""
    if policy == "bulk":
        reader.read()
    else:
        reader.start()


def reading(session: Session, reader: WeightReader | None) -> Session:
    """`session`, tied to the reader still bringing its weights in (`start_reading`), which
    stops when the session closes; a reader already done is let go."""
    if reader is None or not reader.reading:
        return session
    return ReadingSession(session, reader)


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
