"""The runtimes an artifact can run on, by the names `--backend` takes, and which one a file needs.

Plain data and checks, no runtime imported: the CLI parses `--backend` with these before it
knows whether ONNX Runtime or TensorRT is installed.
"""

from __future__ import annotations

from pathlib import Path

from fusedinf_cc.common.errors import UserInputError

CPU_PROVIDER = "CPUExecutionProvider"
CUDA_PROVIDER = "CUDAExecutionProvider"
TENSORRT_PROVIDER = "TensorrtExecutionProvider"
# `--backend` names -> the providers ONNX Runtime tries, in order; the CPU takes what is left.
EXECUTION_PROVIDERS: dict[str, tuple[str, ...]] = {
    "ort-cpu": (CPU_PROVIDER,),
    "ort-cuda": (CUDA_PROVIDER, CPU_PROVIDER),
    "ort-trt": (TENSORRT_PROVIDER, CUDA_PROVIDER, CPU_PROVIDER),
}
TENSORRT = "tensorrt"
RUNTIMES = (*EXECUTION_PROVIDERS, TENSORRT)
DEFAULT_RUNTIME = "ort-cpu"
ENGINE_SUFFIXES = (".engine", ".plan")
ORT_FORMAT_SUFFIX = ".ort"


def check_runtime(runtime: str) -> str:
    if runtime not in RUNTIMES:
        raise UserInputError(f"--backend {runtime!r}: use one of {', '.join(RUNTIMES)}")
    return runtime


def is_engine(path: Path) -> bool:
    return path.suffix.lower() in ENGINE_SUFFIXES
