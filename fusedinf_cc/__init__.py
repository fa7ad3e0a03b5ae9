"""fusedinf-cc: fuse several ONNX models into one graph, build it, verify it, swap it in and out.

The library is what the CLI calls; a Python user can call the same functions:

    from fusedinf_cc import FusionOptions, fuse, load_sources, write_fused
    sources = load_sources([("det", Path("det.onnx")), ("cls", Path("cls.onnx"))])
    write_fused(fuse(sources, FusionOptions(share_inputs="auto")), Path("fused.onnx"))
"""

from fusedinf_cc.errors import FusedInfError
from fusedinf_cc.fuse import PIPELINE, FusedModel, fuse, write_fused
from fusedinf_cc.model_io import load_sources
from fusedinf_cc.passes.base import FusionOptions, ShareSpec

__version__ = "0.1.0"

__all__ = [
    "PIPELINE",
    "FusedInfError",
    "FusedModel",
    "FusionOptions",
    "ShareSpec",
    "__version__",
    "fuse",
    "load_sources",
    "write_fused",
]
