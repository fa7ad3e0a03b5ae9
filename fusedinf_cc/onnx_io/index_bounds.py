"""Integer inputs that index a table: the bound the graph puts on them.

Random inputs test a model without the user's data (`verify`, `bench`, a footprint measured on
first load). Integers used to be drawn in [0, 8), which a token-type id (a table of 2 rows) or a
small vocabulary refuses with ONNX Runtime's raw Gather error. Where the graph says what it
admits, an input that (through shape-only ops) indexes the rows of an initializer with Gather,
random integers stay below that table's rows.
"""

from __future__ import annotations

import onnx_ir as ir

# Ops that pass an index through unchanged in value: follow their first input to its uses.
_PASS_THROUGH = {"Cast", "Reshape", "Unsqueeze", "Squeeze", "Flatten", "Identity", "Expand"}


def index_bounds(graph: ir.Graph) -> dict[str, int]:
    """For each integer input that indexes an initializer's rows, the fewest rows it indexes."""
    bounds = {}
    for value in graph.inputs:
        if value.name is None or value.dtype is None or not value.dtype.is_integer():
            continue
        rows = _rows_indexed(value)
        if rows is not None:
            bounds[value.name] = rows
    return bounds


def _rows_indexed(start: ir.Value) -> int | None:
    fewest = None
    seen: set[int] = set()
    pending = [start]
    while pending:
        value = pending.pop()
        if id(value) in seen:
            continue
        seen.add(id(value))
        for node, index in value.uses():
            if node.domain in ("", "ai.onnx") and node.op_type in _PASS_THROUGH and index == 0:
                pending.extend(output for output in node.outputs if output is not None)
            elif node.op_type == "Gather" and node.domain in ("", "ai.onnx") and index == 1:
                rows = _table_rows(node)
                if rows is not None:
                    fewest = rows if fewest is None else min(fewest, rows)
    return fewest


def _table_rows(gather: ir.Node) -> int | None:
    """The rows (along its axis) of the initializer a Gather reads, if it reads one."""
    table = gather.inputs[0]
    tensor = table.const_value if table is not None else None
    if tensor is None:
        return None
    axis_attr = gather.attributes.get("axis")
    axis = axis_attr.as_int() if axis_attr is not None else 0
    shape = tensor.shape
    if not -len(shape) <= axis < len(shape):
        return None
    rows = shape[axis]
    return rows if isinstance(rows, int) and rows > 0 else None
