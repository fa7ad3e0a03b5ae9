"""Walk the values of a model: what prefix and share rename."""

from __future__ import annotations

from collections.abc import Iterator

import onnx_ir as ir


def all_values(model: ir.Model) -> Iterator[ir.Value]:
    """Each value of the main graph and of every subgraph, once."""
    seen: set[int] = set()
    for graph in model.graphs():
        candidates: list[ir.Value | None] = [*graph.inputs, *graph.initializers.values()]
        for node in graph:
            candidates.extend(node.inputs)
            candidates.extend(node.outputs)
        candidates.extend(graph.outputs)
        for value in candidates:
            if value is not None and id(value) not in seen:
                seen.add(id(value))
                yield value


def rename_dims(model: ir.Model, mapping: dict[str, str | int]) -> None:
    """Replace symbolic dims by name everywhere: by another name, or by a fixed size."""
    if not mapping:
        return
    for value in all_values(model):
        shape = value.shape
        if shape is None:
            continue
        if not any(isinstance(dim, ir.SymbolicDim) and dim.value in mapping for dim in shape.dims):
            continue
        value.shape = ir.Shape([_renamed(dim, mapping) for dim in shape.dims])


def _renamed(dim: int | ir.SymbolicDim, mapping: dict[str, str | int]) -> int | ir.SymbolicDim:
    if not isinstance(dim, ir.SymbolicDim) or dim.value not in mapping:
        return dim
    target = mapping[dim.value]
    return target if isinstance(target, int) else ir.SymbolicDim(target)
