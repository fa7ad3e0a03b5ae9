"""prefix: every name of a model under its own, subgraphs, functions and symbolic dims included."""

from __future__ import annotations

import onnx
import onnx_ir as ir
import pytest

from fusedinf_cc.passes.base import FusionOptions
from tests.support import builders
from tests.support.commands import fuse_files
from tests.support.oracle import assert_bitwise, compare_fused


def test_models_whose_inputs_are_all_called_x(tmp_path):
    paths = [builders.save(builders.affine(seed), tmp_path / f"m{seed}.onnx") for seed in range(3)]
    out = tmp_path / "fused.onnx"
    manifest = fuse_files([(f"m{i}", p) for i, p in enumerate(paths)], out)
    fused = onnx.load(out)
    assert [i.name for i in fused.graph.input] == ["m0/x", "m1/x", "m2/x"]
    assert [o.name for o in fused.graph.output] == ["m0/y", "m1/y", "m2/y"]
    assert manifest.model("m1").inputs == {"x": "m1/x"}
    assert_bitwise(out, manifest)


def test_output_names_that_already_contain_a_slash(tmp_path):
    a = builders.save(builders.affine(0, out_name="head/logits"), tmp_path / "a.onnx")
    b = builders.save(builders.affine(1, out_name="head/logits"), tmp_path / "b.onnx")
    out = tmp_path / "fused.onnx"
    manifest = fuse_files([("a", a), ("b", b)], out)
    assert manifest.model("a").outputs == {"head/logits": "a/head/logits"}
    assert manifest.model("b").outputs == {"head/logits": "b/head/logits"}
    assert_bitwise(out, manifest)


def test_same_symbolic_dim_name_in_unrelated_models_stays_apart(tmp_path):
    a = builders.save(builders.affine(0, batch="batch", width=8), tmp_path / "a.onnx")
    b = builders.save(builders.affine(1, batch="batch", width=4), tmp_path / "b.onnx")
    out = tmp_path / "fused.onnx"
    manifest = fuse_files([("a", a), ("b", b)], out)
    dims = {
        i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim]
        for i in onnx.load(out).graph.input
    }
    assert dims == {"a/x": ["a/batch", 8], "b/x": ["b/batch", 4]}
    # Each model's batch is free: run them at different sizes in one call.
    assert_bitwise(out, manifest, dims={"a/batch": 2, "b/batch": 5})


@pytest.mark.parametrize("builder", [builders.if_reading_outer, builders.loop_reading_outer])
def test_subgraphs_that_read_outer_scope_values(tmp_path, builder):
    a = builders.save(builder(0), tmp_path / "a.onnx")
    b = builders.save(builder(1), tmp_path / "b.onnx")
    out = tmp_path / "fused.onnx"
    manifest = fuse_files([("a", a), ("b", b)], out)
    fused = ir.load(out)
    subgraph_inputs = {
        value.name
        for node in ir.traversal.RecursiveGraphIterator(fused.graph)
        if node.graph is not fused.graph
        for value in node.inputs
        if value is not None
    }
    assert subgraph_inputs & {"a/x", "a/w", "a/step"}
    assert subgraph_inputs & {"b/x", "b/w", "b/step"}
    assert not {name for name in subgraph_inputs if "/" not in name}
    for seed in range(4):  # both branches of the If get taken
        assert_bitwise(out, manifest, seed=seed)


def test_model_local_functions_with_one_name_keep_their_own_bodies(tmp_path):
    a = builders.save(builders.with_local_function(0, 2.0), tmp_path / "a.onnx")
    b = builders.save(builders.with_local_function(0, 3.0), tmp_path / "b.onnx")
    out = tmp_path / "fused.onnx"
    manifest = fuse_files([("a", a), ("b", b)], out, FusionOptions(share_inputs="auto"))
    fused = onnx.load(out)
    assert sorted(f.name for f in fused.functions) == ["a/Scale", "b/Scale"]
    results = compare_fused(out, manifest)
    assert all(bitwise for _, bitwise in results.values()), results


def test_node_names_as_torch_writes_them_get_one_slash_after_the_prefix(tmp_path):
    model = builders.affine(0)
    for index, node in enumerate(model.graph.node):
        node.name = f"/m/layer{index}/MatMul"
    a = builders.save(model, tmp_path / "a.onnx")
    b = builders.save(builders.affine(1), tmp_path / "b.onnx")
    out = tmp_path / "fused.onnx"
    manifest = fuse_files([("bert", a), ("b", b)], out)
    names = [node.name for node in onnx.load(out).graph.node if node.name.startswith("bert")]
    assert names and all(name.startswith("bert/m/layer") for name in names), names
    assert_bitwise(out, manifest)
