"""Content records of an ahead-of-time artifact's weights, so that bundles can share them.

Two fused bundles that contain the same model hold that model's weights twice on disk, and
ONNX Runtime would map both copies when both are loaded. The manifest of an `--aot` artifact
therefore lists, for every weight in its side file, where it lies and a digest of what it is
(bytes, element type and shape). The runtime (`backends/weight_pool.py`) maps each digest once per
process and hands it to every session that needs it; the loader counts it once in its budget.
The records are defined here and built by the compiler (`compiler/targets/weight_digests.py`,
with onnx); the runtime only reads them from the manifest.
"""

from __future__ import annotations

from dataclasses import dataclass

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

    def check(self) -> None:
        """What a type cannot say: where the bytes lie must be a place in a file."""
        sizes = (self.offset, self.length, *self.shape)
        if any(size < 0 for size in sizes) or self.dtype not in MAPPABLE_DTYPES:
            raise ValueError(f"weight {self.name!r} has a negative size or an unknown dtype")
