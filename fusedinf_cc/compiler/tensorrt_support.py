"""`check --target tensorrt`: what TensorRT's ONNX parser will reject, found without a GPU.

The operator table is data (`fusedinf_cc/data/tensorrt_onnx_ops.json`), transcribed from the
ONNX-TensorRT support matrix of the TensorRT version it names. The attribute rules below are the
machine-checkable restrictions of that matrix. A clean report does not promise a build (a
tactic can still fail on a device), but every finding here would fail or degrade one.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import onnx_ir as ir
from onnx_ir.passes.common import ShapeInferencePass

from fusedinf_cc.onnx_io.model_io import load_model

Severity = Literal["error", "warning", "profile"]
SUPPORT_TABLE = "tensorrt_onnx_ops.json"

_TRT_TYPES = {
    ir.DataType.FLOAT: "FP32",
    ir.DataType.FLOAT16: "FP16",
    ir.DataType.BFLOAT16: "BF16",
    ir.DataType.INT32: "INT32",
    ir.DataType.INT64: "INT64",
    ir.DataType.INT8: "INT8",
    ir.DataType.UINT8: "UINT8",
    ir.DataType.BOOL: "BOOL",
    ir.DataType.INT4: "INT4",
    ir.DataType.FLOAT8E4M3FN: "FP8",
    ir.DataType.FLOAT4E2M1: "FP4",
}
_POOLS = {"AveragePool", "MaxPool", "LpPool"}
_RESIZE_ALLOWED = {
    "mode": {"nearest", "linear"},
    "coordinate_transformation_mode": {
        "half_pixel",
        "pytorch_half_pixel",
        "tf_half_pixel_for_nn",
        "asymmetric",
        "align_corners",
    },
    "nearest_mode": {"floor", "ceil", "round_prefer_floor", "round_prefer_ceil"},
    "keep_aspect_ratio_policy": {"stretch"},
}
# Inputs TensorRT needs at build time (an initializer or a Constant), by op and input index.
_BUILD_TIME_INPUTS = {
    "CumSum": (1, "axis"),
    "OneHot": (1, "depth"),
    "TopK": (1, "K"),
    "Dropout": (2, "training_mode"),
    **{
        reduce: (1, "axes")
        for reduce in (
            "ReduceL1",
            "ReduceL2",
            "ReduceLogSum",
            "ReduceLogSumExp",
            "ReduceMax",
            "ReduceMean",
            "ReduceMin",
            "ReduceProd",
            "ReduceSum",
            "ReduceSumSquare",
        )
    },
}


@dataclass(frozen=True)
class Finding:
    severity: Severity
    node: str  # node name, or the input's name for profile findings
    op: str
    message: str


@dataclass
class SupportReport:
    model: Path
    tensorrt: str
    opset_range: tuple[int, int]
    nodes: int = 0
    findings: list[Finding] = field(default_factory=list)

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error"]

    @property
    def ok(self) -> bool:
        return not self.errors


@dataclass(frozen=True)
class SupportTable:
    tensorrt: str
    opset_min: int
    opset_max: int
    operators: dict[str, list[str] | None]


@functools.cache
def support_table() -> SupportTable:
    data = json.loads(resources.files("fusedinf_cc").joinpath("data", SUPPORT_TABLE).read_text())
    return SupportTable(
        tensorrt=data["tensorrt"],
        opset_min=data["opset_min"],
        opset_max=data["opset_max"],
        operators=data["operators"],
    )


def check_tensorrt_support(model_path: Path) -> SupportReport:
    """Walk every node (subgraphs and model-local functions included) against the table."""
    table = support_table()
    model = load_model(model_path)
    ShapeInferencePass()(model)  # element types for every tensor the nodes read
    report = SupportReport(
        model=model_path, tensorrt=table.tensorrt, opset_range=(table.opset_min, table.opset_max)
    )
    report.findings.extend(_opset_findings(model, table))
    report.findings.extend(_profile_findings(model))
    functions = {(f.domain, f.name): f for f in model.functions.values()}
    for node in _all_nodes(model.graph, functions):
        report.nodes += 1
        report.findings.extend(_node_findings(node, table))
    return report


def _all_nodes(
    graph: ir.Graph | ir.Function, functions: dict[tuple[str, str], ir.Function]
) -> Iterator[ir.Node]:
    """Nodes of the graph, its subgraphs and the local functions they call (which TensorRT
    inlines), each function once."""
    seen: set[tuple[str, str]] = set()
    pending: list[ir.Graph | ir.Function] = [graph]
    while pending:
        current = pending.pop()
        for node in ir.traversal.RecursiveGraphIterator(current):
            key = (node.domain, node.op_type)
            if key in functions:
                if key not in seen:
                    seen.add(key)
                    pending.append(functions[key])
                continue
            yield node


def _opset_findings(model: ir.Model, table: SupportTable) -> Iterator[Finding]:
    opset = model.graph.opset_imports.get("", model.graph.opset_imports.get("ai.onnx"))
    if opset is None:
        return
    if opset < table.opset_min:
        yield Finding(
            "error",
            "",
            "",
            f"opset {opset} is older than TensorRT {table.tensorrt} reads (from "
            f"{table.opset_min}); `fuse` converts models to a newer opset",
        )
    elif opset > table.opset_max:
        yield Finding(
            "warning",
            "",
            "",
            f"opset {opset} is newer than TensorRT {table.tensorrt} documents (up to "
            f"{table.opset_max}); operators changed since may be rejected",
        )


def _profile_findings(model: ir.Model) -> Iterator[Finding]:
    for value in model.graph.inputs:
        if value.name in model.graph.initializers or value.shape is None:
            continue
        dims = value.shape.dims
        if any(not isinstance(dim, int) for dim in dims):
            shape = "x".join(str(d) if isinstance(d, int) else (d.value or "?") for d in dims)
            example = "x".join(str(d) if isinstance(d, int) else "1" for d in dims)
            yield Finding(
                "profile",
                value.name or "",
                "",
                f"dynamic dims ({shape}) need an optimisation profile: --shapes "
                f"{value.name}:{example} or --min/--opt/--max-shapes",
            )


def _node_findings(node: ir.Node, table: SupportTable) -> Iterator[Finding]:
    name = node.name or f"<{node.op_type}>"

    def finding(severity: Severity, message: str) -> Finding:
        return Finding(severity, name, node.op_type, message)

    if node.domain not in ("", "ai.onnx"):
        yield finding(
            "error", f"custom domain {node.domain!r}: TensorRT needs a plugin registered for it"
        )
        return
    if node.op_type not in table.operators or table.operators[node.op_type] is None:
        yield finding("error", f"TensorRT {table.tensorrt}'s ONNX parser has no {node.op_type}")
        return
    types = table.operators[node.op_type] or []
    for value in node.inputs:
        if value is not None and value.dtype == ir.DataType.DOUBLE:
            yield finding(
                "warning", f"{value.name} is double: TensorRT casts it to float (may clamp)"
            )
    data = node.inputs[0] if node.inputs else None
    trt_type = _TRT_TYPES.get(data.dtype) if data is not None and data.dtype else None
    if trt_type and types and trt_type not in types:
        yield finding(
            "error",
            f"input {data.name} is {trt_type}; TensorRT's {node.op_type} takes {', '.join(types)}",
        )
    rule = _RULES.get(node.op_type)
    if rule is not None:
        for message in rule(node):
            yield finding("error", message)
    if node.op_type in _BUILD_TIME_INPUTS:
        index, what = _BUILD_TIME_INPUTS[node.op_type]
        value = node.inputs[index] if len(node.inputs) > index else None
        if value is not None and not _is_constant(value):
            yield finding("error", f"`{what}` must be a constant (initializer) for TensorRT")


def _is_constant(value: ir.Value) -> bool:
    producer = value.producer()
    return value.const_value is not None or (
        producer is not None and producer.op_type == "Constant"
    )


def _attr(node: ir.Node, name: str, default: Any = None) -> Any:
    attribute = node.attributes.get(name)
    if attribute is None:
        return default
    value = attribute.value
    return value.decode() if isinstance(value, bytes) else value


def _used(value: ir.Value | None) -> bool:
    return value is not None and (bool(value.uses()) or value.is_graph_output())


def _pool_rules(node: ir.Node) -> Iterator[str]:
    dilations = _attr(node, "dilations")
    if dilations and any(d != 1 for d in dilations):
        yield f"dilations {list(dilations)}: TensorRT pools without dilation only"
    kernel = _attr(node, "kernel_shape")
    if kernel is not None and len(kernel) not in (2, 3):
        yield f"{len(kernel)}D pooling: TensorRT pools in 2D or 3D only"
    if node.op_type == "MaxPool" and len(node.outputs) > 1 and _used(node.outputs[1]):
        yield "the Indices output is not supported"


def _resize_rules(node: ir.Node) -> Iterator[str]:
    for attribute, allowed in _RESIZE_ALLOWED.items():
        value = _attr(node, attribute)
        if value is not None and value not in allowed:
            yield f"{attribute}={value!r} is not supported (use {', '.join(sorted(allowed))})"
    if _attr(node, "antialias", 0):
        yield "antialias=1 is not supported"


def _topk_rules(node: ir.Node) -> Iterator[str]:
    if _attr(node, "sorted", 1) != 1:
        yield "sorted=0 is not supported"


def _rnn_rules(node: ir.Node) -> Iterator[str]:
    if _attr(node, "input_forget", 0) != 0:
        yield "input_forget=1 is not supported"
    if _attr(node, "layout", 0) != 0:
        yield "layout=1 is not supported"


def _layer_norm_rules(node: ir.Node) -> Iterator[str]:
    if any(_used(output) for output in node.outputs[1:]):
        yield "only the first output (Y) is supported"


def _scatter_nd_rules(node: ir.Node) -> Iterator[str]:
    reduction = _attr(node, "reduction", "none")
    if reduction != "none":
        yield f"reduction={reduction!r} is not supported"


def _constant_rules(node: ir.Node) -> Iterator[str]:
    for attribute in ("sparse_value", "value_string", "value_strings"):
        if attribute in node.attributes:
            yield f"a Constant's {attribute} is not supported"


def _grid_sample_rules(node: ir.Node) -> Iterator[str]:
    shape = node.inputs[0].shape if node.inputs and node.inputs[0] is not None else None
    if shape is not None and len(shape) != 4:
        yield f"input rank {len(shape)}: TensorRT's GridSample takes 4D input only"


_RULES: dict[str, Callable[[ir.Node], Iterator[str]]] = {
    **dict.fromkeys(_POOLS, _pool_rules),
    "Resize": _resize_rules,
    "TopK": _topk_rules,
    "LSTM": _rnn_rules,
    "LayerNormalization": _layer_norm_rules,
    "ScatterND": _scatter_nd_rules,
    "Constant": _constant_rules,
    "GridSample": _grid_sample_rules,
}
