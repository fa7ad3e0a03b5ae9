"""Every TensorRT and CUDA runtime name this package reads, with the versions that have it.

TensorRT cannot be imported on a machine without its libraries, so nothing here imports it.
The code reads each binding through these tables (`TENSORRT.name(trt, "BuilderFlag.FP16")`,
`TENSORRT.attr(config, "IBuilderConfig.set_flag")`), never as a bare attribute, so the tables
are the whole list of what it needs. `tests/backends/tensorrt/test_names.py` checks that list
against the real compiled bindings of the oldest and newest supported versions, and that the
code reads no name the tables do not declare.

A path is `Owner.member`: the owner is the class (or enum) the object belongs to, as the
bindings name it, so `IBuilderConfig.set_flag` is `set_flag` on a builder config.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fusedinf_cc.common.errors import BackendUnavailableError

Version = tuple[int, ...]

# JetPack 6.1/6.2 ships TensorRT 10.3; pip's `tensorrt` on x86_64 is 11.x.
OLDEST_TENSORRT: Version = (10, 3)
NEWEST_TENSORRT_MAJOR = 11
SUPPORTED_TENSORRT = "10.3 to 11.x"


def parse_version(text: str) -> Version:
    """`"10.16.1.11"` -> (10, 16, 1, 11); a suffix such as `.post1` ends it."""
    parts = []
    for part in str(text).split("."):
        digits = "".join(ch for ch in part if ch.isdigit())
        if not digits or not part[0].isdigit():
            break
        parts.append(int(digits))
    return tuple(parts)


def check_supported_tensorrt(version: str) -> None:
    """One line, naming the supported range, for a TensorRT this package was not written for."""
    parsed = parse_version(version)
    if not parsed or parsed < OLDEST_TENSORRT or parsed[0] > NEWEST_TENSORRT_MAJOR:
        raise BackendUnavailableError(
            f"TensorRT {version} is installed; fusedinf-cc builds and runs engines with TensorRT "
            f"{SUPPORTED_TENSORRT} (JetPack 6.1 or later on a Jetson)"
        )


@dataclass(frozen=True)
class Available:
    """The versions that have a name: from `since`, up to but not including `before`."""

    since: Version = ()
    before: Version | None = None
    # A method the code defines in its own subclass (TensorRT calls it), rather than reads.
    override: bool = False

    def in_version(self, version: Version) -> bool:
        return version >= self.since and (self.before is None or version < self.before)


ALWAYS = Available()
OVERRIDE = Available(override=True)
UNTIL_11 = Available(before=(11,))


class BindingNames:
    """One binding module's declared names, and the only way the code reads them."""

    def __init__(self, module: str, names: Mapping[str, Available]):
        self.module = module
        self.names = dict(names)

    def declared(self, path: str) -> Available:
        try:
            return self.names[path]
        except KeyError:
            raise LookupError(
                f"{self.module} name {path!r} is not declared in fusedinf_cc/backends/tensorrt/"
                "names.py"
            ) from None

    def has(self, path: str, version: str) -> bool:
        """Whether that version of the bindings has `path`, by the declaration."""
        return self.declared(path).in_version(parse_version(version))

    def name(self, module: Any, path: str) -> Any:
        """`path` read from the module itself: a class, an enum member, a function."""
        self.declared(path)
        value = module
        for part in path.split("."):
            value = self._read(value, part, path)
        return value

    def attr(self, obj: Any, path: str) -> Any:
        """The member `path` names, read from `obj`, an instance of the path's owner."""
        self.declared(path)
        return self._read(obj, path.rsplit(".", 1)[-1], path)

    def set_attr(self, obj: Any, path: str, value: Any) -> None:
        self.declared(path)
        setattr(obj, path.rsplit(".", 1)[-1], value)

    def _read(self, obj: Any, member: str, path: str) -> Any:
        try:
            return getattr(obj, member)
        except AttributeError:
            raise BackendUnavailableError(
                f"the installed {self.module} has no {path}: fusedinf-cc runs TensorRT "
                f"{SUPPORTED_TENSORRT} (with cuda-python 12 or 13)"
            ) from None


TENSORRT = BindingNames(
    "tensorrt",
    {
        "__version__": ALWAYS,
        "nptype": ALWAYS,
        "Logger": ALWAYS,
        "Logger.WARNING": ALWAYS,
        # building
        "Builder": ALWAYS,
        "Builder.create_network": ALWAYS,
        "Builder.create_builder_config": ALWAYS,
        "Builder.create_optimization_profile": ALWAYS,
        "Builder.build_serialized_network": ALWAYS,
        "NetworkDefinitionCreationFlag.STRONGLY_TYPED": ALWAYS,  # 11: always on, deprecated
        "OnnxParser": ALWAYS,
        "OnnxParser.parse_from_file": ALWAYS,
        "OnnxParser.num_errors": ALWAYS,
        "OnnxParser.get_error": ALWAYS,
        "ParserError.node": ALWAYS,
        "ParserError.node_name": ALWAYS,
        "ParserError.node_operator": ALWAYS,
        "ParserError.desc": ALWAYS,
        "IBuilderConfig.set_memory_pool_limit": ALWAYS,
        "IBuilderConfig.set_flag": ALWAYS,
        "IBuilderConfig.int8_calibrator": UNTIL_11,
        "IBuilderConfig.builder_optimization_level": ALWAYS,
        "IBuilderConfig.hardware_compatibility_level": ALWAYS,
        "IBuilderConfig.add_optimization_profile": ALWAYS,
        "IBuilderConfig.progress_monitor": ALWAYS,
        "IBuilderConfig.create_timing_cache": ALWAYS,
        "IBuilderConfig.set_timing_cache": ALWAYS,
        "ITimingCache.serialize": ALWAYS,
        "IOptimizationProfile.set_shape": ALWAYS,
        "MemoryPoolType.WORKSPACE": ALWAYS,
        "MemoryPoolType.DLA_MANAGED_SRAM": ALWAYS,
        "MemoryPoolType.DLA_LOCAL_DRAM": ALWAYS,
        "MemoryPoolType.DLA_GLOBAL_DRAM": ALWAYS,
        "MemoryPoolType.TACTIC_SHARED_MEMORY": ALWAYS,
        "BuilderFlag.FP16": UNTIL_11,  # 11 takes precision from the network's types
        "BuilderFlag.INT8": UNTIL_11,
        "BuilderFlag.VERSION_COMPATIBLE": ALWAYS,
        "BuilderFlag.WEIGHT_STREAMING": ALWAYS,
        "HardwareCompatibilityLevel.AMPERE_PLUS": ALWAYS,
        "HardwareCompatibilityLevel.SAME_COMPUTE_CAPABILITY": Available(since=(10, 9)),
        "IInt8EntropyCalibrator2": UNTIL_11,
        "IInt8EntropyCalibrator2.get_batch_size": Available(before=(11,), override=True),
        "IInt8EntropyCalibrator2.get_batch": Available(before=(11,), override=True),
        "IInt8EntropyCalibrator2.read_calibration_cache": Available(before=(11,), override=True),
        "IInt8EntropyCalibrator2.write_calibration_cache": Available(before=(11,), override=True),
        "IProgressMonitor": ALWAYS,
        "IProgressMonitor.phase_start": OVERRIDE,
        "IProgressMonitor.step_complete": OVERRIDE,
        "IProgressMonitor.phase_finish": OVERRIDE,
        # running
        "Runtime": ALWAYS,
        "Runtime.deserialize_cuda_engine": ALWAYS,
        "Runtime.engine_host_code_allowed": ALWAYS,
        "ICudaEngine.device_memory_size_v2": ALWAYS,  # from 10.1
        "ICudaEngine.streamable_weights_size": ALWAYS,
        "ICudaEngine.weight_streaming_budget_v2": ALWAYS,  # from 10.1
        "ICudaEngine.create_execution_context": ALWAYS,
        "ICudaEngine.num_io_tensors": ALWAYS,
        "ICudaEngine.get_tensor_name": ALWAYS,
        "ICudaEngine.get_tensor_mode": ALWAYS,
        "ICudaEngine.get_tensor_dtype": ALWAYS,
        "ICudaEngine.get_tensor_shape": ALWAYS,
        "TensorIOMode.INPUT": ALWAYS,
        "IExecutionContext.set_input_shape": ALWAYS,
        "IExecutionContext.set_tensor_address": ALWAYS,
        "IExecutionContext.get_tensor_shape": ALWAYS,
        "IExecutionContext.execute_async_v3": ALWAYS,
    },
)

# cuda-python's runtime bindings: `cuda.bindings.runtime` (12.x, 13.x), or `cuda.cudart` (older).
CUDA_RUNTIME = BindingNames(
    "cuda.bindings.runtime",
    {
        "cudaSetDevice": ALWAYS,
        "cudaGetDeviceProperties": ALWAYS,
        "cudaDeviceProp.name": ALWAYS,
        "cudaDeviceProp.major": ALWAYS,
        "cudaDeviceProp.minor": ALWAYS,
        "cudaDeviceProp.totalGlobalMem": ALWAYS,
        "cudaStreamCreate": ALWAYS,
        "cudaStreamSynchronize": ALWAYS,
        "cudaMalloc": ALWAYS,
        "cudaFree": ALWAYS,
        "cudaMemcpy": ALWAYS,
        "cudaMemcpyAsync": ALWAYS,
        "cudaMemcpyKind.cudaMemcpyHostToDevice": ALWAYS,
        "cudaMemcpyKind.cudaMemcpyDeviceToHost": ALWAYS,
        "cudaMemGetInfo": ALWAYS,
    },
)
