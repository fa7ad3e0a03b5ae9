"""Loading policies: when a newly opened session's weights are read from storage.

Named as EdgeCaffe names its policies, so that results compare:
- `bulk`: read every weight, then run (the first request waits for the whole read, which
  happens before it takes the run lock, so other requests keep computing meanwhile);
- `linear`: read each weight when inference first reaches it, nothing overlapping (an
  ahead-of-time session's mapping left to page faults);
- `interleaved`: a reader thread runs ahead of inference, in the order the graph uses the
  weights, so reading and computing overlap.
They differ only for sessions that map their weights (ahead-of-time bundles): a portable
session reads its weights while it is created, which is `bulk` whatever is asked.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from fusedinf_cc.backends.base import Session, TensorSpec
from fusedinf_cc.backends.weight_reader import WeightReader
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


def read_weights(session: Session, policy: str) -> Session:
    """Apply `policy` to a session just opened: read its weights now (`bulk`), start reading
    them beside its first run (`interleaved`, the session returned then stops the reader when
    it closes), or leave them to be read as inference needs them (`linear`)."""
    weights = getattr(session, "mapped_weights", ())
    if not weights or policy == "linear":
        return session
    reader = WeightReader(weights)
    if policy == "bulk":
        reader.read()
        return session
    reader.start()
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
