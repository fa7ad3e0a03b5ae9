"""The ONNX Runtime backend: the portable default. Works with `onnxruntime` or `onnxruntime-gpu`.

Both packages install one `onnxruntime` module, so this code asks the module, not the package,
which execution providers exist. On a machine without a GPU only the CPU provider is used.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np

from fusedinf_cc.backends.base import TensorSpec
from fusedinf_cc.errors import BackendUnavailableError, UserInputError

if TYPE_CHECKING:
    from fusedinf_cc.manifest import Manifest
    from fusedinf_cc.pipeline import FusedModel

INSTALL_HINT = (
    "install ONNX Runtime: pip install 'fusedinf-cc[cpu]' (or [gpu] on an x86_64 CUDA machine; "
    "Jetson: JetPack's onnxruntime-gpu wheel)"
)
CPU_PROVIDER = "CPUExecutionProvider"
_LOG_ERRORS_ONLY = 3  # ORT warns about every unused initializer of a source model

_ONNX_TYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int8)": np.int8,
    "tensor(int16)": np.int16,
    "tensor(int32)": np.int32,
    "tensor(int64)": np.int64,
    "tensor(uint8)": np.uint8,
    "tensor(uint16)": np.uint16,
    "tensor(uint32)": np.uint32,
    "tensor(uint64)": np.uint64,
    "tensor(bool)": np.bool_,
}


def import_onnxruntime() -> ModuleType:
    try:
        return importlib.import_module("onnxruntime")
    except ImportError:
        raise BackendUnavailableError(f"ONNX Runtime is not installed; {INSTALL_HINT}") from None


class OnnxRuntimeSession:
    """One `InferenceSession` behind the backend-neutral `Session` interface."""

    def __init__(
        self,
        model: Path | bytes,
        *,
        providers: Sequence[str] = (CPU_PROVIDER,),
        options: Mapping[str, Any] | None = None,
    ):
        ort = import_onnxruntime()
        session_options = ort.SessionOptions()
        session_options.log_severity_level = _LOG_ERRORS_ONLY
        for key, value in (options or {}).items():
            if key == "config":
                for config_key, config_value in value.items():
                    session_options.add_session_config_entry(config_key, str(config_value))
            else:
                setattr(session_options, key, value)
        source = model if isinstance(model, bytes) else str(model)
        try:
            self._session: Any = ort.InferenceSession(
                source, sess_options=session_options, providers=list(providers)
            )
        except Exception as error:  # onnxruntime raises its own exception types per failure
            where = "" if isinstance(model, bytes) else f"{model}: "
            first_line = str(error).strip().splitlines()[0]
            raise UserInputError(f"{where}ONNX Runtime cannot load it ({first_line})") from None
        self.inputs = [_spec(arg) for arg in self._session.get_inputs()]
        self.outputs = [_spec(arg) for arg in self._session.get_outputs()]

    def run(
        self, feeds: Mapping[str, np.ndarray], outputs: Sequence[str] | None = None
    ) -> dict[str, np.ndarray]:
        names = list(outputs) if outputs is not None else [spec.name for spec in self.outputs]
        results = self._session.run(names, dict(feeds))
        return dict(zip(names, results, strict=True))

    def close(self) -> None:
        """Drop the session (and with it ONNX Runtime's memory); closing twice is harmless."""
        self._session = None


def _spec(arg: Any) -> TensorSpec:
    dtype = _ONNX_TYPES.get(arg.type)
    if dtype is None:
        raise UserInputError(
            f"tensor {arg.name!r} has type {arg.type}, which fusedinf-cc cannot feed"
        )
    shape = tuple(dim if isinstance(dim, int) else (dim or None) for dim in (arg.shape or ()))
    return TensorSpec(name=arg.name, dtype=np.dtype(dtype), shape=shape)


class OnnxRuntimeBackend:
    """Artifacts are the fused `.onnx` itself; ONNX Runtime optimises it when it loads."""

    name = "onnxruntime"
    suffixes = (".onnx",)

    def available(self) -> bool:
        try:
            import_onnxruntime()
        except BackendUnavailableError:
            return False
        return True

    def build(self, fused: FusedModel, out_path: Path) -> Manifest:
        from fusedinf_cc.pipeline import write_fused

        return write_fused(fused, out_path)

    def load(self, artifact_path: Path) -> OnnxRuntimeSession:
        return OnnxRuntimeSession(artifact_path)
