"""Classifier outputs the IR cannot hold: a `ZipMap`'s sequence of maps becomes its tensor.

skl2onnx ends every classifier with `ZipMap` (domain ai.onnx.ml), which turns the class
probabilities, a float tensor [N, classes], into a sequence of N maps from class label to
probability. onnx-ir has no map type, so such a model cannot enter the pipeline as it is. What
the map carries is the tensor it was made from, one column per class in `classlabels` order,
which is also what skl2onnx writes with `zipmap=False`: each ZipMap that makes a graph output
is replaced by an Identity of its input, under the output's name, and the change is said once
per model. `verify` compares the source's maps with that tensor column by column.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import onnx

from fusedinf_cc.common.errors import FusedInfWarning, UserInputError

ML_DOMAIN = "ai.onnx.ml"


def tensors_for_maps(proto: onnx.ModelProto, path: Path) -> None:
    """Replace, in place, each ZipMap whose output is a graph output by an Identity of its
    probabilities, typed as that tensor; refuse a map anywhere else in one line."""
    graph = proto.graph
    outputs = {value.name: value for value in graph.output}
    known = {value.name: value for value in [*graph.value_info, *graph.input, *graph.output]}
    replaced = []
    for index, node in enumerate(graph.node):
        if not _is_zipmap(node):
            continue
        (source,), (target,) = node.input, node.output
        if target not in outputs or any(target in other.input for other in graph.node):
            raise UserInputError(
                f"{path}: ZipMap {node.name or target!r} feeds other nodes; only a ZipMap that "
                "makes a graph output can be carried (export the classifier with zipmap=False)"
            )
        graph.node[index].CopyFrom(
            onnx.helper.make_node("Identity", [source], [target], name=node.name or target)
        )
        output = outputs[target]
        output.type.CopyFrom(_probabilities_type(known.get(source)))
        replaced.append(target)
    if any(_holds_map(value.type) for value in graph.output):
        raise UserInputError(
            f"{path}: an output is a map or a sequence of maps, which fusedinf-cc cannot carry"
        )
    if replaced:
        warnings.warn(
            f"{path.name}: ZipMap on {', '.join(replaced)} carried as its float tensor of "
            "class probabilities, one column per class label (as zipmap=False exports it)",
            FusedInfWarning,
            stacklevel=3,
        )


def holds_maps(proto: onnx.ModelProto) -> bool:
    """Whether the main graph has a ZipMap or a value typed as a map (or a sequence of them)."""
    graph = proto.graph
    values = [*graph.input, *graph.output, *graph.value_info]
    return any(_is_zipmap(node) for node in graph.node) or any(
        _holds_map(value.type) for value in values
    )


def _is_zipmap(node: onnx.NodeProto) -> bool:
    return node.op_type == "ZipMap" and node.domain == ML_DOMAIN


def _probabilities_type(value: onnx.ValueInfoProto | None) -> onnx.TypeProto:
    """The ZipMap input's declared type, or a float tensor [N, classes] of unknown dims."""
    if value is not None and value.type.HasField("tensor_type"):
        return value.type
    return onnx.helper.make_tensor_type_proto(onnx.TensorProto.FLOAT, [None, None])


def _holds_map(kind: onnx.TypeProto) -> bool:
    if kind.HasField("map_type"):
        return True
    if kind.HasField("sequence_type"):
        return _holds_map(kind.sequence_type.elem_type)
    return False
