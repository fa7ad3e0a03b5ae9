"""Backends build fused ONNX into artifacts and run them; the output suffix picks one."""

from __future__ import annotations

from pathlib import Path

from fusedinf_cc.backends.base import Backend, BuildOptions, Session, TensorSpec
from fusedinf_cc.backends.onnxruntime import OnnxRuntimeBackend
from fusedinf_cc.backends.tensorrt import TensorRTBackend
from fusedinf_cc.errors import BackendUnavailableError, UserInputError

BACKENDS: tuple[Backend, ...] = (OnnxRuntimeBackend(), TensorRTBackend())


def backend_for_output(out_path: Path) -> Backend:
    """The backend that writes this kind of file, by suffix; one line if it is not installed."""
    suffix = out_path.suffix.lower()
    for backend in BACKENDS:
        if suffix in backend.suffixes:
            if not backend.available():
                raise BackendUnavailableError(f"{out_path}: {backend.install_hint}")
            return backend
    known = ", ".join(s for backend in BACKENDS for s in backend.suffixes)
    raise UserInputError(f"output {out_path}: unknown suffix {suffix or '(none)'!r}; use {known}")


__all__ = ["BACKENDS", "Backend", "BuildOptions", "Session", "TensorSpec", "backend_for_output"]
