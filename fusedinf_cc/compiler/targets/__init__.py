"""Build targets: a fused model becomes an artifact; the output's suffix picks the target.

`.onnx` (portable, or with `--aot` optimised for this CPU) and `.ort` are ONNX Runtime's,
`.engine`/`.plan` TensorRT's. A target writes files and their manifest; it never edits a graph.
"""

from __future__ import annotations

from pathlib import Path

from fusedinf_cc.common.errors import BackendUnavailableError, UserInputError
from fusedinf_cc.compiler.targets.base import BuildOptions, Target
from fusedinf_cc.compiler.targets.onnxruntime import OnnxRuntimeTarget
from fusedinf_cc.compiler.targets.tensorrt import TensorRTTarget

TARGETS: tuple[Target, ...] = (OnnxRuntimeTarget(), TensorRTTarget())


def target_for_output(out_path: Path) -> Target:
    """The target that writes this kind of file, by suffix; one line if it is not installed."""
    suffix = out_path.suffix.lower()
    for target in TARGETS:
        if suffix in target.suffixes:
            if not target.available():
                raise BackendUnavailableError(f"{out_path}: {target.install_hint}")
            return target
    known = ", ".join(s for target in TARGETS for s in target.suffixes)
    raise UserInputError(f"output {out_path}: unknown suffix {suffix or '(none)'!r}; use {known}")


__all__ = ["TARGETS", "BuildOptions", "Target", "target_for_output"]
