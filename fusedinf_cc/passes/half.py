"""An FP16 copy of a fused model, for a builder that takes precision from the graph's own types.

TensorRT 11 builds every network strongly typed, so `--fp16` can no longer be a builder flag:
the graph itself must carry FP16 weights and activations. ONNX Runtime's float16 converter does
the rewrite (it keeps operators that lose too much in FP16 in FP32, and clamps weights to FP16's
range); the graph's inputs and outputs keep their types, behind Casts, so callers feed and read
what the separate models take and give.
"""

from __future__ import annotations

import onnx_ir as ir

from fusedinf_cc.backends.onnxruntime import import_onnxruntime
from fusedinf_cc.common.errors import BackendUnavailableError
from fusedinf_cc.onnx_io.model_io import weight_bytes

# onnx's shape inference, which the converter runs first, takes protos under 2 GiB only.
SHAPE_INFERENCE_LIMIT = 2**31 - 2**26


def float16_copy(model: ir.Model) -> ir.Model:
    """`model` with FP16 weights and activations and its interface types unchanged."""
    import_onnxruntime()  # one line saying how to install it, if it is not
    try:
        from onnxruntime.transformers.float16 import convert_float_to_float16
    except ImportError:
        raise BackendUnavailableError(
            "--fp16 on TensorRT 11 converts the graph with ONNX Runtime's float16 converter, "
            "which this ONNX Runtime does not ship"
        ) from None
    proto = ir.serde.serialize_model(model)
    converted = convert_float_to_float16(
        proto, keep_io_types=True, disable_shape_infer=weight_bytes(model) > SHAPE_INFERENCE_LIMIT
    )
    half = ir.serde.deserialize_model(converted)
    half.graph.sort()  # the converter appends its output Casts after their readers
    return half


def has_quantize_nodes(model: ir.Model) -> bool:
    """Whether the graph carries Q/DQ nodes, the only source of INT8 scales on TensorRT 11."""
    return any(
        node.op_type in ("QuantizeLinear", "DequantizeLinear") and node.domain in ("", "ai.onnx")
        for node in ir.traversal.RecursiveGraphIterator(model.graph)
    )
