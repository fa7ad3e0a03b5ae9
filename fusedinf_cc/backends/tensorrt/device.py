"""CUDA memory and streams for the engine runtime, through torch or cuda-python.

TensorRT's Python API takes raw device pointers and a stream handle; it allocates nothing for
the caller's tensors. Either library provides those. torch is tried first because the model zoo
already needs it; cuda-python (`cuda.bindings.runtime`, or the older `cuda.cudart`) is the small
alternative on a Jetson without torch.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Protocol

import numpy as np

from fusedinf_cc.backends.tensorrt.names import CUDA_RUNTIME
from fusedinf_cc.common.errors import BackendUnavailableError

NO_CUDA_HINT = (
    "TensorRT needs CUDA device memory: install torch with CUDA or cuda-python "
    "(pip install cuda-python), and run on a machine with an NVIDIA GPU"
)


@dataclass(frozen=True)
class DeviceInfo:
    name: str
    compute_capability: str  # "8.7"
    total_memory_bytes: int


class DeviceArray(Protocol):
    ptr: int


class CudaDevice(Protocol):
    """The few CUDA calls the runtime needs."""

    info: DeviceInfo
    stream_handle: int

    def to_device(self, array: np.ndarray) -> DeviceArray: ...

    def empty(self, shape: tuple[int, ...], dtype: np.dtype) -> DeviceArray: ...

    def to_host(
        self, buffer: DeviceArray, shape: tuple[int, ...], dtype: np.dtype
    ) -> np.ndarray: ...

    def synchronize(self) -> None: ...


def open_device(index: int = 0) -> CudaDevice:
    """The first CUDA library that imports and sees a GPU; one line saying what to install else."""
    torch = _optional("torch")
    if torch is not None and torch.cuda.is_available():
        return TorchDevice(torch, index)
    runtime = _optional("cuda.bindings.runtime") or _optional("cuda.cudart")
    if runtime is not None:
        return CudaPythonDevice(runtime, index)
    raise BackendUnavailableError(f"no CUDA device found: {NO_CUDA_HINT}")


def _optional(module: str) -> ModuleType | None:
    try:
        return importlib.import_module(module)
    except ImportError:
        return None


class _TorchArray:
    def __init__(self, tensor: Any):
        self.tensor = tensor
        self.ptr = int(tensor.data_ptr())


class TorchDevice:
    """Device tensors from torch; copies ordered on one torch CUDA stream."""

    def __init__(self, torch: ModuleType, index: int):
        self._torch = torch
        self._device = torch.device("cuda", index)
        properties = torch.cuda.get_device_properties(self._device)
        self.info = DeviceInfo(
            name=properties.name,
            compute_capability=f"{properties.major}.{properties.minor}",
            total_memory_bytes=int(properties.total_memory),
        )
        self._stream = torch.cuda.Stream(self._device)
        self.stream_handle = int(self._stream.cuda_stream)

    def to_device(self, array: np.ndarray) -> _TorchArray:
        host = self._torch.from_numpy(np.ascontiguousarray(array))
        with self._torch.cuda.stream(self._stream):
            return _TorchArray(host.to(self._device, non_blocking=True))

    def empty(self, shape: tuple[int, ...], dtype: np.dtype) -> _TorchArray:
        # Allocate as bytes: every numpy dtype has a byte view, not every one a torch dtype.
        nbytes = max(1, int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize)
        # On the engine's stream: torch's allocator may hand memory allocated on another stream
        # to that stream's next kernel while the engine still writes into it.
        with self._torch.cuda.stream(self._stream):
            tensor = self._torch.empty(nbytes, dtype=self._torch.uint8, device=self._device)
        return _TorchArray(tensor)

    def to_host(self, buffer: DeviceArray, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        assert isinstance(buffer, _TorchArray)
        nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
        with self._torch.cuda.stream(self._stream):
            host = buffer.tensor.view(self._torch.uint8)[:nbytes].to("cpu", non_blocking=False)
        return host.numpy().view(dtype).reshape(shape)

    def synchronize(self) -> None:
        self._stream.synchronize()


class _CudaPythonArray:
    def __init__(self, runtime: ModuleType, ptr: int):
        self._free = CUDA_RUNTIME.name(runtime, "cudaFree")
        self.ptr = ptr

    def __del__(self) -> None:
        if self.ptr:
            self._free(self.ptr)
            self.ptr = 0


class CudaPythonDevice:
    """Device memory from cuda-python's runtime bindings (cudaMalloc, cudaMemcpyAsync)."""

    def __init__(self, runtime: ModuleType, index: int):
        self._rt = runtime
        self._check(CUDA_RUNTIME.name(self._rt, "cudaSetDevice")(index)[0], "cudaSetDevice")
        error, properties = CUDA_RUNTIME.name(self._rt, "cudaGetDeviceProperties")(index)
        self._check(error, "cudaGetDeviceProperties")
        name = CUDA_RUNTIME.attr(properties, "cudaDeviceProp.name")
        major = CUDA_RUNTIME.attr(properties, "cudaDeviceProp.major")
        minor = CUDA_RUNTIME.attr(properties, "cudaDeviceProp.minor")
        self.info = DeviceInfo(
            name=(name.decode() if isinstance(name, bytes) else str(name)).rstrip("\x00"),
            compute_capability=f"{major}.{minor}",
            total_memory_bytes=int(CUDA_RUNTIME.attr(properties, "cudaDeviceProp.totalGlobalMem")),
        )
        error, stream = CUDA_RUNTIME.name(self._rt, "cudaStreamCreate")()
        self._check(error, "cudaStreamCreate")
        self._stream = stream
        self.stream_handle = int(stream)

    def _check(self, error: Any, call: str) -> None:
        if int(error) != 0:
            raise BackendUnavailableError(f"{call} failed ({error}): {NO_CUDA_HINT}")

    def _malloc(self, nbytes: int) -> _CudaPythonArray:
        error, ptr = CUDA_RUNTIME.name(self._rt, "cudaMalloc")(max(1, nbytes))
        self._check(error, "cudaMalloc")
        return _CudaPythonArray(self._rt, int(ptr))

    def to_device(self, array: np.ndarray) -> _CudaPythonArray:
        host = np.ascontiguousarray(array)
        buffer = self._malloc(host.nbytes)
        kind = CUDA_RUNTIME.name(self._rt, "cudaMemcpyKind.cudaMemcpyHostToDevice")
        # Synchronous copy: the host array may be freed as soon as this returns.
        error = CUDA_RUNTIME.name(self._rt, "cudaMemcpy")(
            buffer.ptr, host.ctypes.data, host.nbytes, kind
        )[0]
        self._check(error, "cudaMemcpy")
        return buffer

    def empty(self, shape: tuple[int, ...], dtype: np.dtype) -> _CudaPythonArray:
        return self._malloc(int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize)

    def to_host(self, buffer: DeviceArray, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        host = np.empty(shape, dtype=dtype)
        kind = CUDA_RUNTIME.name(self._rt, "cudaMemcpyKind.cudaMemcpyDeviceToHost")
        error = CUDA_RUNTIME.name(self._rt, "cudaMemcpyAsync")(
            host.ctypes.data, buffer.ptr, host.nbytes, kind, self._stream
        )[0]
        self._check(error, "cudaMemcpyAsync")
        self.synchronize()
        return host

    def synchronize(self) -> None:
        error = CUDA_RUNTIME.name(self._rt, "cudaStreamSynchronize")(self._stream)[0]
        self._check(error, "cudaStreamSynchronize")


def device_memory_in_use(index: int = 0) -> int | None:
    """Bytes in use on the GPU (by every process), or None without CUDA: what a bench can read
    of GPU memory from outside the runtime that allocated it."""
    torch = _optional("torch")
    if torch is not None and torch.cuda.is_available():
        free, total = torch.cuda.mem_get_info(index)
        return int(total - free)
    runtime = _optional("cuda.bindings.runtime") or _optional("cuda.cudart")
    if runtime is None:
        return None
    error, free, total = CUDA_RUNTIME.name(runtime, "cudaMemGetInfo")()
    return int(total - free) if int(error) == 0 else None
