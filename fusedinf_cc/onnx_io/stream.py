"""Write a single-file ONNX model one weight tensor at a time.

Building the full `ModelProto` and calling `SerializeToString` holds every weight twice more (the
proto's copy and the bytes' copy). Protobuf's wire format lets us avoid both: a singular message
field that occurs several times is merged by every conforming parser, and repeated fields append.
So the file is the model without its large initializers, followed by one `graph { initializer {
... raw_data } }` chunk per tensor; readers see one graph holding all of them.
"""

from __future__ import annotations

from typing import BinaryIO

import onnx
import onnx_ir as ir

# Field numbers from onnx.proto: ModelProto.graph, GraphProto.initializer, TensorProto.raw_data.
_MODEL_GRAPH = 7
_GRAPH_INITIALIZER = 5
_TENSOR_RAW_DATA = 9
_LENGTH_DELIMITED = 2
# Larger tensors are streamed; smaller ones stay in the head. Loading reads external tensors up to
# this size into memory, so no external reference is ever left in the head.
STREAMED_TENSOR_BYTES = 1024


def write_streamed(model: ir.Model, stream: BinaryIO) -> None:
    """Serialise `model` to `stream`; large main-graph weights are written one at a time."""
    initializers = model.graph.initializers
    order = list(initializers)
    streamed = [
        value
        for value in initializers.values()
        if value.const_value is not None
        and value.const_value.nbytes > STREAMED_TENSOR_BYTES
        and not value.const_value.dtype.is_string()
    ]
    for value in streamed:
        initializers.pop(value.name)
    try:
        stream.write(ir.serde.serialize_model(model).SerializeToString())
    finally:
        everything = {value.name: value for value in streamed} | dict(initializers)
        initializers.clear()
        for name in order:
            initializers.add(everything[name])
    for value in streamed:
        _write_initializer_chunk(stream, value)


def _write_initializer_chunk(stream: BinaryIO, value: ir.Value) -> None:
    tensor = value.const_value
    assert tensor is not None and value.name is not None
    header = onnx.TensorProto(
        name=value.name, dims=list(tensor.shape.numpy()), data_type=int(tensor.dtype)
    ).SerializeToString()
    data = tensor.tobytes()
    raw_field = _tag(_TENSOR_RAW_DATA) + _varint(len(data))
    tensor_length = len(header) + len(raw_field) + len(data)
    initializer_field = _tag(_GRAPH_INITIALIZER) + _varint(tensor_length)
    graph_field = _tag(_MODEL_GRAPH) + _varint(len(initializer_field) + tensor_length)
    stream.write(graph_field + initializer_field + header + raw_field)
    stream.write(data)


def _tag(field_number: int) -> bytes:
    return _varint(field_number << 3 | _LENGTH_DELIMITED)


def _varint(number: int) -> bytes:
    out = bytearray()
    while True:
        byte = number & 0x7F
        number >>= 7
        if number:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)
