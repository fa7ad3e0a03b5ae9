"""The KServe v2 / Triton inference protocol's tensors: JSON and the binary-data extension.

A request body is JSON, or JSON followed by raw tensor bytes when the header
`Inference-Header-Content-Length` gives the JSON's length; an input whose parameters carry
`binary_data_size` takes its bytes from that tail, in input order. Responses do the same for
outputs requested with `binary_data`. Nothing here knows about HTTP or the loader.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fusedinf_cc.backends.base import TensorSpec
from fusedinf_cc.runtime.feeds import describe_shape, fits

HEADER_LENGTH = "Inference-Header-Content-Length"
DATATYPES = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
}
_NAMES = {dtype: name for name, dtype in DATATYPES.items()}
# No tensor a request may describe is larger: bigger dims are a client's mistake (or attack),
# answered 400 before numpy multiplies them (past 2**63 the product wraps).
MAX_DIM = 2**31 - 1
MAX_ELEMENTS = 2**40
# JSON's own spelling has no NaN or infinity: such outputs go out as these strings, which
# numpy (tritonclient's `as_numpy`) and JavaScript's Number() read back as the values.
_NON_FINITE = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}


class ProtocolError(ValueError):
    """A request the protocol (or the model) cannot accept: answered with status 400."""


@dataclass
class InferRequest:
    inputs: dict[str, np.ndarray]
    outputs: list[str] | None  # None: every output
    binary_outputs: set[str] = field(default_factory=set)
    binary_by_default: bool = False
    request_id: str | None = None


def datatype_of(dtype: np.dtype) -> str:
    try:
        return _NAMES[np.dtype(dtype)]
    except KeyError:
        raise ProtocolError(f"type {dtype} has no KServe v2 datatype") from None


def tensor_metadata(spec: TensorSpec) -> dict[str, Any]:
    return {
        "name": spec.name,
        "datatype": datatype_of(spec.dtype),
        "shape": [dim if isinstance(dim, int) else -1 for dim in spec.shape],
    }


def parse_request(
    body: bytes | bytearray, header_length: str | None, specs: Sequence[TensorSpec]
) -> InferRequest:
    """Decode an infer request and check every input against the model's specs. Binary
    tensors are read in place from the body (a view, not a copy)."""
    view = memoryview(body)
    json_bytes, tail = body, view[len(view) :]  # all JSON: parsed as it is, not copied
    if header_length is not None:
        try:
            length = int(header_length)
        except ValueError:
            raise ProtocolError(f"{HEADER_LENGTH} is not a number: {header_length!r}") from None
        if not 0 <= length <= len(body):
            raise ProtocolError(f"{HEADER_LENGTH} {length} is outside the body ({len(body)} bytes)")
        json_bytes, tail = bytes(view[:length]), view[length:]  # the small JSON part copied
    try:
        document = json.loads(json_bytes)
    except (ValueError, UnicodeDecodeError) as error:
        raise ProtocolError(f"the request is not JSON ({error})") from None
    except RecursionError:
        raise ProtocolError("the request's JSON is nested too deeply") from None
    if not isinstance(document, dict) or not isinstance(document.get("inputs"), list):
        raise ProtocolError('the request needs "inputs": a list of tensors')
    by_name = {spec.name: spec for spec in specs}
    inputs: dict[str, np.ndarray] = {}
    offset = 0
    for item in document["inputs"]:
        array, used = _input_tensor(item, by_name, tail, offset)
        offset += used
        if item["name"] in inputs:
            raise ProtocolError(f"input {item['name']!r} is given twice")
        inputs[item["name"]] = array
    if offset != len(tail):
        raise ProtocolError(f"{len(tail) - offset} bytes of binary data are not claimed by inputs")
    missing = sorted(set(by_name) - set(inputs))
    if missing:
        raise ProtocolError(f"missing inputs {missing}")
    parameters = _parameters(document, "the request")
    if not isinstance(document.get("id", ""), str):
        raise ProtocolError('"id" must be a string')
    outputs = document.get("outputs")
    requested: list[str] | None = None
    binary: set[str] = set()
    if outputs is not None:
        if not isinstance(outputs, list) or not all(
            isinstance(o, dict) and isinstance(o.get("name"), str) for o in outputs
        ):
            raise ProtocolError('"outputs" must be a list of {"name": ...}')
        if not outputs:
            raise ProtocolError('"outputs" names no output; leave it out to get every output')
        requested = [o["name"] for o in outputs]
        if len(set(requested)) != len(requested):
            raise ProtocolError('"outputs" names an output twice')
        binary = {
            o["name"]
            for o in outputs
            if _flag(_parameters(o, f"output {o['name']!r}"), "binary_data")
        }
    return InferRequest(
        inputs=inputs,
        outputs=requested,
        binary_outputs=binary,
        binary_by_default=_flag(parameters, "binary_data_output"),
        request_id=document.get("id"),
    )


def _flag(parameters: Mapping[str, Any], key: str) -> bool:
    """A boolean parameter: true or false, never a string that reads as one."""
    value = parameters.get(key, False)
    if not isinstance(value, bool):
        raise ProtocolError(f'"{key}" must be true or false, not {json.dumps(value)}')
    return value


def _input_tensor(
    item: Any, specs: Mapping[str, TensorSpec], tail: bytes | memoryview, offset: int
) -> tuple[np.ndarray, int]:
    if not isinstance(item, dict) or not isinstance(item.get("name"), str):
        raise ProtocolError('every input needs a "name"')
    name = item["name"]
    if name not in specs:
        raise ProtocolError(f"unknown input {name!r} (the model takes {', '.join(specs)})")
    spec = specs[name]
    datatype = item.get("datatype")
    if datatype not in DATATYPES:
        raise ProtocolError(f"input {name!r}: datatype {datatype!r} is not supported")
    if DATATYPES[datatype] != spec.dtype:
        raise ProtocolError(
            f"input {name!r}: datatype {datatype}, the model takes {datatype_of(spec.dtype)}"
        )
    shape = item.get("shape")
    if not isinstance(shape, list) or not all(type(d) is int and 0 <= d <= MAX_DIM for d in shape):
        raise ProtocolError(f"input {name!r}: shape must be a list of integers from 0 to {MAX_DIM}")
    count = math.prod(shape)  # Python's integers: no wrap-around
    if count > MAX_ELEMENTS:
        raise ProtocolError(f"input {name!r}: shape {shape} holds more than 2**40 elements")
    if not fits(shape, spec.shape):
        wanted = describe_shape(spec.shape)
        raise ProtocolError(f"input {name!r}: shape {shape} does not fit the model's {wanted}")
    dtype = DATATYPES[datatype]
    size = _parameters(item, f"input {name!r}").get("binary_data_size")
    if size is not None:
        if type(size) is not int or size != count * dtype.itemsize or offset + size > len(tail):
            raise ProtocolError(
                f"input {name!r}: binary_data_size {size} does not match shape {shape} "
                f"of {datatype} or the bytes sent"
            )
        array = np.frombuffer(tail, dtype=dtype, count=count, offset=offset).reshape(shape)
        return array, size
    data = item.get("data")
    if data is None:
        raise ProtocolError(f"input {name!r}: no data and no binary_data_size")
    _check_values(data, dtype, name)
    try:
        array = np.asarray(data, dtype=dtype).reshape(shape)
    except (ValueError, TypeError, OverflowError) as error:
        raise ProtocolError(f"input {name!r}: data does not fit shape {shape} ({error})") from None
    except RecursionError:
        raise ProtocolError(f"input {name!r}: data is nested too deeply") from None
    return array, 0


_LEAF_TYPES = {"b": (bool,), "i": (int,), "u": (int,), "f": (int, float)}


def _check_values(data: Any, dtype: np.dtype, name: str) -> None:
    """Every value is of the datatype's kind: a float is never cut to an integer, and a
    string, a boolean or null never read as a number."""
    allowed = _LEAF_TYPES[dtype.kind]
    pending, depth = [data], 0
    while pending:
        depth += 1
        if depth > 64:
            raise ProtocolError(f"input {name!r}: data is nested too deeply")
        nested = []
        for value in pending:
            if isinstance(value, list):
                nested.extend(value)
            elif type(value) not in allowed:
                raise ProtocolError(
                    f"input {name!r}: data holds {json.dumps(value)[:40]}, not a "
                    f"value of datatype {datatype_of(dtype)}"
                )
        pending = nested


def _parameters(item: Mapping[str, Any], what: str) -> Mapping[str, Any]:
    parameters = item.get("parameters")
    if parameters is None:
        return {}
    if not isinstance(parameters, dict):
        raise ProtocolError(f'{what}: "parameters" must be an object')
    return parameters


def _json_data(array: np.ndarray) -> list[Any]:
    """The tensor's values as JSON can carry them (non-finite floats as strings)."""
    data = array.reshape(-1).tolist()
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        return [x if math.isfinite(x) else _NON_FINITE[repr(x)] for x in data]
    return data


def encode_response(
    model: str, results: Mapping[str, np.ndarray], request: InferRequest
) -> tuple[bytes, int | None]:
    """(body, JSON header length or None when the body is plain JSON)."""
    outputs, chunks = [], []
    for name, value in results.items():
        array = np.ascontiguousarray(value)
        entry: dict[str, Any] = {
            "name": name,
            "datatype": datatype_of(array.dtype),
            "shape": list(array.shape),
        }
        if name in request.binary_outputs or (
            request.binary_by_default and request.outputs is None
        ):
            raw = array.tobytes()
            entry["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            entry["data"] = _json_data(array)
        outputs.append(entry)
    document: dict[str, Any] = {"model_name": model, "model_version": "1", "outputs": outputs}
    if request.request_id is not None:
        document["id"] = request.request_id
    header = json.dumps(document, allow_nan=False).encode()
    if not chunks:
        return header, None
    return header + b"".join(chunks), len(header)
