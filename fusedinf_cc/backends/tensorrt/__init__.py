"""TensorRT: build fused ONNX into engines and run them.

Everything that needs `tensorrt` or a GPU imports them when called, never at import time, so
options, profiles, compatibility checks and the operator check run anywhere.
"""

from fusedinf_cc.backends.tensorrt.backend import ENGINE_SUFFIXES, TensorRTBackend
from fusedinf_cc.backends.tensorrt.options import EngineOptions, parse_engine_options

__all__ = ["ENGINE_SUFFIXES", "EngineOptions", "TensorRTBackend", "parse_engine_options"]
