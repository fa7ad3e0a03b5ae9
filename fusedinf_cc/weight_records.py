"""Content records of an ahead-of-time artifact's weights, so that bundles can share them.

Two fused bundles that contain the same model hold that model's weights twice on disk, and
ONNX Runtime would map both copies when both are loaded. The manifest of an `--aot` artifact
therefore lists, for every weight in its side file, where it lies and a digest of what it is
(bytes, element type and shape). The runtime (`weight_pool.py`) maps each digest once per
process and hands it to every session that needs it; the loader counts it once in its budget.
Only the records are built here (with onnx); the runtime reads them from the manifest.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Element types the runtime can map in place (numpy names); others load the ordinary way.
MAPPABLE_DTYPES = frozenset(
    {"float32", "float16", "float64", "int8", "uint8", "int16", "uint16", "int32", "int64", "bool"}
)
# Operators whose CPU kernels copy a constant weight into their own packed layout when the
# session starts ("prepacking"), after which ONNX Runtime lets go of the original. A session that
# prepacks must not take such a weight from the pool: the original would stay mapped beside the
# packed copy. Ahead-of-time sessions do not prepack (`backends.onnxruntime`), so they pool all.
PREPACKING_OPS = frozenset(
    {
        "Attention",
        "ConvTranspose",
        "DynamicQuantizeLSTM",
        "DynamicQuantizeMatMul",
        "FusedGemm",
        "FusedMatMul",
        "GRU",
        "Gemm",
        "LSTM",
        "MatMul",
        "MatMulBnb4",
        "MatMulInteger",
        "MatMulIntegerToFloat",
        "MatMulNBits",
        "MoE",
        "QAttention",
        "QGemm",
        "QLinearConv",
        "QLinearMatMul",
        "QMoE",
    }
)
_HASH_CHUNK_BYTES = 1 << 20


@dataclass(frozen=True)
class WeightRecord:
    """One initializer of the main graph whose bytes lie in the artifact's side file."""

    name: str
    digest: str  # sha256 of dtype, shape and bytes: equal digests are interchangeable tensors
    offset: int
    length: int
    dtype: str
    shape: tuple[int, ...]
    packable: bool = False  # an input of a PREPACKING_OPS node: pooled only without prepacking

    @classmethod
    def from_manifest(cls, record: dict[str, Any]) -> WeightRecord:
        return cls(
            name=str(record["name"]),
            digest=str(record["digest"]),
            offset=int(record["offset"]),
            length=int(record["length"]),
            dtype=str(record["dtype"]),
            shape=tuple(int(dim) for dim in record["shape"]),
            packable=bool(record.get("packable", False)),
        )


def external_weight_records(model_path: Path, data_name: str) -> list[WeightRecord]:
    """Records for the main graph's initializers stored in `data_name` beside `model_path`,
    each marked `packable` where a kernel would pack it into a copy of its own.

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
    return records


def _digest(data: Any, offset: int, length: int, dtype: str, shape: tuple[int, ...]) -> str:
    digest = hashlib.sha256(f"{dtype}{list(shape)}".encode())
    data.seek(offset)
    remaining = length
    while remaining > 0:
        chunk = data.read(min(remaining, _HASH_CHUNK_BYTES))
        if not chunk:
            raise ValueError(f"side file ends before its tensor at offset {offset}")
        digest.update(chunk)
        remaining -= len(chunk)
    return digest.hexdigest()
