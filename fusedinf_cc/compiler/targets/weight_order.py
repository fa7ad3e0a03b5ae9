"""Lay an ahead-of-time artifact's side file out in the order its graph first reads the weights.

ONNX Runtime writes the optimised graph's weights in the order it holds them, which is not the
order inference reaches them (on a fused zoo bundle, 32 of 69 weights lie before one that an
earlier node reads). A cold request reads the side file as it computes: in file order, a read
that runs ahead of the computation (`runtime/loading.py`, `interleaved`) brings what the next
node needs next, any span of consecutive nodes reads one contiguous range of the file, and
storage that reads sequentially faster than at random (a microSD card) does so. Each weight
keeps its bytes, so its digest, the weight pool's sharing and the outputs do not change.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from fusedinf_cc.compiler.parts import first_reads, reads
from fusedinf_cc.compiler.targets.weight_digests import read_range

# Each weight starts on a 64-byte boundary: what vector loads like, a few bytes per weight.
_ALIGNMENT = 64


def order_by_first_use(model_path: Path, data_name: str) -> bool:
    """Rewrite `data_name` beside `model_path` (and the offsets the model records) so that its
    tensors lie in the order the graph's nodes first read them; tensors no node reads go last.
    False, changing nothing, where they already do."""
    import onnx
    from onnx.external_data_helper import ExternalDataInfo, _get_all_tensors

    model = onnx.load(str(model_path), load_external_data=False)
    first_use = first_reads([reads(node) for node in model.graph.node])
    stored = [
        tensor
        for tensor in _get_all_tensors(model)
        if tensor.data_location == onnx.TensorProto.EXTERNAL
        and ExternalDataInfo(tensor).location == data_name
    ]
    unread = len(model.graph.node)
    ordered = sorted(stored, key=lambda tensor: first_use.get(tensor.name, unread))
    offsets = [ExternalDataInfo(tensor).offset for tensor in ordered]
    if offsets == sorted(offsets):
        return False
    side_file = model_path.with_name(data_name)
    rewritten = side_file.with_name(side_file.name + ".ordered")
    moved: dict[tuple[int, int], int] = {}  # one stored range named twice stays one range
    with open(side_file, "rb") as source, open(rewritten, "wb") as target:
        end = 0
        for tensor in ordered:
            info = ExternalDataInfo(tensor)
            where = (info.offset, info.length)
            if where not in moved:
                padding = -end % _ALIGNMENT
                target.write(b"\0" * padding)
                moved[where] = end + padding
                for chunk in read_range(source, info.offset, info.length):
                    target.write(chunk)
                end += padding + info.length
            _place(tensor, moved[where], info.length)
    os.replace(rewritten, side_file)
    onnx.save(model, str(model_path))
    return True


def _place(tensor: Any, offset: int, length: int) -> None:
    """Point `tensor`'s external-data record at `offset` (its location and other keys kept)."""
    entries = {entry.key: entry for entry in tensor.external_data}
    for key, value in (("offset", offset), ("length", length)):
        if key in entries:
            entries[key].value = str(value)
        else:
            tensor.external_data.add(key=key, value=str(value))
