"""Digest every weight of an ahead-of-time artifact's side file into a `WeightRecord`.

Reads the optimised graph with onnx (without its weights), then hashes each weight's bytes from
the side file; the manifest keeps the records, and the runtime's weight pool shares weights by
digest.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fusedinf_cc.artifacts.weight_records import MAPPABLE_DTYPES, PREPACKING_OPS, WeightRecord

_HASH_CHUNK_BYTES = 1 << 20


def external_weight_records(model_path: Path, data_name: str) -> list[WeightRecord]:
    """Records for the main graph's initializers stored in `data_name` beside `model_path`, in
    the order they lie in it, each marked `packable` where a kernel would pack it into a copy
    of its own.

    Reads the graph without its weights, then hashes each weight's bytes from the side file.
    """
    import onnx
    from onnx.external_data_helper import ExternalDataInfo

    model = onnx.load(str(model_path), load_external_data=False)
    packed = {
        name for node in model.graph.node if node.op_type in PREPACKING_OPS for name in node.input
    }
    records = []
    with open(model_path.parent / data_name, "rb") as data:
        for tensor in model.graph.initializer:
            if tensor.data_location != onnx.TensorProto.EXTERNAL:
                continue
            info = ExternalDataInfo(tensor)
            dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).name
            if info.location != data_name or dtype not in MAPPABLE_DTYPES:
                continue
            shape = tuple(int(dim) for dim in tensor.dims)
            records.append(
                WeightRecord(
                    name=tensor.name,
                    digest=_digest(data, info.offset, info.length, dtype, shape),
                    offset=info.offset,
                    length=info.length,
                    dtype=dtype,
                    shape=shape,
                    packable=tensor.name in packed,
                )
            )
    return sorted(records, key=lambda record: record.offset)


def _digest(data: Any, offset: int, length: int, dtype: str, shape: tuple[int, ...]) -> str:
    digest = hashlib.sha256(f"{dtype}{list(shape)}".encode())
    for chunk in read_range(data, offset, length):
        digest.update(chunk)
    return digest.hexdigest()


def read_range(data: Any, offset: int, length: int) -> Iterator[bytes]:
    """The bytes of a tensor in a side file, a chunk at a time: never a large weight at once."""
    data.seek(offset)
    remaining = length
    while remaining > 0:
        chunk = data.read(min(remaining, _HASH_CHUNK_BYTES))
        if not chunk:
            raise ValueError(f"side file ends before its tensor at offset {offset}")
        yield chunk
        remaining -= len(chunk)
