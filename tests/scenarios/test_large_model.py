"""A model above 2 GiB of weights fuses through external data without a copy of its weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from fusedinf_cc.artifacts.manifest import read_manifest
from tests.support import builders
from tests.support.commands import run_probe
from tests.support.oracle import assert_bitwise

ROWS, WIDTH = 525_312, 1024  # 2.0 GiB of float32: past protobuf's 2 GiB limit
TABLE_BYTES = ROWS * WIDTH * 4
FILLED_ROWS = [*range(8), ROWS - 1]  # the oracle's random indices fall in 0..7

_FUSE_AND_MEASURE = """
import json, sys
from pathlib import Path
from fusedinf_cc.compiler.pipeline import fuse, write_fused
from fusedinf_cc.onnx_io.model_io import load_sources
from fusedinf_cc.runtime.procmem import PeakAnonSampler
folder = Path(sys.argv[1])
with PeakAnonSampler() as sampler:
    sources = load_sources([("big", folder / "big.onnx"), ("small", folder / "small.onnx")])
    write_fused(fuse(sources), folder / "fused.onnx")
print(json.dumps({"peak_anon_bytes": sampler.peak_bytes}))
"""


def _write_big_model(folder: Path) -> None:
    """A Gather over a 2 GiB table kept in a sparse side file: only the rows we read hold data."""
    rng = np.random.default_rng(0)
    with open(folder / "table.bin", "wb") as stream:
        stream.truncate(TABLE_BYTES)
        for row in FILLED_ROWS:
            stream.seek(row * WIDTH * 4)
            stream.write(rng.standard_normal(WIDTH).astype(np.float32).tobytes())
    table = TensorProto(name="table", data_type=TensorProto.FLOAT, dims=[ROWS, WIDTH])
    table.data_location = TensorProto.EXTERNAL
    for key, value in (("location", "table.bin"), ("offset", "0"), ("length", str(TABLE_BYTES))):
        entry = table.external_data.add()
        entry.key, entry.value = key, value
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "idx"], ["row"], axis=0)],
        "big",
        [helper.make_tensor_value_info("idx", TensorProto.INT64, [2])],
        [helper.make_tensor_value_info("row", TensorProto.FLOAT, [2, WIDTH])],
        [table],
    )
    onnx.save(
        helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), folder / "big.onnx"
    )


@pytest.mark.slow
def test_model_above_2gib_fuses_without_copying_its_weights(tmp_path):
    _write_big_model(tmp_path)
    builders.save(builders.affine(0), tmp_path / "small.onnx")
    try:
        peak_anon = run_probe(_FUSE_AND_MEASURE, tmp_path)["peak_anon_bytes"]
        # A copy of the table would need 2 GiB of private memory; mmapped pages are not copies.
        assert peak_anon < 512 * 2**20, f"fusing used {peak_anon / 2**20:.0f} MiB of heap"

        fused_path = tmp_path / "fused.onnx"
        data = tmp_path / "fused.onnx.data"
        assert fused_path.stat().st_size < 1 << 20
        assert data.stat().st_size >= TABLE_BYTES
        manifest = read_manifest(tmp_path / "fused.onnx.manifest.json")
        assert manifest.artifact is not None and manifest.artifact.external_data == data.name
        assert_bitwise(fused_path, manifest)
    finally:
        for leftover in tmp_path.iterdir():  # 4 GiB of files: do not leave them for pytest to keep
            leftover.unlink()
