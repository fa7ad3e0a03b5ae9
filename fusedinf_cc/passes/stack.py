"""stack: models of one architecture that read the same input become one wider model.

Fine-tuned copies of one backbone on one camera stream are the common case on an edge box. Merged
side by side, K such models still build K nodes per layer; stacked, each layer is one node whose
channels hold every model's in turn: a convolution takes the models' filters concatenated and K
times the groups, an element-wise op or a pool runs once over all channels. Where a layer cannot
run stacked (a classifier's Gemm, a reshape), one Split gives each model back its own tensor and
the rest of the graph runs as merged. Session creation costs per node, so eight stacked
MobileNetV3s load in a third of the time of eight merged ones (see docs/benchmarks.md).

Models stack when their nodes match one for one: same operators, attributes, constant shapes and
wiring, and every value they read from outside their own nodes is the very same value (a shared
input, or a stem that `cse` made common). Only the weights may differ.
"""

from __future__ import annotations

import contextlib
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence

import numpy as np
import onnx_ir as ir
from onnx_ir.passes.common import RemoveUnusedNodesPass, ShapeInferencePass

from fusedinf_cc.passes.base import FusionState, PassContext, PassOutcome
from fusedinf_cc.passes.quiet import quiet_onnx_ir
from fusedinf_cc.passes.stack_layout import (
    Layout,
    const_array,
    equal_constants,
    int_attr,
    only_first_output_used,
    same_value,
)
from fusedinf_cc.passes.stack_model_axis import (
    MODEL_AXIS_OPS,
    REDUCTIONS,
    ModelAxisLayers,
    reduction_axes,
)

_CHANNEL_AXIS = 1
# Ops that act on each channel alone, with no inputs beyond the activation.
_CHANNELWISE = frozenset(
    {
        "Relu",
        "LeakyRelu",
        "Elu",
        "Selu",
        "Sigmoid",
        "HardSigmoid",
        "HardSwish",
        "Tanh",
        "Softplus",
        "Softsign",
        "Identity",
        "MaxPool",
        "AveragePool",
        "GlobalAveragePool",
        "GlobalMaxPool",
    }
)
_FOLLOWS = "after an unstacked layer"
_BINARY = frozenset({"Add", "Sub", "Mul", "Div"})
_STACKABLE = _CHANNELWISE | _BINARY | MODEL_AXIS_OPS | {"Conv", "BatchNormalization", "Clip"}


class Stack:
    name = "stack"

    def run(self, state: FusionState, ctx: PassContext) -> PassOutcome:
        model = state.require_fused()
        if not _matching_groups(_nodes_by_model(model.graph, list(ctx.inputs))):
            return PassOutcome(changed=False, detail="no models of one architecture on one input")
        _infer_shapes(model)  # folds shape arithmetic: the groups are found again after it
        nodes_by_model = _nodes_by_model(model.graph, list(ctx.inputs))
        groups = _matching_groups(nodes_by_model)
        built = [
            _StackedGroup(model, [nodes_by_model[m] for m in group], group) for group in groups
        ]
        counts = [group.build() for group in built]
        model.graph.sort()
        detail = "; ".join(
            group.describe(count) for group, count in zip(built, counts, strict=True)
        )
        return PassOutcome(changed=any(counts), detail=detail)


def _infer_shapes(model: ir.Model) -> None:
    """Each value's shape, where onnx can infer it, and the shape arithmetic that follows from
    static shapes folded into constants (onnxscript's folder; integer tensors only, so no
    float the models compute changes): a Reshape whose target an exporter computes from
    Shape then reads a constant, as a stacked layer must. The shapes are the ranks a layer on
    the model axis needs, and the dims that move a value between the two axes. Where
    inference fails, those layers stay per model; its log is not the user's."""
    from onnxscript.optimizer import fold_constants

    with quiet_onnx_ir():
        ShapeInferencePass()(model)
        # A failure of the folder's (it raises what its evaluators raise) only leaves those
        # Reshapes per model; each fold it made before replaced a value by its equal.
        with contextlib.suppress(Exception):
            fold_constants(model, should_fold=_folds_shape_arithmetic)
        RemoveUnusedNodesPass()(model)  # what the folding left unread
        ShapeInferencePass()(model)


def _folds_shape_arithmetic(node: ir.Node) -> bool | None:
    """Integer results under the folder's own limits (None: its default rules, which leave
    large inputs alone); never a float."""
    return None if all(out.dtype in _INTEGERS for out in node.outputs) else False


_INTEGERS = frozenset({ir.DataType.INT64, ir.DataType.INT32})


def _nodes_by_model(graph: ir.Graph, models: Sequence[str]) -> dict[str, list[ir.Node]]:
    """Each model's own nodes in graph order, known by the `model/` prefix of their outputs.

    A node that another model's nodes read (a backbone `cse` made common) belongs to no model
    here, and neither do the nodes it reads: to the models above it, it is a shared value, like
    a shared input, so two heads of one architecture on one backbone can stack.
    """
    by_prefix = sorted(models, key=len, reverse=True)
    owners: dict[ir.Node, str] = {}
    for node in graph:
        name = next((out.name for out in node.outputs if out.name), "") or ""
        owner = next((m for m in by_prefix if name.startswith(f"{m}/")), None)
        if owner is not None:
            owners[node] = owner
    shared: set[ir.Node] = set()
    for node, owner in owners.items():
        for value in node.inputs:
            producer = value.producer() if value is not None else None
            if producer in owners and owners[producer] != owner:
                shared |= _ancestors(producer, owners)
    nodes: dict[str, list[ir.Node]] = defaultdict(list)
    for node, owner in owners.items():
        if node not in shared:
            nodes[owner].append(node)
    return nodes


def _ancestors(node: ir.Node, within: Mapping[ir.Node, str]) -> set[ir.Node]:
    """`node` and every node of `within` it reads from, directly or not."""
    found, stack = {node}, [node]
    while stack:
        for value in stack.pop().inputs:
            producer = value.producer() if value is not None else None
            if producer in within and producer not in found:
                found.add(producer)
                stack.append(producer)
    return found


def _matching_groups(nodes_by_model: dict[str, list[ir.Node]]) -> list[list[str]]:
    """Models whose node lists match one for one, two or more to a group."""
    groups: dict[tuple, list[str]] = defaultdict(list)
    for name, nodes in nodes_by_model.items():
        groups[_signature(nodes)].append(name)
    return [names for names in groups.values() if len(names) > 1]


def _signature(nodes: Sequence[ir.Node]) -> tuple:
    """What must be equal for two models to stack: everything but the weights' values."""
    position = {node: index for index, node in enumerate(nodes)}
    signature = []
    for node in nodes:
        inputs = []
        for value in node.inputs:
            producer = value.producer() if value is not None else None
            if value is None:
                inputs.append(("none",))
            elif producer in position:
                inputs.append(("node", position[producer], value.index()))
            elif value.const_value is not None:
                inputs.append(("const", value.const_value.dtype, tuple(value.const_value.shape)))
            else:
                inputs.append(("shared", value.name))
        attributes = tuple(
            sorted((name, _attribute_key(attr)) for name, attr in node.attributes.items())
        )
        signature.append((node.domain, node.op_type, tuple(inputs), attributes, len(node.outputs)))
    return tuple(signature)


def _attribute_key(attr: ir.Attr) -> object:
    if attr.type == ir.AttributeType.TENSOR:
        return ("tensor", attr.value.dtype, tuple(attr.value.shape), attr.value.tobytes())
    if attr.type in (ir.AttributeType.GRAPH, ir.AttributeType.GRAPHS):
        return ("graph", id(attr))  # never equal: subgraphs do not stack
    value = attr.value
    return tuple(value) if isinstance(value, list | tuple) else value


class _StackedGroup:
    """Builds the stacked layers of one group of matching models."""

    def __init__(self, model: ir.Model, nodes: list[list[ir.Node]], names: list[str]):
        self.graph = model.graph
        self.opset = model.opset_imports.get("", 1)
        self.nodes = nodes
        self.width = len(nodes)
        self.label = "+".join(names)
        self.prefix = f"{names[0]}/"
        self.position = {node: index for index, node in enumerate(nodes[0])}
        self.stacked: dict[tuple[int, int], Layout] = {}
        self.new_nodes: list[ir.Node] = []
        self.new_initializers: list[ir.Value] = []
        self.unstacked: Counter[str] = Counter()  # why layers were not stacked, by reason
        self.model_axis = ModelAxisLayers(self)
        self._helpers = 0
        self._names: set[str] = set()  # of the initializers made
        self._added: set[ir.Node] = set()

    def build(self) -> int:
        """Stack every layer that can be, from the first; returns how many were."""
        layers = []
        for index, column in enumerate(zip(*self.nodes, strict=True)):
            if self._stack_layer(index, list(column)):
                layers.append(index)
            else:
                self.unstacked[self._why_not(list(column))] += 1
        if len(layers) < 2:  # one layer and its Split save nothing
            if layers:
                self.unstacked["a lone stackable layer (its Split would cost what it saves)"] += 1
            for node in self.new_nodes:
                node.resize_inputs(0)  # a node built but not kept must not count as a reader
            return 0
        self._unstack_where_read(layers)
        for value in self.new_initializers:
            self.graph.register_initializer(value)
        for node in self.new_nodes:
            self.graph.append(node)
        for index in layers:
            replaced = [column[index] for column in self.nodes]
            self.graph.remove(replaced, safe=False)
            for node in replaced:
                node.resize_inputs(0)  # its weights, read by nothing now, are dropped by cleanup
        return len(layers)

    def describe(self, stacked: int) -> str:
        """How many of the models' layers were stacked, and why the others were not: the
        reasons that stopped a stack first (a layer after an unstacked one only follows), the
        most common first."""
        total = len(self.nodes[0])
        reasons = sorted(self.unstacked.most_common(), key=lambda pair: pair[0].endswith(_FOLLOWS))
        why = ", ".join(f"{reason} x{count}" for reason, count in reasons[:4])
        rest = f"; not stacked: {why}" if why else ""
        return f"{self.label}: {stacked} of {total} layers stacked{rest}"

    def _why_not(self, column: list[ir.Node]) -> str:
        """Why a layer was not stacked, in a few words a user can act on."""
        first = column[0]
        op = first.op_type if first.domain in ("", "ai.onnx") else f"{first.domain}.{first.op_type}"
        if op not in _STACKABLE:
            return f"{op} (no stacked form)"
        read = [self.layout_read(column, slot) for slot in range(len(first.inputs))]
        if op == "Conv" and int_attr(first, "group", 1) > 1 and read[0] is None:
            return "grouped Conv on an unstacked input"
        if all(layout is None for layout in read):
            return f"{op} {_FOLLOWS}"
        if any(out.shape is None for out in first.outputs) and op in MODEL_AXIS_OPS:
            return f"{op} (shape not inferred)"
        if op not in MODEL_AXIS_OPS and any(lay is not None and lay.model_axis for lay in read):
            return f"{op} after channels-last layers (moving back costs more than it saves)"
        if op in MODEL_AXIS_OPS and any(
            lay is not None and not lay.model_axis and not self.model_axis.movable(lay)
            for lay in read
        ):
            return f"{op} on feature maps too large to move channels last"
        return f"{op} (weights or attributes of another form)"

    # -- one layer ----------------------------------------------------------------------------

    def _stack_layer(self, index: int, column: list[ir.Node]) -> bool:
        """Stack one layer: on the channel axis where its inputs are stacked there (or it reads
        the shared input), else on the model axis; a layer reading values on the model axis
        stacks there or not at all."""
        reads = [self.layout_read(column, slot) for slot in range(len(column[0].inputs))]
        if any(layout is not None and layout.model_axis for layout in reads):
            built = self.model_axis.build(column)  # never moved back to channels
        else:
            built = self._on_channels(column) or self.model_axis.build(column)
        if built is None:
            return False
        node, layouts = built
        self.add(node)
        for output, layout in enumerate(layouts):
            self.stacked[(index, output)] = layout
        return True

    def _on_channels(self, column: list[ir.Node]) -> tuple[ir.Node, list[Layout]] | None:
        first = column[0]
        if len(first.outputs) != 1 and not only_first_output_used(column):
            return None
        op = first.op_type if first.domain in ("", "ai.onnx") else ""
        if op == "Conv":
            built = self._conv(column)
        elif op == "BatchNormalization":
            built = self._batch_norm(column)
        elif op in _CHANNELWISE:
            built = self._channelwise(column)
        elif op == "Clip":
            built = self._clip(column)
        elif op in REDUCTIONS:
            built = self._spatial_reduction(column)
        elif op in _BINARY:
            built = self._binary(column)
        else:
            return None
        if built is None:
            return None
        node, channels, rank = built
        return node, [Layout(node.outputs[0], channels, rank, shape=first.outputs[0].shape)]

    def layout_read(self, column: list[ir.Node], slot: int) -> Layout | None:
        """The stacked value this layer's input `slot` reads, if its producer was stacked."""
        value = column[0].inputs[slot]
        index = self.position.get(value.producer()) if value is not None else None
        return None if index is None else self.stacked.get((index, value.index()))

    def _input_layout(self, column: list[ir.Node], slot: int) -> Layout | None:
        """The value on the channel axis this layer's input `slot` reads, if its producer was
        stacked there. A value on the model axis is not moved back: the transposes cost more
        than stacking saves (decision `stack-model-axis`)."""
        layout = self.layout_read(column, slot)
        return None if layout is None or layout.model_axis else layout

    def _conv(self, column: list[ir.Node]) -> tuple[ir.Node, int, int] | None:
        first = column[0]
        weights = [const_array(node.inputs[1]) for node in column]
        biases = [const_array(node.inputs[2]) if len(node.inputs) > 2 else None for node in column]
        has_bias = [b is not None for b in biases]
        if any(w is None for w in weights) or len(set(has_bias)) != 1:
            return None
        group = int_attr(first, "group", 1)
        layout = self._input_layout(column, 0)
        if layout is not None:
            new_group = group * self.width
            source = layout.value
        elif same_value(column, 0) and group == 1:
            new_group, source = 1, first.inputs[0]  # one input all models read: no groups
        else:
            return None
        inputs = [source, self.initializer(first, 1, np.concatenate(weights, axis=0))]
        if has_bias[0]:
            inputs.append(self.initializer(first, 2, np.concatenate(biases, axis=0)))
        attributes = {**first.attributes, "group": ir.AttrInt64("group", new_group)}
        node = self.node(first, inputs, attributes)
        return node, int(weights[0].shape[0]), weights[0].ndim

    def _batch_norm(self, column: list[ir.Node]) -> tuple[ir.Node, int, int] | None:
        layout = self._input_layout(column, 0)
        if layout is None:
            return None
        first = column[0]
        params = [[const_array(node.inputs[slot]) for node in column] for slot in range(1, 5)]
        if len(first.inputs) != 5 or any(p is None for slot in params for p in slot):
            return None
        inputs = [layout.value] + [
            self.initializer(first, slot, np.concatenate(values, axis=0))
            for slot, values in enumerate(params, start=1)
        ]
        return self.node(first, inputs), layout.channels, layout.rank

    def _channelwise(self, column: list[ir.Node]) -> tuple[ir.Node, int, int] | None:
        layout = self._input_layout(column, 0)
        if layout is None or len(column[0].inputs) != 1:
            return None
        return self.node(column[0], [layout.value]), layout.channels, layout.rank

    def _spatial_reduction(self, column: list[ir.Node]) -> tuple[ir.Node, int, int] | None:
        """A reduction over axes past the channels (a squeeze-and-excite's mean over H and W,
        as torch's dynamo exporter and timm write it): once over every model's channels."""
        layout = self._input_layout(column, 0)
        first = column[0]
        if layout is None:
            return None
        axes = reduction_axes(first, self.opset)
        if axes is None or not all(equal_constants(column, s) for s in range(1, len(first.inputs))):
            return None
        kept = int_attr(first, "keepdims", 1)
        normalised = {axis % layout.rank for axis in axes}
        if _CHANNEL_AXIS in normalised or (not kept and 0 in normalised):
            return None
        rank = layout.rank if kept else layout.rank - len(normalised)
        return self.node(first, [layout.value, *first.inputs[1:]]), layout.channels, rank

    def _clip(self, column: list[ir.Node]) -> tuple[ir.Node, int, int] | None:
        layout = self._input_layout(column, 0)
        if layout is None:
            return None
        for slot in range(1, len(column[0].inputs)):
            if not equal_constants(column, slot):
                return None
        inputs = [layout.value, *column[0].inputs[1:]]
        return self.node(column[0], inputs), layout.channels, layout.rank

    def _binary(self, column: list[ir.Node]) -> tuple[ir.Node, int, int] | None:
        first = column[0]
        layouts = [self._input_layout(column, slot) for slot in range(2)]
        known = [layout for layout in layouts if layout is not None]
        if not known or len({(lay.channels, lay.rank) for lay in known}) != 1:
            return None
        channels, rank = known[0].channels, known[0].rank
        # Decide every input before building anything, so that a layer that cannot stack
        # leaves no concatenated constant behind.
        plan: list[ir.Value | np.ndarray] = []  # an array: the models' constants, concatenated
        for slot, layout in enumerate(layouts):
            if layout is not None:
                plan.append(layout.value)
                continue
            constants = [const_array(node.inputs[slot]) for node in column]
            if any(c is None for c in constants) or constants[0].ndim > rank:
                return None
            axis = constants[0].ndim - (rank - _CHANNEL_AXIS)
            if axis >= 0 and constants[0].shape[axis] == channels:
                plan.append(np.concatenate(constants, axis))
            elif (axis < 0 or constants[0].shape[axis] == 1) and equal_constants(column, slot):
                plan.append(first.inputs[slot])  # one value for every channel of every model
            else:
                return None
        inputs = [
            self.initializer(first, slot, x) if isinstance(x, np.ndarray) else x
            for slot, x in enumerate(plan)
        ]
        return self.node(first, inputs), channels, rank

    # -- values and nodes ---------------------------------------------------------------------

    def _name(self, original: str) -> str:
        own = original[len(self.prefix) :] if original.startswith(self.prefix) else original
        return f"{self.label}/{own}"

    def node(
        self,
        first: ir.Node,
        inputs: Sequence[ir.Value | None],
        attributes: dict | None = None,
        outputs: int = 1,
    ) -> ir.Node:
        """The stacked layer's node, in place of `first` and its twins, with their first
        `outputs` outputs."""
        node = ir.Node(
            first.domain,
            first.op_type,
            inputs,
            attributes=list((attributes or first.attributes).values()),
            num_outputs=outputs,
            name=self._name(first.name or first.outputs[0].name),
        )
        for out, original in zip(node.outputs, first.outputs, strict=False):
            out.name = self._name(original.name)
            if original.dtype is not None:
                out.dtype = original.dtype
        return node

    def initializer(self, first: ir.Node, slot: int, array: np.ndarray) -> ir.Value:
        """The models' constants for `first`'s input `slot`, stacked into `array`."""
        return self.constant(first.inputs[slot].name, array)

    def constant(self, name: str, array: np.ndarray) -> ir.Value:
        """A new initializer, named after `name` (numbered where that name is taken: two
        layers may read one constant, each stacking it its own way)."""
        full = self._name(name)
        while full in self.graph.initializers or full in self._names:
            self._helpers += 1
            full = self._name(f"{name}_{self._helpers}")
        self._names.add(full)
        value = ir.Value(name=full, const_value=ir.tensor(array))
        value.shape = ir.Shape(array.shape)
        self.new_initializers.append(value)
        return value

    def add(self, node: ir.Node) -> None:
        """Keep a node built for the stack (once, however often it is handed in)."""
        if node not in self._added:
            self._added.add(node)
            self.new_nodes.append(node)

    def helper(self, op: str, inputs: Sequence[ir.Value], attributes: dict) -> ir.Value:
        """A node that moves a stacked value between the axes; its output."""
        self._helpers += 1
        name = self._name(f"{op}_moved_{self._helpers}")
        node = ir.Node("", op, inputs, attributes=list(attributes.values()), name=name)
        node.outputs[0].name = f"{name}_output"
        self.add(node)
        return node.outputs[0]

    def _unstacked(self, layout: Layout, name: str) -> list[ir.Value]:
        """One value per model from a stacked one: a Split on the channel axis, one Gather a
        model on the model axis."""
        if layout.model_axis:
            pieces = []
            for k in range(self.width):
                index = self.constant(f"{name}/model", np.array(k, dtype=np.int64))
                node = ir.Node(
                    "",
                    "Gather",
                    [layout.value, index],
                    attributes=[ir.AttrInt64("axis", 0)],
                    name=self._name(f"{name}/unstack{k}"),
                )
                node.outputs[0].name = self._name(f"{name}/unstack{k}")
                self.add(node)
                pieces.append(node.outputs[0])
            return pieces
        sizes = np.array([layout.channels] * self.width, dtype=np.int64)
        attributes = [ir.AttrInt64("axis", _CHANNEL_AXIS)]
        inputs: list[ir.Value | None] = [layout.value]
        if self.opset >= 13:
            split = self.constant(f"{name}/split_sizes", sizes)
            split.dtype = ir.DataType.INT64
            inputs.append(split)
        else:
            attributes.append(ir.AttrInt64s("split", sizes.tolist()))
        node = ir.Node(
            "",
            "Split",
            inputs,
            attributes=attributes,
            num_outputs=self.width,
            name=self._name(f"{name}/unstack"),
        )
        for k, out in enumerate(node.outputs):
            out.name = self._name(f"{name}/unstack{k}")
        self.add(node)
        return list(node.outputs)

    def _unstack_where_read(self, layers: list[int]) -> None:
        """Where a stacked output is read by a node that stays per model, or is a graph output,
        give each model back its own value."""
        stacked_nodes = {column[index] for column in self.nodes for index in layers}
        for (index, output), layout in self.stacked.items():
            originals = [column[index].outputs[output] for column in self.nodes]
            read_outside = any(
                value.is_graph_output()
                or any(use.node not in stacked_nodes for use in value.uses())
                for value in originals
            )
            if not read_outside:
                continue
            pieces = self._unstacked(layout, self.nodes[0][index].outputs[output].name)
            for original, piece in zip(originals, pieces, strict=True):
                piece.shape, piece.type = original.shape, original.type
                name = original.name
                original.replace_all_uses_with(piece, replace_graph_outputs=True)
                original.name = f"{name}/stacked"
                piece.name = name
