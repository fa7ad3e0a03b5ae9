"""Build a serialized TensorRT engine from a fused ONNX file (TensorRT 10 Python API)."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from fusedinf_cc.backends.tensorrt.compat import EngineTarget
from fusedinf_cc.backends.tensorrt.device import open_device
from fusedinf_cc.backends.tensorrt.options import (
    HARDWARE_COMPATIBILITY,
    MEMORY_POOLS,
    EngineOptions,
    ShapeProfile,
)
from fusedinf_cc.backends.tensorrt.parser_errors import EngineBuildError, ParserIssue, parser_error
from fusedinf_cc.backends.tensorrt.runtime import here, import_tensorrt, logger
from fusedinf_cc.common.files import staging_dir

# (phase name, steps done, steps in the phase); phases nest, as TensorRT reports them.
ProgressCallback = Callable[[str, int, int], None]


@dataclass(frozen=True)
class EngineBuild:
    """What the manifest needs to know about a built engine."""

    target: EngineTarget
    engine_bytes: int
    device_memory_bytes: int
    streamable_weight_bytes: int
    gpu_memory_bytes: int


def build_engine(
    onnx_path: Path,
    engine_path: Path,
    options: EngineOptions,
    profiles: Sequence[ShapeProfile],
    on_progress: ProgressCallback | None = None,
) -> EngineBuild:
    """Parse, configure, build, and write `engine_path` atomically (temp file, then rename)."""
    trt = import_tensorrt()
    device = open_device()
    builder = trt.Builder(logger(trt))
    flags = 0
    if options.strongly_typed:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger(trt))
    # From the file, so that TensorRT finds external weights beside it.
    if not parser.parse_from_file(str(onnx_path)):
        issues = [
            ParserIssue.from_parser_error(parser.get_error(i)) for i in range(parser.num_errors)
        ]
        raise parser_error(onnx_path.name, issues)
    config = builder.create_builder_config()
    _configure(trt, builder, config, options, profiles)
    timing_cache = _attach_timing_cache(config, options.timing_cache)
    if on_progress is not None:
        config.progress_monitor = _progress_monitor(trt, on_progress)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineBuildError(
            f"TensorRT could not build an engine from {onnx_path.name} (its log above says why)"
        )
    with staging_dir(engine_path) as staging:
        staged = staging / engine_path.name
        staged.write_bytes(memoryview(serialized))
        os.replace(staged, engine_path)
    if timing_cache is not None and options.timing_cache is not None:
        with staging_dir(options.timing_cache) as staging:
            staged = staging / options.timing_cache.name
            staged.write_bytes(memoryview(timing_cache.serialize()))
            os.replace(staged, options.timing_cache)
    engine = trt.Runtime(logger(trt)).deserialize_cuda_engine(memoryview(serialized))
    device_memory = getattr(engine, "device_memory_size_v2", None)
    target = here(device, trt)
    return EngineBuild(
        target=EngineTarget(
            tensorrt=target.tensorrt,
            compute_capability=target.compute_capability,
            gpu=target.gpu,
            version_compatible=options.version_compatible,
            hardware_compatibility=options.hardware_compatibility,
        ),
        engine_bytes=engine_path.stat().st_size,
        device_memory_bytes=int(
            device_memory if device_memory is not None else engine.device_memory_size
        ),
        streamable_weight_bytes=int(getattr(engine, "streamable_weights_size", 0)),
        gpu_memory_bytes=device.info.total_memory_bytes,
    )


def _configure(
    trt: ModuleType,
    builder: Any,
    config: Any,
    options: EngineOptions,
    profiles: Sequence[ShapeProfile],
) -> None:
    for pool, size in options.mem_pool_sizes.items():
        config.set_memory_pool_limit(getattr(trt.MemoryPoolType, MEMORY_POOLS[pool]), size)
    if options.fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    if options.int8:
        config.set_flag(trt.BuilderFlag.INT8)
        assert options.calib_cache is not None
        config.int8_calibrator = _cache_calibrator(trt, options.calib_cache)
    if options.version_compatible:
        config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)
    if options.weight_streaming:
        config.set_flag(trt.BuilderFlag.WEIGHT_STREAMING)
    if options.builder_opt_level is not None:
        config.builder_optimization_level = options.builder_opt_level
    if options.hardware_compatibility != "none":
        level = getattr(
            trt.HardwareCompatibilityLevel,
            HARDWARE_COMPATIBILITY[options.hardware_compatibility],
            None,
        )
        if level is None:
            raise EngineBuildError(
                f"--hardware-compatibility {options.hardware_compatibility}: TensorRT "
                f"{trt.__version__} does not offer it"
            )
        config.hardware_compatibility_level = level
    if profiles:
        profile = builder.create_optimization_profile()
        for shape in profiles:
            profile.set_shape(shape.name, shape.min, shape.opt, shape.max)
        config.add_optimization_profile(profile)


def _attach_timing_cache(config: Any, path: Path | None) -> Any:
    """Start from the cache file if it exists; the build adds to it and it is written back."""
    if path is None:
        return None
    cache = config.create_timing_cache(path.read_bytes() if path.is_file() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    return cache


def _cache_calibrator(trt: ModuleType, cache_path: Path) -> Any:
    """An INT8 calibrator that only replays scales from a calibration cache."""

    class CacheCalibrator(trt.IInt8EntropyCalibrator2):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)
            self._cache = cache_path.read_bytes()

        def get_batch_size(self) -> int:
            return 1

        def get_batch(self, names: list[str]) -> None:
            return None  # no data: the cache holds every scale

        def read_calibration_cache(self) -> bytes:
            return self._cache

        def write_calibration_cache(self, cache: bytes) -> None:
            return None

    return CacheCalibrator()


def _progress_monitor(trt: ModuleType, on_progress: ProgressCallback) -> Any:
    class Monitor(trt.IProgressMonitor):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)
            self._totals: dict[str, int] = {}

        def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
            self._totals[phase_name] = num_steps
            on_progress(phase_name, 0, num_steps)

        def step_complete(self, phase_name: str, step: int) -> bool:
            on_progress(phase_name, step + 1, self._totals.get(phase_name, step + 1))
            return True  # False would cancel the build

        def phase_finish(self, phase_name: str) -> None:
            total = self._totals.pop(phase_name, 0)
            on_progress(phase_name, total, total)

    return Monitor()
