"""Engine build options, named as trtexec names them, checked before any model is read.

Nothing here imports TensorRT: options, optimisation profiles and their errors are plain data, so
they are tested on machines without a GPU, and a bad option fails in a second, not after a build.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fusedinf_cc.backends.base import TensorSpec
from fusedinf_cc.backends.tensorrt.names import TENSORRT, parse_version
from fusedinf_cc.common.errors import UserInputError
from fusedinf_cc.common.shapes import parse_shapes
from fusedinf_cc.common.sizes import parse_size

# trtexec's pool names -> tensorrt.MemoryPoolType members.
MEMORY_POOLS = {
    "workspace": "MemoryPoolType.WORKSPACE",
    "dlaSRAM": "MemoryPoolType.DLA_MANAGED_SRAM",
    "dlaLocalDRAM": "MemoryPoolType.DLA_LOCAL_DRAM",
    "dlaGlobalDRAM": "MemoryPoolType.DLA_GLOBAL_DRAM",
    "tacticSharedMem": "MemoryPoolType.TACTIC_SHARED_MEMORY",
}
# trtexec's --hardwareCompatibilityLevel values -> tensorrt.HardwareCompatibilityLevel members
# (none: the level is left at TensorRT's default).
HARDWARE_COMPATIBILITY: dict[str, str | None] = {
    "none": None,
    "ampere+": "HardwareCompatibilityLevel.AMPERE_PLUS",
    "same-compute-capability": "HardwareCompatibilityLevel.SAME_COMPUTE_CAPABILITY",
}
BUILDER_OPT_LEVELS = range(6)


@dataclass(frozen=True)
class ShapeProfile:
    """One dynamic input's range in the engine's optimisation profile."""

    name: str
    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]


@dataclass(frozen=True)
class EngineOptions:
    """What `fuse -o x.engine` passes to TensorRT's builder."""

    fp16: bool = False
    int8: bool = False
    calib_cache: Path | None = None
    strongly_typed: bool = False
    mem_pool_sizes: Mapping[str, int] = field(default_factory=dict)
    shapes: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    min_shapes: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    opt_shapes: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    max_shapes: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    timing_cache: Path | None = None
    builder_opt_level: int | None = None
    version_compatible: bool = False
    hardware_compatibility: str = "none"
    weight_streaming: bool = False

    def __post_init__(self) -> None:
        _check_combinations(self)

    def to_record(self) -> dict[str, Any]:
        """The options as the manifest keeps them (file options by name only)."""
        record: dict[str, Any] = {
            "fp16": self.fp16,
            "int8": self.int8,
            "strongly_typed": self.strongly_typed,
            "mem_pool_sizes": dict(self.mem_pool_sizes),
            "builder_opt_level": self.builder_opt_level,
            "version_compatible": self.version_compatible,
            "hardware_compatibility": self.hardware_compatibility,
            "weight_streaming": self.weight_streaming,
        }
        if self.calib_cache is not None:
            record["calib_cache"] = self.calib_cache.name
        if self.timing_cache is not None:
            record["timing_cache"] = self.timing_cache.name
        return record


def parse_engine_options(
    *,
    fp16: bool = False,
    int8: bool = False,
    calib_cache: Path | None = None,
    strongly_typed: bool = False,
    mem_pool_size: str | None = None,
    shapes: str | None = None,
    min_shapes: str | None = None,
    opt_shapes: str | None = None,
    max_shapes: str | None = None,
    timing_cache: Path | None = None,
    builder_opt_level: int | None = None,
    version_compatible: bool = False,
    hardware_compatibility: str = "none",
    weight_streaming: bool = False,
) -> EngineOptions:
    """EngineOptions from command-line text, each mistake reported in one line."""
    return EngineOptions(
        fp16=fp16,
        int8=int8,
        calib_cache=calib_cache,
        strongly_typed=strongly_typed,
        mem_pool_sizes=parse_mem_pool_sizes(mem_pool_size),
        shapes=parse_shapes(shapes),
        min_shapes=_flagged("--min-shapes", min_shapes),
        opt_shapes=_flagged("--opt-shapes", opt_shapes),
        max_shapes=_flagged("--max-shapes", max_shapes),
        timing_cache=timing_cache,
        builder_opt_level=builder_opt_level,
        version_compatible=version_compatible,
        hardware_compatibility=hardware_compatibility,
        weight_streaming=weight_streaming,
    )


def parse_mem_pool_sizes(text: str | None) -> dict[str, int]:
    """`workspace:2GiB,dlaSRAM:1MiB` -> {"workspace": 2147483648, "dlaSRAM": 1048576}."""
    pools: dict[str, int] = {}
    for item in (text or "").split(","):
        if not item.strip():
            continue
        pool, sep, size = item.strip().partition(":")
        if not sep or pool not in MEMORY_POOLS:
            known = ", ".join(MEMORY_POOLS)
            raise UserInputError(
                f"--mem-pool-size {item.strip()!r}: expected POOL:SIZE with POOL one of {known}"
            )
        pools[pool] = parse_size(size, f"--mem-pool-size {pool}")
    return pools


def _flagged(flag: str, text: str | None) -> dict[str, tuple[int, ...]]:
    try:
        return parse_shapes(text)
    except UserInputError as error:
        raise UserInputError(str(error).replace("--shapes", flag, 1)) from None


def _check_combinations(options: EngineOptions) -> None:
    """What is wrong whatever TensorRT builds it; `check_for_tensorrt` adds what depends on it."""
    if options.calib_cache is not None:
        if not options.int8:
            raise UserInputError("--calib-cache is only used with --int8")
        if not options.calib_cache.is_file():
            raise UserInputError(f"--calib-cache {options.calib_cache}: no such file")
    if options.timing_cache is not None and not options.timing_cache.parent.is_dir():
        raise UserInputError(
            f"--timing-cache {options.timing_cache}: folder {options.timing_cache.parent} "
            "does not exist"
        )
    if options.builder_opt_level is not None and options.builder_opt_level not in (
        BUILDER_OPT_LEVELS
    ):
        raise UserInputError(
            f"--builder-opt-level {options.builder_opt_level}: use 0 to 5 (TensorRT's default: 3)"
        )
    if options.hardware_compatibility not in HARDWARE_COMPATIBILITY:
        raise UserInputError(
            f"--hardware-compatibility {options.hardware_compatibility!r}: use one of "
            f"{', '.join(HARDWARE_COMPATIBILITY)}"
        )
    ranged = (options.min_shapes, options.opt_shapes, options.max_shapes)
    named = [set(shapes) for shapes in ranged]
    if named[0] != named[1] or named[1] != named[2]:
        raise UserInputError(
            "--min-shapes, --opt-shapes and --max-shapes must name the same inputs "
            f"(got {sorted(named[0])}, {sorted(named[1])}, {sorted(named[2])})"
        )
    both = set(options.shapes) & named[0]
    if both:
        raise UserInputError(
            f"{sorted(both)}: give an input either --shapes or --min/--opt/--max-shapes, not both"
        )


def check_for_tensorrt(options: EngineOptions, version: str) -> None:
    """Refuse, in one line and before any model is read, what this TensorRT cannot build.

    TensorRT 10 builds weakly typed networks unless told otherwise: FP16 and INT8 are builder
    flags, INT8 scales come from a calibrator, and weight streaming needs a strongly typed
    network. TensorRT 11 builds every network strongly typed and has no calibrators: `--fp16`
    converts the graph to FP16, and INT8 comes only from Q/DQ nodes in the model.
    """
    major = parse_version(version)[0]
    if major == 10:
        if options.strongly_typed and (options.fp16 or options.int8):
            raise UserInputError(
                "--strongly-typed takes every precision from the model's own types; drop "
                "--fp16/--int8"
            )
        if options.weight_streaming and not options.strongly_typed:
            raise UserInputError(
                "--weight-streaming needs --strongly-typed (TensorRT 10 requires it)"
            )
        if options.int8 and options.calib_cache is None:
            raise UserInputError(
                "--int8 needs --calib-cache FILE (scales from a calibration run); a model with "
                "Q/DQ nodes needs no --int8: build it with --strongly-typed"
            )
    elif options.calib_cache is not None:
        raise UserInputError(
            f"--calib-cache: TensorRT {version} has no INT8 calibrators; it takes INT8 from "
            "Q/DQ nodes in the model (quantize the sources first, then fuse with --int8)"
        )
    path = HARDWARE_COMPATIBILITY[options.hardware_compatibility]
    if path is not None and not TENSORRT.has(path, version):
        since = ".".join(map(str, TENSORRT.declared(path).since))
        raise UserInputError(
            f"--hardware-compatibility {options.hardware_compatibility} needs TensorRT "
            f"{since} or later; this machine has {version}"
        )


def build_profiles(inputs: Sequence[TensorSpec], options: EngineOptions) -> list[ShapeProfile]:
    """One optimisation profile covering every dynamic input of the fused graph.

    A dynamic input needs a range: `--shapes` fixes it (min = opt = max), the three range flags
    give it one. Static inputs need none; shapes given for them must match.
    """
    by_name = {spec.name: spec for spec in inputs}
    given = set(options.shapes) | set(options.min_shapes)
    unknown = given - set(by_name)
    if unknown:
        raise UserInputError(
            f"shapes given for unknown inputs {sorted(unknown)} (the fused inputs are: "
            f"{', '.join(by_name)})"
        )
    profiles = []
    for spec in inputs:
        if spec.name in options.shapes:
            shape = options.shapes[spec.name]
            bounds = (shape, shape, shape)
        elif spec.name in options.min_shapes:
            bounds = (
                options.min_shapes[spec.name],
                options.opt_shapes[spec.name],
                options.max_shapes[spec.name],
            )
        else:
            if any(not isinstance(dim, int) for dim in spec.shape):
                raise UserInputError(
                    f"input {spec.name!r} has dynamic dims ({_describe(spec.shape)}): give "
                    f"--shapes {spec.name}:{_example(spec.shape)} or --min/--opt/--max-shapes"
                )
            continue
        for bound in bounds:
            _check_fits(spec, bound)
        low, mid, high = bounds
        if any(not (a <= b <= c) for a, b, c in zip(low, mid, high, strict=True)):
            raise UserInputError(
                f"input {spec.name!r}: min <= opt <= max must hold in every dim "
                f"({'x'.join(map(str, low))}, {'x'.join(map(str, mid))}, "
                f"{'x'.join(map(str, high))})"
            )
        if any(not isinstance(dim, int) for dim in spec.shape):
            profiles.append(ShapeProfile(spec.name, low, mid, high))
    return profiles


def _check_fits(spec: TensorSpec, shape: tuple[int, ...]) -> None:
    fixed = [(axis, dim) for axis, dim in enumerate(spec.shape) if isinstance(dim, int)]
    if len(shape) != len(spec.shape) or any(shape[axis] != dim for axis, dim in fixed):
        raise UserInputError(
            f"input {spec.name!r}: shape {'x'.join(map(str, shape))} does not fit the model's "
            f"{_describe(spec.shape)}"
        )
    if any(dim < 1 for dim in shape):
        raise UserInputError(f"input {spec.name!r}: profile dims must be at least 1")


def _describe(shape: Sequence[int | str | None]) -> str:
    return "x".join("?" if dim is None else str(dim) for dim in shape)


def _example(shape: Sequence[int | str | None]) -> str:
    return "x".join(str(dim) if isinstance(dim, int) else "1" for dim in shape)
