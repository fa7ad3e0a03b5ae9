"""Will this engine deserialize here? Decided from the manifest, before TensorRT is asked.

A TensorRT plan is tied to the TensorRT version that built it and to the GPU's compute
capability, unless it was built version-compatible (later TensorRT of the same major version) or
hardware-compatible (any Ampere or newer GPU). Deserializing a mismatched plan fails with an
opaque error or, worse, a crash; this check fails first, saying what was built for what.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fusedinf_cc.artifacts.manifest import manifest_path_for, read_manifest
from fusedinf_cc.backends.tensorrt.names import parse_version
from fusedinf_cc.common.errors import FusedInfError

AMPERE_COMPUTE_CAPABILITY = (8, 0)


class IncompatibleEngineError(FusedInfError):
    """An engine built for another TensorRT version or GPU (exit 2)."""


@dataclass(frozen=True)
class EngineTarget:
    """What an engine was built for, or what a machine offers."""

    tensorrt: str
    compute_capability: str  # "8.7"
    gpu: str = ""
    version_compatible: bool = False
    hardware_compatibility: str = "none"

    def to_record(self) -> dict[str, Any]:
        return {
            "tensorrt": self.tensorrt,
            "compute_capability": self.compute_capability,
            "gpu": self.gpu,
            "version_compatible": self.version_compatible,
            "hardware_compatibility": self.hardware_compatibility,
        }

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> EngineTarget:
        return cls(
            tensorrt=str(record.get("tensorrt", "")),
            compute_capability=str(record.get("compute_capability", "")),
            gpu=str(record.get("gpu", "")),
            version_compatible=bool(record.get("version_compatible", False)),
            hardware_compatibility=str(record.get("hardware_compatibility", "none")),
        )


def check_engine_compatible(built: EngineTarget, here: EngineTarget, engine_name: str) -> None:
    """Raise IncompatibleEngineError, naming both sides and the fix, if `built` cannot run here."""
    problems = [
        problem
        for problem in (_version_problem(built, here), _device_problem(built, here))
        if problem
    ]
    if problems:
        raise IncompatibleEngineError(
            f"{engine_name} was built for TensorRT {built.tensorrt} on compute capability "
            f"{built.compute_capability}{_gpu(built)}; this machine has TensorRT {here.tensorrt} "
            f"on compute capability {here.compute_capability}{_gpu(here)} "
            f"({'; '.join(problems)}): rebuild it here with `fusedinf-cc fuse ... -o "
            f"{engine_name}`"
        )


def _version_problem(built: EngineTarget, here: EngineTarget) -> str | None:
    built_version, here_version = parse_version(built.tensorrt), parse_version(here.tensorrt)
    if built.version_compatible:
        if here_version[0] != built_version[0] or here_version < built_version:
            return (
                "a version-compatible engine runs only on the same or a later TensorRT "
                "of its own major version"
            )
        return None
    if here_version[:3] != built_version[:3]:
        return "the TensorRT versions differ (build with --version-compatible to allow later ones)"
    return None


def _device_problem(built: EngineTarget, here: EngineTarget) -> str | None:
    built_cc = parse_version(built.compute_capability)
    here_cc = parse_version(here.compute_capability)
    if built.hardware_compatibility == "ampere+":
        if here_cc < AMPERE_COMPUTE_CAPABILITY:
            return "a hardware-compatible engine needs an Ampere or newer GPU"
        return None
    if here_cc != built_cc:
        return (
            "the compute capabilities differ (build with --hardware-compatibility ampere+ to run "
            "on any Ampere or newer GPU)"
        )
    return None


def _gpu(target: EngineTarget) -> str:
    return f" ({target.gpu})" if target.gpu else ""


def built_for(engine_path: Path) -> EngineTarget | None:
    """What the manifest beside an engine says it was built for (None without a manifest)."""
    sidecar = manifest_path_for(engine_path)
    if not sidecar.is_file():
        return None
    device = read_manifest(sidecar).device
    return EngineTarget.from_record(device) if device else None
