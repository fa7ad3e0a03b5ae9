"""prefix: every name of model `m` becomes `m/<name>`, so that models never collide once merged.

Covers graph inputs and outputs, initializers, every node output and node name, in the main graph
and in every subgraph (If/Loop/Scan bodies), symbolic dims (so `batch` in two unrelated models
never unifies by accident) and model-local functions. A subgraph reads an outer-scope value through
the very same `ir.Value` object, so renaming the value renames those references too.
"""

from __future__ import annotations

import onnx_ir as ir

from fusedinf_cc.passes.base import FusionState, PassContext, PassOutcome
from fusedinf_cc.passes.values import all_values


class Prefix:
    name = "prefix"

    def run(self, state: FusionState, ctx: PassContext) -> PassOutcome:
        renamed = 0
        for member in state.members:
            prefix = f"{member.name}/"
            renamed += prefix_model(member.model, prefix)
            for mapping in (ctx.inputs[member.name], ctx.outputs[member.name]):
                for original in mapping:
                    mapping[original] = prefix + original
        return PassOutcome(changed=renamed > 0, detail=f"renamed {renamed} names")


def prefix_model(model: ir.Model, prefix: str) -> int:
    """Prefix every name in the model in place; returns how many names changed."""
    renamed = 0
    for value in all_values(model):
        if value.name:
            value.name = prefix + value.name
            renamed += 1
        if value.shape is not None:
            value.shape = _prefixed_shape(value.shape, prefix)
    for graph in model.graphs():
        if graph.name:
            graph.name = prefix + graph.name
        for node in graph:
            if node.name:  # torch names nodes `/m/embeddings/Add`: one slash after the prefix
                node.name = prefix + node.name.lstrip("/")
                renamed += 1
    renamed += _prefix_functions(model, prefix)
    return renamed


def _prefixed_shape(shape: ir.Shape, prefix: str) -> ir.Shape:
    dims = [
        ir.SymbolicDim(prefix + dim.value) if isinstance(dim, ir.SymbolicDim) and dim.value else dim
        for dim in shape.dims
    ]
    return ir.Shape(dims)


def _prefix_functions(model: ir.Model, prefix: str) -> int:
    """Rename model-local functions and every call to them, in graphs and in function bodies."""
    if not model.functions:
        return 0
    local = set(model.functions)
    callers = [*ir.traversal.RecursiveGraphIterator(model.graph)]
    for function in model.functions.values():
        callers.extend(ir.traversal.RecursiveGraphIterator(function))
    for node in callers:
        if node.op_identifier() in local:
            node.op_type = prefix + node.op_type
    functions = list(model.functions.values())
    model.functions.clear()
    for function in functions:
        function.name = prefix + function.name
        model.functions[function.identifier()] = function
    return len(functions)
