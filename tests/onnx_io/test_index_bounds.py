"""Integer inputs that index a table: random inputs stay below its rows."""

from __future__ import annotations

import numpy as np

from fusedinf_cc.onnx_io.index_bounds import index_bounds
from fusedinf_cc.onnx_io.model_io import load_model
from tests.support import builders
from tests.support.commands import run_cli


def test_an_index_into_a_table_is_bounded_by_its_rows_through_shape_only_ops(tmp_path):
    model = load_model(builders.token_model(tmp_path / "tokens.onnx"))
    assert index_bounds(model.graph) == {"input_ids": 50, "token_type_ids": 2}
    # An index the graph computes says nothing of what the input admits.
    picky = load_model(builders.picky_model(tmp_path / "picky.onnx"))
    assert index_bounds(picky.graph) == {}


def test_token_inputs_verify_and_bench_without_given_inputs(tmp_path):
    """Random token-type ids used to be drawn up to 7, which a table of 2 rows refuses."""
    tokens = builders.token_model(tmp_path / "tokens.onnx")
    other = builders.save(builders.affine(1, width=8), tmp_path / "other.onnx")
    for aot in ([], ["--aot"]):
        fused = tmp_path / f"pair{len(aot)}.onnx"
        built = run_cli("fuse", f"bert={tokens}", f"mlp={other}", *aot, "-o", fused)
        assert built.returncode == 0, built.stderr
        verified = run_cli("verify", fused)
        assert verified.returncode == 0, verified.stderr + verified.stdout
        ran = run_cli("run", fused, "--model", "bert")
        assert ran.returncode == 0, ran.stderr
    benched = run_cli("bench", "--fused", fused, "--runs", "2", "--warmup", "0", "--rounds", "1")
    assert benched.returncode == 0, benched.stderr
    # What the user gives is never bounded: an id past the table is refused as a request.
    bad = tmp_path / "bad.npz"
    np.savez(bad, input_ids=np.zeros((1, 6), np.int64), token_type_ids=np.full((1, 6), 5))
    refused = run_cli("run", fused, "--model", "bert", "--inputs", bad)
    assert refused.returncode == 2 and "cannot run it on these inputs" in refused.stderr
