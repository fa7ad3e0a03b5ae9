"""Layers stacked on a leading model axis: how channels-last models (transformers, the MLPs of
ConvNeXt blocks) stack.

A convolution stacks K models side by side on the channel axis (`stack.py`). A MatMul or a
LayerNormalization over the last axis cannot: the models' features would mix. Their values
stack on a new leading axis instead, [K, *one model's shape]: a MatMul multiplies by the
models' weights stacked [K, 1.., C, D] as one batched MatMul, a LayerNormalization takes its scale
and bias stacked [K, 1.., C], an element-wise op broadcasts the models' constants stacked the
same way, and every op that names an axis (Transpose, Reshape, Softmax, Split, Slice, Squeeze,
Unsqueeze, reductions, Gather, Concat) names it one further on. A small value stacked on
channels that such a layer reads is moved onto the model axis (one Reshape, one Transpose); a
value on the model axis is never moved back for a convolution, whose transposes cost more than
stacking saves (decision `stack-model-axis`). Each model's ranks come from shape inference: a
layer whose output has none stays per model.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
import onnx_ir as ir

from fusedinf_cc.passes.stack_layout import (
    Layout,
    const_array,
    equal_constants,
    int_attr,
    only_first_output_used,
    same_value,
)

# Ops that act on each element alone, reading only the activation.
UNARY = frozenset(
    {
        "Abs",
        "Cast",
        "Ceil",
        "Cos",
        "Elu",
        "Erf",
        "Exp",
        "Floor",
        "Gelu",
        "HardSigmoid",
        "HardSwish",
        "Identity",
        "LeakyRelu",
        "Log",
        "Neg",
        "Not",
        "Reciprocal",
        "Relu",
        "Round",
        "Selu",
        "Sigmoid",
        "Sign",
        "Sin",
        "Softplus",
        "Softsign",
        "Sqrt",
        "Tanh",
    }
)
BROADCASTING = frozenset({"Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Where"})
_SOFTMAX = frozenset({"Softmax", "LogSoftmax", "Hardmax"})
REDUCTIONS = frozenset(
    {"ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL2", "ReduceL1"}
)
# Opsets from which a reduction takes its axes as an input instead of an attribute.
_AXES_INPUT_FROM = {"ReduceSum": 13, "Squeeze": 13, "Unsqueeze": 13}
_AXES_INPUT_FROM_DEFAULT = 18
MODEL_AXIS_OPS = (
    UNARY
    | BROADCASTING
    | _SOFTMAX
    | REDUCTIONS
    | {
        "MatMul",
        "LayerNormalization",
        "Transpose",
        "Reshape",
        "Squeeze",
        "Unsqueeze",
        "Split",
        "Slice",
        "Gather",
        "Concat",
    }
)


def reduction_axes(node: ir.Node, opset: int) -> list[int] | None:
    """The axes a reduction (or Squeeze, Unsqueeze) names, from its attribute or, from the
    opset that moved them there, its second input; None where it names none (every axis) or
    computes them."""
    if opset >= _AXES_INPUT_FROM.get(node.op_type, _AXES_INPUT_FROM_DEFAULT):
        given = const_array(node.inputs[1]) if len(node.inputs) > 1 else None
        return None if given is None or given.size == 0 else [int(a) for a in given.ravel()]
    attr = node.attributes.get("axes")
    return None if attr is None else [int(a) for a in attr.value]


def _shift(axis: int) -> int:
    """An axis of one model's tensor, on the stacked tensor: one further on (a negative axis
    counts from the end, which the leading model axis does not move)."""
    return axis + 1 if axis >= 0 else axis


def _rank(value: ir.Value | None) -> int | None:
    return None if value is None or value.shape is None else len(value.shape)


class GroupBuilder(Protocol):
    """What a stacked group (`stack._StackedGroup`) lends the layers it builds here."""

    width: int  # K, the models stacked
    opset: int

    def layout_read(self, column: list[ir.Node], slot: int) -> Layout | None: ...

    def initializer(self, first: ir.Node, slot: int, array: np.ndarray) -> ir.Value: ...

    def constant(self, name: str, array: np.ndarray) -> ir.Value: ...

    def node(
        self,
        first: ir.Node,
        inputs: Sequence[ir.Value | None],
        attributes: dict | None = None,
        outputs: int = 1,
    ) -> ir.Node: ...

    def helper(self, op: str, inputs: Sequence[ir.Value], attributes: dict) -> ir.Value: ...


class ModelAxisLayers:
    """Builds a group's layers on the model axis, and moves values between the two axes."""

    def __init__(self, group: GroupBuilder):
        self.group = group
        self._moved: dict[ir.Value, ir.Value | None] = {}  # each value moved once, or not

    def build(self, column: list[ir.Node]) -> tuple[ir.Node, list[Layout]] | None:
        """Stack a layer on the model axis: its node and its outputs' layouts, or None."""
        first = column[0]
        if first.domain not in ("", "ai.onnx") or first.op_type not in MODEL_AXIS_OPS:
            return None
        ranks = [_rank(out) for out in first.outputs]
        if any(rank is None for rank in ranks):
            return None
        op = first.op_type
        if op in UNARY or op in _SOFTMAX:
            built = self._axis_unary(column)
        elif op in BROADCASTING:
            built = self._axis_broadcasting(column, ranks[0])
        elif op == "MatMul":
            built = self._axis_matmul(column)
        elif op == "LayerNormalization":
            built = self._axis_layer_norm(column)
        elif op == "Gather":
            built = self._axis_gather(column)
        elif op == "Concat":
            built = self._axis_concat(column, ranks[0])
        else:
            built = self._axis_reshaping(column)
        if built is None:
            return None
        return built, [
            Layout(out, 0, rank, model_axis=True, shape=original.shape)  # type: ignore[arg-type]
            for out, rank, original in zip(built.outputs, ranks, first.outputs, strict=False)
        ]

    # -- inputs -------------------------------------------------------------------------------

    def _stacked_input(self, column: list[ir.Node], slot: int) -> ir.Value | None:
        """Input `slot` on the model axis, where its producer was stacked (moved there from
        the channel axis if it was stacked on channels)."""
        layout = self.group.layout_read(column, slot)
        if layout is None:
            return None
        return layout.value if layout.model_axis else self._channels_to_model_axis(layout)

    def _per_model(self, column: list[ir.Node], slot: int, rank: int) -> ir.Value | None:
        """Input `slot` where it is not stacked, as a value to broadcast against tensors of
        `rank` per model stacked on the model axis: one value every model reads, as it is
        (a constant of the same values, or a shared input); the models' own constants,
        stacked [K, 1.., *shape]. None where it is neither, or of a higher rank."""
        first = column[0].inputs[slot]
        if first is None:
            return None
        if equal_constants(column, slot):  # one value, or constants of equal values
            given = _rank(first)
            if given is None:
                array = const_array(first)
                given = None if array is None else array.ndim
            return first if given is not None and given <= rank else None
        arrays = [const_array(node.inputs[slot]) for node in column]
        if any(a is None for a in arrays) or arrays[0].ndim > rank:
            return None
        padded = [a.reshape((1,) * (rank - a.ndim) + a.shape) for a in arrays]
        return self.group.initializer(column[0], slot, np.stack(padded))

    def _same_constant(self, column: list[ir.Node], slot: int) -> np.ndarray | None:
        """The one constant every model gives input `slot` (shapes, axes, split sizes)."""
        if not equal_constants(column, slot):
            return None
        return const_array(column[0].inputs[slot])

    # -- layers -------------------------------------------------------------------------------

    def _axis_unary(self, column: list[ir.Node]) -> ir.Node | None:
        first = column[0]
        value = self._stacked_input(column, 0)
        if value is None or len(first.inputs) != 1:
            return None
        attributes = dict(first.attributes)
        if first.op_type in _SOFTMAX:
            default = -1 if self.group.opset >= 13 else 1
            axis = _shift(int_attr(first, "axis", default))
            attributes["axis"] = ir.AttrInt64("axis", axis)
        return self.group.node(first, [value], attributes)

    def _axis_broadcasting(self, column: list[ir.Node], rank: int) -> ir.Node | None:
        first = column[0]
        stacked = [self._stacked_input(column, slot) for slot in range(len(first.inputs))]
        if all(value is None for value in stacked):
            return None
        inputs = []
        for slot, value in enumerate(stacked):
            inputs.append(value if value is not None else self._per_model(column, slot, rank))
            if inputs[-1] is None:
                return None
        return self.group.node(first, inputs)

    def _axis_matmul(self, column: list[ir.Node]) -> ir.Node | None:
        """A batched MatMul: activations on the model axis (or one input every model reads)
        times the models' weights stacked, or two stacked activations (attention)."""
        first = column[0]
        a, b = (self._stacked_input(column, slot) for slot in range(2))
        rank_a = _rank(first.inputs[0])
        if rank_a is None or rank_a < 2:
            return None
        if a is None:  # every model's activations are one shared value: its weights are not
            if b is not None or not same_value(column, 0):
                return None
            a = first.inputs[0]
        if b is not None:
            return self.group.node(first, [a, b])
        weights = [const_array(node.inputs[1]) for node in column]
        if any(w is None or w.ndim != 2 for w in weights):
            return None
        if equal_constants(column, 1) and a is not first.inputs[0]:
            return self.group.node(first, [a, first.inputs[1]])
        stacked = np.stack([w.reshape((1,) * (rank_a - 2) + w.shape) for w in weights])
        return self.group.node(first, [a, self.group.initializer(first, 1, stacked)])

    def _axis_layer_norm(self, column: list[ir.Node]) -> ir.Node | None:
        first = column[0]
        value = self._stacked_input(column, 0)
        rank = _rank(first.inputs[0])
        if value is None or rank is None or not only_first_output_used(column):
            return None
        inputs = [value]
        for slot in range(1, len(first.inputs)):
            inputs.append(self._per_model(column, slot, rank))
            if inputs[-1] is None:
                return None
        attributes = dict(first.attributes)
        attributes["axis"] = ir.AttrInt64("axis", _shift(int_attr(first, "axis", -1)))
        return self.group.node(first, inputs, attributes, outputs=1)

    def _axis_gather(self, column: list[ir.Node]) -> ir.Node | None:
        """Gather from stacked data, or from the models' own tables (an embedding) by indices
        every model reads."""
        first = column[0]
        data = self._stacked_input(column, 0)
        indices = first.inputs[1]
        if self.group.layout_read(column, 1) is not None or indices is None:
            return None
        if not equal_constants(column, 1):
            return None
        if data is None:
            tables = [const_array(node.inputs[0]) for node in column]
            if any(t is None for t in tables):
                return None
            data = self.group.initializer(first, 0, np.stack(tables))
        attributes = dict(first.attributes)
        attributes["axis"] = ir.AttrInt64("axis", _shift(int_attr(first, "axis", 0)))
        return self.group.node(first, [data, indices], attributes)

    def _axis_concat(self, column: list[ir.Node], rank: int) -> ir.Node | None:
        first = column[0]
        if all(self.group.layout_read(column, slot) is None for slot in range(len(first.inputs))):
            return None
        inputs: list[ir.Value | None] = []
        for slot in range(len(first.inputs)):
            value = self._stacked_input(column, slot)
            if value is None:
                arrays = [const_array(node.inputs[slot]) for node in column]
                if any(a is None or a.ndim != rank for a in arrays):
                    return None
                value = self.group.initializer(first, slot, np.stack(arrays))
            inputs.append(value)
        attributes = dict(first.attributes)
        attributes["axis"] = ir.AttrInt64("axis", _shift(int_attr(first, "axis", 0)))
        return self.group.node(first, inputs, attributes)

    def _axis_reshaping(self, column: list[ir.Node]) -> ir.Node | None:
        """Transpose, Reshape, Squeeze, Unsqueeze, Split and the reductions: the same op, the
        axes it names one further on."""
        first = column[0]
        op = first.op_type
        value = self._stacked_input(column, 0)
        if value is None:
            return None
        attributes = dict(first.attributes)
        inputs: list[ir.Value | None] = [value]
        if op == "Transpose":
            rank = _rank(first.inputs[0])
            if rank is None:
                return None
            perm = attributes.get("perm")
            order = list(perm.value) if perm is not None else list(range(rank))[::-1]
            attributes["perm"] = ir.AttrInt64s("perm", [0] + [p + 1 for p in order])
        elif op == "Reshape":
            shape = self._same_constant(column, 1)
            if shape is None or (int_attr(first, "allowzero", 0) and 0 in shape):
                return None
            # A 0 copies the input's dim at its index: the model axis first keeps them aligned.
            stacked = np.concatenate([[self.group.width], shape]).astype(np.int64)
            inputs.append(self.group.initializer(first, 1, stacked))
        elif op == "Slice":
            if self.group.opset < 10:
                starts = attributes.get("starts")
                if starts is None:
                    return None
                axes = attributes.get("axes")
                named = list(axes.value) if axes is not None else list(range(len(starts.value)))
                attributes["axes"] = ir.AttrInt64s("axes", [_shift(int(a)) for a in named])
            else:
                starts = self._same_constant(column, 1)
                given = self._same_constant(column, 3) if len(first.inputs) > 3 else None
                if starts is None or (len(first.inputs) > 3 and first.inputs[3] and given is None):
                    return None
                named = given.ravel() if given is not None else np.arange(starts.size)
                shifted = np.array([_shift(int(a)) for a in named], dtype=np.int64)
                starts_and_ends = self._same_inputs(column, start=1)[:2]
                steps = self._same_inputs(column, start=4)
                inputs += [*starts_and_ends, self.group.constant("axes", shifted), *steps]
        elif op == "Split":
            attributes["axis"] = ir.AttrInt64("axis", _shift(int_attr(first, "axis", 0)))
            inputs += self._same_inputs(column)
        else:  # Squeeze, Unsqueeze, reductions: their axes, which must not be every axis
            axes = reduction_axes(first, self.group.opset)
            if axes is None or not all(
                equal_constants(column, slot) for slot in range(1, len(first.inputs))
            ):
                return None
            shifted = [_shift(axis) for axis in axes]
            if "axes" in attributes:
                attributes["axes"] = ir.AttrInt64s("axes", shifted)
            else:
                as_input = np.array(shifted, dtype=np.int64)
                inputs += [self.group.constant("axes", as_input), *first.inputs[2:]]
        if any(value is None for value in inputs):
            return None
        return self.group.node(first, inputs, attributes, outputs=len(first.outputs))

    def _same_inputs(self, column: list[ir.Node], start: int = 1) -> list[ir.Value | None]:
        """Inputs from `start` on that every model gives the same (None where one differs)."""
        first = column[0]
        return [
            first.inputs[slot]
            if first.inputs[slot] is None or equal_constants(column, slot)
            else None
            for slot in range(start, len(first.inputs))
        ]

    # -- moving between the channel axis and the model axis ----------------------------------

    @staticmethod
    def movable(layout: Layout) -> bool:
        """A value on the channel axis small enough to move to the model axis."""
        return layout.shape is not None and _small(layout.shape)

    def _channels_to_model_axis(self, layout: Layout) -> ir.Value | None:
        """[B, K*C, *spatial] -> [K, B, C, *spatial]: a Reshape splitting the channels, a
        Transpose bringing the models first; made once per value. None where it is too large
        to be worth moving, or its dims are not all known."""
        if layout.value not in self._moved:
            moved = None
            if self.movable(layout):  # its dims all known
                dims = list(layout.shape)[2:]  # type: ignore[arg-type]
                shape = np.array([0, self.group.width, layout.channels, *dims], dtype=np.int64)
                split = self.group.helper(
                    "Reshape", [layout.value, self.group.constant("shape", shape)], {}
                )
                perm = [1, 0, *range(2, layout.rank + 1)]
                moved = self.group.helper(
                    "Transpose", [split], {"perm": ir.AttrInt64s("perm", perm)}
                )
            self._moved[layout.value] = moved
        return self._moved[layout.value]


def _small(shape: ir.Shape) -> bool:
    """A tensor worth moving between the axes: the Reshape and Transpose copy it, and a
    stacked layer saves K-1 kernel launches, not bytes. ViT's patches (96 x 14 x 14 a model)
    move once and stack 0.5-0.99x faster; ConvNeXt's feature maps (48 x 56 x 56), moved for
    each block, ran 1.14-1.82x slower than merged (decision `stack-model-axis`)."""
    dims = list(shape)
    return all(isinstance(d, int) for d in dims) and int(np.prod(dims)) <= _MOVABLE_ELEMENTS


_MOVABLE_ELEMENTS = 1 << 16
