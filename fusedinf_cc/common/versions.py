"""Versions of the tools a build depends on, recorded in every manifest."""

from __future__ import annotations

import platform
from importlib import metadata

_DISTRIBUTIONS = ("fusedinf-cc", "onnx", "onnx-ir", "numpy", "tensorrt")
# Both ONNX Runtime packages install the same `onnxruntime` module; record whichever is present.
_ONNXRUNTIME_DISTRIBUTIONS = ("onnxruntime", "onnxruntime-gpu")


def distribution_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def tool_versions() -> dict[str, str]:
    """Package versions and the machine: an artifact optimised for one CPU may not suit another."""
    versions = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu": _cpu_model() or platform.processor() or platform.machine(),
    }
    for name in _DISTRIBUTIONS + _ONNXRUNTIME_DISTRIBUTIONS:
        version = distribution_version(name)
        if version:
            versions[name] = version
    return versions


def _cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        return None
    return None
