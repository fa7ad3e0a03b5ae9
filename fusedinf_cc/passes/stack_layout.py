"""How `stack` holds K models' tensors as one, and the constants it reads from a layer's nodes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_ir as ir


@dataclass(frozen=True)
class Layout:
    """A stacked value. On the channel axis (`model_axis` False): K models' tensors of
    `channels` each, side by side on axis 1. On the model axis: [K, *one model's shape].
    `rank`: one model's rank; `shape`: one model's shape, where known."""

    value: ir.Value
    channels: int
    rank: int
    model_axis: bool = False
    shape: ir.Shape | None = None


def const_array(value: ir.Value | None) -> np.ndarray | None:
    """The constant `value` holds (an initializer or a Constant node's), or None."""
    if value is None:
        return None
    tensor = ir.convenience.get_const_tensor(value)
    return None if tensor is None else tensor.numpy()


def same_value(column: list[ir.Node], slot: int) -> bool:
    """Every node of the layer reads the very same value at `slot`."""
    first = column[0].inputs[slot]
    return first is not None and all(node.inputs[slot] is first for node in column)


def equal_constants(column: list[ir.Node], slot: int) -> bool:
    """Every node of the layer reads the same value, or constants of equal values, at `slot`."""
    if same_value(column, slot):
        return True
    values = [const_array(node.inputs[slot]) for node in column]
    if any(v is None for v in values):
        return False
    return all(v.shape == values[0].shape and np.array_equal(values[0], v) for v in values[1:])


def int_attr(node: ir.Node, name: str, default: int) -> int:
    attr = node.attributes.get(name)
    return default if attr is None else int(attr.value)


def only_first_output_used(column: list[ir.Node]) -> bool:
    """No node of the layer has a later output anything reads (a LayerNormalization's mean)."""
    return all(
        not out.uses() and not out.is_graph_output() for node in column for out in node.outputs[1:]
    )
