"""Build a serialized TensorRT engine from an ONNX file (TensorRT 10.3 to 11.x Python API).

The two majors differ in how precision is chosen. TensorRT 10 builds a weakly typed network
unless asked, and `--fp16`/`--int8` are builder flags (INT8 scales from a calibration cache).
TensorRT 11 builds every network strongly typed: precision comes from the graph's own types and
Q/DQ nodes, so the compiler hands it an FP16 graph for `--fp16` (`compiler/targets/tensorrt.py`)
and no flag is set here.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

from fusedinf_cc.backends.tensorrt.compat import EngineTarget
from fusedinf_cc.backends.tensorrt.device import open_device
from fusedinf_cc.backends.tensorrt.names import TENSORRT, parse_version
from fusedinf_cc.backends.tensorrt.options import (
    HARDWARE_COMPATIBILITY,
    MEMORY_POOLS,
    EngineOptions,
    ShapeProfile,
)
from fusedinf_cc.backends.tensorrt.parser_errors import EngineBuildError, ParserIssue, parser_error
from fusedinf_cc.backends.tensorrt.runtime import device_memory_bytes, here, import_tensorrt, logger
from fusedinf_cc.common.errors import FusedInfWarning
from fusedinf_cc.common.files import staging_dir

# (phase name, steps done, steps in the phase); phases nest, as TensorRT reports them.
ProgressCallback = Callable[[str, int, int], None]
T = TypeVar("T")


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
    major = parse_version(TENSORRT.name(trt, "__version__"))[0]
    device = open_device()
    builder = TENSORRT.name(trt, "Builder")(logger(trt))
    flags = 0
    if options.strongly_typed and major == 10:  # 11: every network is strongly typed
        flags |= 1 << int(TENSORRT.name(trt, "NetworkDefinitionCreationFlag.STRONGLY_TYPED"))
    network = _made(TENSORRT.attr(builder, "Builder.create_network")(flags), "a network")
    parser = TENSORRT.name(trt, "OnnxParser")(network, logger(trt))
    # From the file, so that TensorRT finds external weights beside it.
    if not TENSORRT.attr(parser, "OnnxParser.parse_from_file")(str(onnx_path)):
        get_error = TENSORRT.attr(parser, "OnnxParser.get_error")
        count = TENSORRT.attr(parser, "OnnxParser.num_errors")
        issues = [ParserIssue.from_parser_error(get_error(i)) for i in range(count)]
        raise parser_error(onnx_path.name, issues)
    config = _made(TENSORRT.attr(builder, "Builder.create_builder_config")(), "a builder config")
    _configure(trt, major, builder, config, options, profiles)
    timing_cache = _attach_timing_cache(config, options.timing_cache)
    if on_progress is not None:
        monitor = _progress_monitor(trt, on_progress)
        TENSORRT.set_attr(config, "IBuilderConfig.progress_monitor", monitor)
    build = TENSORRT.attr(builder, "Builder.build_serialized_network")
    serialized = build(network, config)
    if serialized is None:
        raise EngineBuildError(
            f"TensorRT could not build an engine from {onnx_path.name} (its log above says why)"
        )
    # Read the engine back before writing it: its device memory goes into the manifest, and a
    # plan this TensorRT cannot read back must not be left behind as if it were built.
    runtime = TENSORRT.name(trt, "Runtime")(logger(trt))
    if options.version_compatible:  # such a plan carries the runtime code that reads it
        TENSORRT.set_attr(runtime, "Runtime.engine_host_code_allowed", True)
    engine = TENSORRT.attr(runtime, "Runtime.deserialize_cuda_engine")(memoryview(serialized))
    if engine is None:
        raise EngineBuildError(
            f"TensorRT built an engine from {onnx_path.name} but cannot deserialize it (its log "
            "above says why)"
        )
    with staging_dir(engine_path) as staging:
        staged = staging / engine_path.name
        staged.write_bytes(memoryview(serialized))
        os.replace(staged, engine_path)
    if timing_cache is not None and options.timing_cache is not None:
        with staging_dir(options.timing_cache) as staging:
            staged = staging / options.timing_cache.name
            serialize = TENSORRT.attr(timing_cache, "ITimingCache.serialize")
            staged.write_bytes(memoryview(serialize()))
            os.replace(staged, options.timing_cache)
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
        device_memory_bytes=device_memory_bytes(engine),
        streamable_weight_bytes=int(TENSORRT.attr(engine, "ICudaEngine.streamable_weights_size")),
        gpu_memory_bytes=device.info.total_memory_bytes,
    )


def _made(value: T | None, what: str) -> T:
    """TensorRT returns None where it cannot make something; say so in one line."""
    if value is None:
        raise EngineBuildError(f"TensorRT could not create {what} (its log above says why)")
    return value


def _configure(
    trt: ModuleType,
    major: int,
    builder: Any,
    config: Any,
    options: EngineOptions,
    profiles: Sequence[ShapeProfile],
) -> None:
    set_flag = TENSORRT.attr(config, "IBuilderConfig.set_flag")
    set_pool = TENSORRT.attr(config, "IBuilderConfig.set_memory_pool_limit")
    for pool, size in options.mem_pool_sizes.items():
        set_pool(TENSORRT.name(trt, MEMORY_POOLS[pool]), size)
    if major == 10:  # 11 takes precision from the graph (see the module's docstring)
        if options.fp16:
            set_flag(TENSORRT.name(trt, "BuilderFlag.FP16"))
        if options.int8:
            set_flag(TENSORRT.name(trt, "BuilderFlag.INT8"))
            assert options.calib_cache is not None
            calibrator = _cache_calibrator(trt, options.calib_cache)
            TENSORRT.set_attr(config, "IBuilderConfig.int8_calibrator", calibrator)
    if options.version_compatible:
        set_flag(TENSORRT.name(trt, "BuilderFlag.VERSION_COMPATIBLE"))
    if options.weight_streaming:
        set_flag(TENSORRT.name(trt, "BuilderFlag.WEIGHT_STREAMING"))
    if options.builder_opt_level is not None:
        level = options.builder_opt_level
        TENSORRT.set_attr(config, "IBuilderConfig.builder_optimization_level", level)
    compatibility = HARDWARE_COMPATIBILITY[options.hardware_compatibility]
    if compatibility is not None:
        level = TENSORRT.name(trt, compatibility)
        TENSORRT.set_attr(config, "IBuilderConfig.hardware_compatibility_level", level)
    if profiles:
        create = TENSORRT.attr(builder, "Builder.create_optimization_profile")
        profile = _made(create(), "an optimization profile")
        set_shape = TENSORRT.attr(profile, "IOptimizationProfile.set_shape")
        for shape in profiles:
            set_shape(shape.name, shape.min, shape.opt, shape.max)
        TENSORRT.attr(config, "IBuilderConfig.add_optimization_profile")(profile)


def _attach_timing_cache(config: Any, path: Path | None) -> Any:
    """Start from the cache file if it exists; the build adds to it and it is written back.

    A cache from another GPU or TensorRT version is refused by TensorRT (`set_timing_cache`
    returns False); the build then starts a fresh cache, which replaces the file.
    """
    if path is None:
        return None
    create = TENSORRT.attr(config, "IBuilderConfig.create_timing_cache")
    attach = TENSORRT.attr(config, "IBuilderConfig.set_timing_cache")
    cache = _made(create(path.read_bytes() if path.is_file() else b""), "a timing cache")
    if not attach(cache, ignore_mismatch=False):
        warnings.warn(
            f"--timing-cache {path} was made by another GPU or TensorRT version; this build "
            "starts a fresh cache and writes it there",
            FusedInfWarning,
            stacklevel=2,
        )
        cache = _made(create(b""), "a timing cache")
        if not attach(cache, ignore_mismatch=False):
            raise EngineBuildError(f"TensorRT refused even a fresh timing cache for {path}")
    return cache


def _cache_calibrator(trt: ModuleType, cache_path: Path) -> Any:
    """An INT8 calibrator that only replays scales from a calibration cache (TensorRT 10)."""
    base = TENSORRT.name(trt, "IInt8EntropyCalibrator2")

    class CacheCalibrator(base):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            base.__init__(self)
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
    base = TENSORRT.name(trt, "IProgressMonitor")

    class Monitor(base):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            base.__init__(self)
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
