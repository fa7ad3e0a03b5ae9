"""fusedinf-cc: fuse several ONNX models into one graph, build it, verify it, swap it in and out.

The library is what the CLI calls; a Python user can call the same functions:

    from fusedinf_cc import BundleCache, build_fused, verify_artifact
    build_fused(["det=det.onnx", "cls.onnx"], Path("fused.onnx"), share_inputs="auto")
    assert verify_artifact(Path("fused.onnx")).ok
    cache = BundleCache(budget_bytes=512 * 2**20)

The flow runs down the subpackages (docs/architecture.md, "Layers"). Names here are imported
on first use, so a process that only runs artifacts (a bench worker, a loader, `serve`) does
not pay for the compiler's imports (onnx, onnx-ir).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "build_fused": "fusedinf_cc.compiler.build",
    "verify_artifact": "fusedinf_cc.measure.verify",
    "BundleCache": "fusedinf_cc.runtime.loader",
    "EngineCache": "fusedinf_cc.runtime.loader",  # the former name of BundleCache
    "PIPELINE": "fusedinf_cc.compiler.pipeline",
    "FusedModel": "fusedinf_cc.compiler.pipeline",
    "fuse": "fusedinf_cc.compiler.pipeline",
    "write_fused": "fusedinf_cc.compiler.pipeline",
    "load_sources": "fusedinf_cc.onnx_io.model_io",
    "FusionOptions": "fusedinf_cc.passes.base",
    "ShareSpec": "fusedinf_cc.passes.base",
    "FusedInfError": "fusedinf_cc.common.errors",
    "UserInputError": "fusedinf_cc.common.errors",
}

__all__ = [*_EXPORTS, "__version__"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'fusedinf_cc' has no attribute {name!r}")
