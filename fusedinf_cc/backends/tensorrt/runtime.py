"""Run a serialized TensorRT engine: inputs and outputs bound by name, numpy in, numpy out."""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from fusedinf_cc.backends.base import TensorSpec
from fusedinf_cc.backends.tensorrt.compat import EngineTarget, check_engine_compatible
from fusedinf_cc.backends.tensorrt.device import CudaDevice, DeviceArray, open_device
from fusedinf_cc.backends.tensorrt.names import TENSORRT, check_supported_tensorrt
from fusedinf_cc.common.errors import BackendUnavailableError, UserInputError

INSTALL_HINT = (
    "TensorRT is not installed: on a Jetson it comes with JetPack (python3-libnvinfer); on an "
    "x86_64 CUDA machine: pip install 'fusedinf-cc[tensorrt]'. Without it, write .onnx or .ort "
    "for ONNX Runtime"
)


def import_tensorrt() -> ModuleType:
    """TensorRT, if a supported version is installed; one line saying what to install else."""
    try:
        trt = importlib.import_module("tensorrt")
    except ImportError:
        raise BackendUnavailableError(INSTALL_HINT) from None
    check_supported_tensorrt(str(TENSORRT.name(trt, "__version__")))
    return trt


def tensorrt_version() -> str | None:
    try:
        return str(TENSORRT.name(importlib.import_module("tensorrt"), "__version__"))
    except ImportError:
        return None


class _Logger:
    """One TensorRT logger per process: TensorRT keeps the first one it is given."""

    instance: Any = None

    @classmethod
    def get(cls, trt: ModuleType) -> Any:
        if cls.instance is None:
            logger_class = TENSORRT.name(trt, "Logger")
            cls.instance = logger_class(TENSORRT.name(trt, "Logger.WARNING"))
        return cls.instance


def logger(trt: ModuleType) -> Any:
    return _Logger.get(trt)


def device_memory_bytes(engine: Any) -> int:
    """Activation memory one execution context of `engine` needs, beyond the weights."""
    return int(TENSORRT.attr(engine, "ICudaEngine.device_memory_size_v2"))


def here(device: CudaDevice, trt: ModuleType) -> EngineTarget:
    return EngineTarget(
        tensorrt=str(TENSORRT.name(trt, "__version__")),
        compute_capability=device.info.compute_capability,
        gpu=device.info.name,
    )


class TensorRTSession:
    """One engine and one execution context on one CUDA stream.

    `built_for` (from the manifest) is checked against this machine before deserializing.
    `weight_streaming_budget` (bytes) keeps only that much of the weights on the GPU and streams
    the rest in while the engine runs; the engine must have been built with --weight-streaming.
    """

    def __init__(
        self,
        engine_path: Path,
        *,
        built_for: EngineTarget | None = None,
        weight_streaming_budget: int | None = None,
    ):
        trt = import_tensorrt()
        self._trt = trt
        self._device = open_device()
        if built_for is not None:
            check_engine_compatible(built_for, here(self._device, trt), engine_path.name)
        runtime = TENSORRT.name(trt, "Runtime")(logger(trt))
        if built_for is not None and built_for.version_compatible:
            TENSORRT.set_attr(runtime, "Runtime.engine_host_code_allowed", True)
        self._runtime = runtime
        deserialize = TENSORRT.attr(runtime, "Runtime.deserialize_cuda_engine")
        self._engine = deserialize(engine_path.read_bytes())
        if self._engine is None:
            raise UserInputError(
                f"{engine_path}: TensorRT {here(self._device, trt).tensorrt} cannot deserialize "
                "it (built by another TensorRT version or for another GPU?); rebuild it here"
            )
        if weight_streaming_budget is not None:
            self.set_weight_streaming_budget(weight_streaming_budget)
        self._context = TENSORRT.attr(self._engine, "ICudaEngine.create_execution_context")()
        if self._context is None:
            raise UserInputError(
                f"{engine_path}: TensorRT could not create an execution context (out of GPU "
                "memory? its log above says why)"
            )
        count = TENSORRT.attr(self._engine, "ICudaEngine.num_io_tensors")
        tensor_name = TENSORRT.attr(self._engine, "ICudaEngine.get_tensor_name")
        tensor_mode = TENSORRT.attr(self._engine, "ICudaEngine.get_tensor_mode")
        input_mode = TENSORRT.name(trt, "TensorIOMode.INPUT")
        names = [tensor_name(i) for i in range(count)]
        is_input = {name: tensor_mode(name) == input_mode for name in names}
        self.inputs = [self._spec(name) for name in names if is_input[name]]
        self.outputs = [self._spec(name) for name in names if not is_input[name]]

    @property
    def device_memory_bytes(self) -> int:
        """Activation memory the context needs, beyond the weights."""
        return device_memory_bytes(self._engine)

    def set_weight_streaming_budget(self, budget_bytes: int) -> None:
        streamable = int(TENSORRT.attr(self._engine, "ICudaEngine.streamable_weights_size"))
        if streamable <= 0:
            raise UserInputError(
                "this engine cannot stream weights: build it with --strongly-typed "
                "--weight-streaming"
            )
        budget = min(budget_bytes, streamable)
        TENSORRT.set_attr(self._engine, "ICudaEngine.weight_streaming_budget_v2", budget)

    def _spec(self, name: str) -> TensorSpec:
        trt_dtype = TENSORRT.attr(self._engine, "ICudaEngine.get_tensor_dtype")(name)
        try:
            dtype = np.dtype(TENSORRT.name(self._trt, "nptype")(trt_dtype))
        except TypeError:
            raise UserInputError(
                f"engine tensor {name!r} has type {trt_dtype}, which numpy cannot hold"
            ) from None
        dims = TENSORRT.attr(self._engine, "ICudaEngine.get_tensor_shape")(name)
        shape = tuple(int(dim) if dim >= 0 else None for dim in dims)
        return TensorSpec(name=name, dtype=dtype, shape=shape)

    def run(
        self, feeds: Mapping[str, np.ndarray], outputs: Sequence[str] | None = None
    ) -> dict[str, np.ndarray]:
        wanted = list(outputs) if outputs is not None else [spec.name for spec in self.outputs]
        missing = [spec.name for spec in self.inputs if spec.name not in feeds]
        unknown = set(wanted) - {spec.name for spec in self.outputs}
        if missing or unknown:
            raise UserInputError(
                f"engine run: missing inputs {missing}, unknown outputs {sorted(unknown)}"
            )
        set_input_shape = TENSORRT.attr(self._context, "IExecutionContext.set_input_shape")
        set_address = TENSORRT.attr(self._context, "IExecutionContext.set_tensor_address")
        get_shape = TENSORRT.attr(self._context, "IExecutionContext.get_tensor_shape")
        keep: list[DeviceArray] = []  # device buffers live until the stream is done with them
        for spec in self.inputs:
            array = np.ascontiguousarray(feeds[spec.name], dtype=spec.dtype)
            if not set_input_shape(spec.name, array.shape):
                raise UserInputError(
                    f"input {spec.name!r}: shape {array.shape} is outside the engine's profile"
                )
            buffer = self._device.to_device(array)
            keep.append(buffer)
            set_address(spec.name, buffer.ptr)
        shapes: dict[str, tuple[int, ...]] = {}
        buffers: dict[str, DeviceArray] = {}
        for spec in self.outputs:  # every output must be bound, wanted or not
            shape = tuple(int(dim) for dim in get_shape(spec.name))
            if any(dim < 0 for dim in shape):
                raise UserInputError(
                    f"output {spec.name!r} has a data-dependent shape, which this runtime "
                    "does not bind yet"
                )
            shapes[spec.name] = shape
            buffers[spec.name] = self._device.empty(shape, spec.dtype)
            set_address(spec.name, buffers[spec.name].ptr)
        execute = TENSORRT.attr(self._context, "IExecutionContext.execute_async_v3")
        if not execute(self._device.stream_handle):
            raise UserInputError("TensorRT failed to enqueue the engine (see its log above)")
        dtypes = {spec.name: spec.dtype for spec in self.outputs}
        results = {
            name: self._device.to_host(buffers[name], shapes[name], dtypes[name]) for name in wanted
        }
        self._device.synchronize()
        del keep
        return results

    def close(self) -> None:
        """Free the context and the engine (the GPU memory they hold); closing twice is harmless."""
        self._context = None
        self._engine = None
