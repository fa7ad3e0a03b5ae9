"""Will a model that ONNX Runtime optimised for one CPU run right on this one?

At its full optimisation level ONNX Runtime rewrites convolutions into the NCHWc layout, whose
block size follows the CPU's vector width (16 floats with AVX-512, 8 with AVX2), and stores the
weights already reordered. An artifact optimised ahead of time (`.ort`, or `.onnx` built with
`--aot`) therefore runs right only on the same instruction-set class, with an ONNX Runtime that
knows the same internal operators, on its CPU execution provider. The manifest records that, and
loading checks it first, as it does for TensorRT engines.
"""

from __future__ import annotations

import functools
import platform
from collections.abc import Set
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fusedinf_cc.common.errors import FusedInfError

CPU_DEVICE_KIND = "cpu"
# Widest first: the first flag the CPU has names its class.
_X86_CLASSES = (("avx512f", "avx512"), ("avx2", "avx2"), ("avx", "avx"))


class IncompatibleCpuError(FusedInfError):
    """An artifact optimised for another CPU class or ONNX Runtime version (exit 2)."""


@dataclass(frozen=True)
class CpuTarget:
    """What an artifact was optimised for, or what this machine offers."""

    machine: str  # x86_64, aarch64, ...
    isa: str  # avx512, avx2, avx, neon, ... (the vector class ONNX Runtime's kernels pick)
    onnxruntime: str
    cpu: str = ""  # the model name, for messages only

    def to_record(self) -> dict[str, Any]:
        return {
            "kind": CPU_DEVICE_KIND,
            "machine": self.machine,
            "isa": self.isa,
            "onnxruntime": self.onnxruntime,
            "cpu": self.cpu,
            "provider": "CPUExecutionProvider",
        }

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> CpuTarget | None:
        if record.get("kind") != CPU_DEVICE_KIND:
            return None
        return cls(
            machine=str(record.get("machine", "")),
            isa=str(record.get("isa", "")),
            onnxruntime=str(record.get("onnxruntime", "")),
            cpu=str(record.get("cpu", "")),
        )

    def describe(self) -> str:
        return f"{self.machine} ({self.isa}) with ONNX Runtime {self.onnxruntime}"


def this_cpu(onnxruntime_version: str) -> CpuTarget:
    machine = platform.machine()
    model, flags = _cpuinfo()
    return CpuTarget(
        machine=machine, isa=isa_class(machine, flags), onnxruntime=onnxruntime_version, cpu=model
    )


def isa_class(machine: str, flags: Set[str]) -> str:
    """The vector class that decides ONNX Runtime's layouts and kernels on this CPU."""
    if machine.lower() in ("x86_64", "amd64", "i686", "i386"):
        return next((name for flag, name in _X86_CLASSES if flag in flags), "sse")
    if machine.lower() in ("aarch64", "arm64"):
        return "sve" if "sve" in flags else "neon"
    return machine or "unknown"


def check_cpu_compatible(built: CpuTarget, here: CpuTarget, artifact_name: str) -> None:
    """Raise IncompatibleCpuError, naming both sides and the fix, if `built` cannot run here."""
    same_class = (built.machine, built.isa) == (here.machine, here.isa)
    same_runtime = _major_minor(built.onnxruntime) == _major_minor(here.onnxruntime)
    if same_class and same_runtime:
        return
    what = "the CPU classes" if not same_class else "the ONNX Runtime versions"
    raise IncompatibleCpuError(
        f"{artifact_name} was optimised ahead of time for {built.describe()}; this machine is "
        f"{here.describe()} ({what} differ): rebuild it here, or ship the portable .onnx "
        "(built without --aot)"
    )


def check_cpu_provider(built: CpuTarget, runtime: str, artifact_name: str) -> None:
    """Models optimised for the CPU provider hold CPU-only operators: no GPU provider runs them."""
    if runtime != "ort-cpu":
        raise IncompatibleCpuError(
            f"{artifact_name} was optimised ahead of time for ONNX Runtime's CPU provider; "
            f"--backend {runtime} needs the portable .onnx (built without --aot)"
        )


def check_optimised_for_here(path: Path, runtime: str = "ort-cpu") -> CpuTarget | None:
    """Refuse, in one line, an artifact ONNX Runtime optimised for another CPU class, another
    ONNX Runtime or only its CPU provider; portable artifacts pass (and give None)."""
    from fusedinf_cc.backends.onnxruntime import import_onnxruntime

    built = cpu_built_for(path)
    if built is None:
        return None
    check_cpu_provider(built, runtime, path.name)
    check_cpu_compatible(built, this_cpu(import_onnxruntime().__version__), path.name)
    return built


def cpu_built_for(artifact: Path) -> CpuTarget | None:
    """What the manifest beside `artifact` says it was optimised for (None if portable)."""
    from fusedinf_cc.artifacts.manifest import cached_manifest

    manifest = cached_manifest(artifact)
    return None if manifest is None else CpuTarget.from_record(manifest.device)


@functools.cache
def _cpuinfo() -> tuple[str, frozenset[str]]:
    """The CPU's model name and feature flags from /proc/cpuinfo (empty elsewhere)."""
    model, flags = "", set[str]()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                key, _, value = line.partition(":")
                key = key.strip()
                if key in ("model name", "Model") and not model:
                    model = value.strip()
                elif key in ("flags", "Features") and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    return model or platform.processor(), frozenset(flags)


def _major_minor(version: str) -> tuple[str, ...]:
    return tuple(version.split(".")[:2])
