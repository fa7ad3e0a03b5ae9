"""What every backend provides: build an artifact from a fused model, and run it."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

if TYPE_CHECKING:
    from fusedinf_cc.backends.tensorrt.options import EngineOptions
    from fusedinf_cc.manifest import Manifest
    from fusedinf_cc.pipeline import FusedModel


@dataclass(frozen=True)
class TensorSpec:
    """A run-time input or output: its name, numpy dtype and shape (str or None where dynamic)."""

    name: str
    dtype: np.dtype
    shape: tuple[int | str | None, ...]


@dataclass(frozen=True)
class BuildOptions:
    """How to build an artifact. `single_file`: keep an ONNX model's weights inside it.
    `aot`: store ONNX Runtime's fully optimised model for this CPU (`.onnx` outputs).
    `engine`: TensorRT builder options (for `.engine` outputs only)."""

    single_file: bool = False
    aot: bool = False
    engine: EngineOptions | None = None
    # Called as (phase, steps done, steps) while a long build runs (TensorRT's phases).
    progress: Callable[[str, int, int], None] | None = None


class Session(Protocol):
    """A loaded artifact, ready to run."""

    inputs: Sequence[TensorSpec]
    outputs: Sequence[TensorSpec]

    def run(
        self, feeds: Mapping[str, np.ndarray], outputs: Sequence[str] | None = None
    ) -> dict[str, np.ndarray]: ...

    def close(self) -> None: ...


class Backend(Protocol):
    """Turns fused ONNX into a runnable artifact; never edits a graph."""

    name: str
    suffixes: tuple[str, ...]
    install_hint: str

    def available(self) -> bool: ...

    def build(self, fused: FusedModel, out_path: Path, options: BuildOptions) -> Manifest: ...

    def load(self, artifact_path: Path) -> Session: ...
