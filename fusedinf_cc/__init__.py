"""fusedinf-cc: fuse several ONNX models into one graph, build it, verify it, swap it in and out.

The library is what the CLI calls; a Python user can call the same functions:

    from fusedinf_cc import FusionOptions, fuse, load_sources, write_fused
    sources = load_sources([("det", Path("det.onnx")), ("cls", Path("cls.onnx"))])
    write_fused(fuse(sources, FusionOptions(share_inputs="auto")), Path("fused.onnx"))

Names are imported on first use, so a process that only runs artifacts (a bench worker, a
loader) does not pay for the compiler's imports (onnx, onnx-ir).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "PIPELINE": "fusedinf_cc.pipeline",
    "FusedModel": "fusedinf_cc.pipeline",
    "fuse": "fusedinf_cc.pipeline",
    "write_fused": "fusedinf_cc.pipeline",
    "load_sources": "fusedinf_cc.model_io",
    "FusionOptions": "fusedinf_cc.passes.base",
    "ShareSpec": "fusedinf_cc.passes.base",
    "FusedInfError": "fusedinf_cc.errors",
}

__all__ = [*_EXPORTS, "__version__"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'fusedinf_cc' has no attribute {name!r}")
