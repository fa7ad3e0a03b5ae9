"""Versions of the tools a build depends on, recorded in every manifest."""

from __future__ import annotations

import platform
from importlib import metadata

_DISTRIBUTIONS = ("fusedinf-cc", "onnx", "onnx-ir", "numpy")
# Both ONNX Runtime packages install the same `onnxruntime` module; record whichever is present.
_ONNXRUNTIME_DISTRIBUTIONS = ("onnxruntime", "onnxruntime-gpu")


def distribution_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def tool_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in _DISTRIBUTIONS + _ONNXRUNTIME_DISTRIBUTIONS:
        version = distribution_version(name)
        if version:
            versions[name] = version
    return versions
