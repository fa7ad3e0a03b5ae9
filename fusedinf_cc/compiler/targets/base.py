"""What every build target provides: the suffixes it writes, whether its toolchain is installed,
and a build from the fused model to an artifact with its manifest."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from fusedinf_cc.backends.tensorrt.options import EngineOptions

if TYPE_CHECKING:
    from fusedinf_cc.artifacts.manifest import Manifest
    from fusedinf_cc.compiler.pipeline import FusedModel


@dataclass(frozen=True)
class BuildOptions:
    """How to build an artifact. `single_file`: keep an ONNX model's weights inside it.
    `aot`: store ONNX Runtime's fully optimised model for this CPU (`.onnx` outputs).
    `engine`: TensorRT builder options (for `.engine` outputs only). `parts`: write each
    model's part beside an ONNX Runtime artifact of several models (`compiler/parts.py`).
    `stages`: cut an `--aot` artifact into this many stages (`auto`: by its weights) beside it
    (`compiler/stages.py`)."""

    single_file: bool = False
    parts: bool = True
    stages: int | str | None = None
    aot: bool = False
    engine: EngineOptions | None = None
    # Called as (phase, steps done, steps) while a long build runs (TensorRT's phases).
    progress: Callable[[str, int, int], None] | None = None


class Target(Protocol):
    """Turns a fused model into one kind of artifact (by output suffix); never edits a graph."""

    name: str
    suffixes: tuple[str, ...]
    install_hint: str

    def available(self) -> bool: ...

    def check(self, options: BuildOptions) -> None:
        """Refuse options this target's installed toolchain cannot build, before any model
        is read."""
        ...

    def build(self, fused: FusedModel, out_path: Path, options: BuildOptions) -> Manifest: ...
