"""Real-world shapes of trouble: each fused model must still equal its separate models."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import helper

from fusedinf_cc.artifacts.manifest import METADATA_KEY
from fusedinf_cc.common.errors import MergeError
from fusedinf_cc.passes.base import FusionOptions, ShareSpec
from tests import builders
from tests.conftest import fuse_files
from tests.oracle import assert_bitwise, compare_fused


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


def test_mixed_opsets_and_ir_versions(tmp_path):
    specs = []
    for seed, (opset, ir_version) in enumerate([(11, 6), (13, 7), (17, 8)]):
        model = builders.affine(seed, opset=opset, ir_version=ir_version)
        specs.append((f"op{opset}", builders.save(model, tmp_path / f"op{opset}.onnx")))
    out = tmp_path / "fused.onnx"
    manifest = fuse_files(specs, out)
    fused = onnx.load(out)
    assert {o.domain: o.version for o in fused.opset_import}[""] == 17
    assert fused.ir_version >= 8
    assert "op11 11->17" in manifest.passes[0].detail
    assert "op13 13->17" in manifest.passes[0].detail
    assert_bitwise(out, manifest)


@pytest.mark.slow
def test_mixed_opsets_of_zoo_models(tmp_path, zoo):
    specs = [
        ("squeeze", zoo("squeezenet1_1", opset=11)),
        ("mobile", zoo("mobilenet_v3_small", opset=13)),
        ("head0", zoo("head0", opset=17)),
    ]
    out = tmp_path / "fused.onnx"
    manifest = fuse_files(specs, out)
    assert manifest.opset == 17
    errors = compare_fused(out, manifest)
    assert max(error for error, _ in errors.values()) <= 1e-5, errors


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


def test_shared_input_unifies_symbolic_dims_downstream(tmp_path):
    a = builders.save(builders.affine(0, batch="n"), tmp_path / "a.onnx")
    b = builders.save(builders.affine(1, batch="n"), tmp_path / "b.onnx")
    out = tmp_path / "fused.onnx"
    manifest = fuse_files([("a", a), ("b", b)], out, FusionOptions(share_inputs="auto"))
    fused = onnx.load(out)
    assert [i.name for i in fused.graph.input] == ["x"]
    output_dims = {o.type.tensor_type.shape.dim[0].dim_param for o in fused.graph.output}
    assert output_dims == {"n"}
    assert_bitwise(out, manifest, dims={"n": 3})


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


def test_models_with_external_data(tmp_path):
    external = tmp_path / "ext"
    external.mkdir()
    model = builders.affine(0, width=64)
    onnx.save_model(
        model,
        external / "a.onnx",
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="a.weights",
        size_threshold=0,
    )
    b = builders.save(builders.affine(1, width=64), tmp_path / "b.onnx")
    out = tmp_path / "fused.onnx"
    manifest = fuse_files([("a", external / "a.onnx"), ("b", b)], out)
    assert manifest.footprint["weight_bytes"] == 2 * (64 * 64 + 64) * 4
    assert_bitwise(out, manifest)


def test_explicitly_shared_input_with_different_names(tmp_path):
    a = builders.save(builders.affine(0, in_name="x"), tmp_path / "a.onnx")
    b = builders.save(builders.affine(1, in_name="input"), tmp_path / "b.onnx")
    out = tmp_path / "fused.onnx"
    share = ShareSpec("image", (("a", "x"), ("b", "input")))
    manifest = fuse_files([("a", a), ("b", b)], out, FusionOptions(explicit_shares=(share,)))
    assert [i.name for i in onnx.load(out).graph.input] == ["image"]
    assert manifest.model("b").inputs == {"input": "image"}
    assert [s.members for s in manifest.shared_inputs] == [["a.x", "b.input"]]
    assert_bitwise(out, manifest)


def test_sharing_fixed_and_symbolic_batch_takes_the_fixed_size(tmp_path):
    a = builders.save(builders.affine(0, batch=1), tmp_path / "a.onnx")
    b = builders.save(builders.affine(1, batch="batch"), tmp_path / "b.onnx")
    out = tmp_path / "fused.onnx"
    manifest = fuse_files([("a", a), ("b", b)], out, FusionOptions(share_inputs="auto"))
    (shared,) = onnx.load(out).graph.input
    assert [d.dim_value for d in shared.type.tensor_type.shape.dim] == [1, 8]
    assert_bitwise(out, manifest)


def test_explicit_share_of_incompatible_shapes_names_the_dims(tmp_path):
    a = builders.save(builders.affine(0, width=8), tmp_path / "a.onnx")
    b = builders.save(builders.affine(1, width=4), tmp_path / "b.onnx")
    share = ShareSpec("x", (("a", "x"), ("b", "x")))
    with pytest.raises(MergeError, match=r"dim 1: 4 vs 8"):
        fuse_files(
            [("a", a), ("b", b)], tmp_path / "f.onnx", FusionOptions(explicit_shares=(share,))
        )
    assert not (tmp_path / "f.onnx").exists()


def test_auto_share_skips_incompatible_inputs_and_says_so(tmp_path):
    a = builders.save(builders.affine(0, width=8), tmp_path / "a.onnx")
    b = builders.save(builders.affine(1, width=4), tmp_path / "b.onnx")
    out = tmp_path / "fused.onnx"
    manifest = fuse_files([("a", a), ("b", b)], out, FusionOptions(share_inputs="auto"))
    assert [i.name for i in onnx.load(out).graph.input] == ["a/x", "b/x"]
    share_record = next(p for p in manifest.passes if p.name == "share")
    assert "not shared a.x, b.x (dim 1: 4 vs 8)" in share_record.detail


def test_model_local_functions_with_one_name_keep_their_own_bodies(tmp_path):
    a = builders.save(builders.with_local_function(0, 2.0), tmp_path / "a.onnx")
    b = builders.save(builders.with_local_function(0, 3.0), tmp_path / "b.onnx")
    out = tmp_path / "fused.onnx"
    manifest = fuse_files([("a", a), ("b", b)], out, FusionOptions(share_inputs="auto"))
    fused = onnx.load(out)
    assert sorted(f.name for f in fused.functions) == ["a/Scale", "b/Scale"]
    results = compare_fused(out, manifest)
    assert all(bitwise for _, bitwise in results.values()), results


def test_identical_models_compute_once_and_keep_both_outputs(tmp_path):
    a = builders.save(builders.affine(0), tmp_path / "a.onnx")
    b = builders.save(builders.affine(0), tmp_path / "b.onnx")
    out = tmp_path / "fused.onnx"
    manifest = fuse_files([("a", a), ("b", b)], out, FusionOptions(share_inputs="auto"))
    fused = onnx.load(out)
    assert [o.name for o in fused.graph.output] == ["a/y", "b/y"]
    assert len(fused.graph.initializer) == 2  # one W, one b
    assert sum(n.op_type != "Identity" for n in fused.graph.node) == 3
    assert_bitwise(out, manifest)


def test_embedded_manifest_maps_the_same_names_as_the_sidecar(tmp_path):
    a = builders.save(builders.affine(0), tmp_path / "a.onnx")
    b = builders.save(builders.affine(1), tmp_path / "b.onnx")
    out = tmp_path / "fused.onnx"
    manifest = fuse_files([("a", a), ("b", b)], out)
    embedded = {p.key: p.value for p in onnx.load(out).metadata_props}[METADATA_KEY]
    assert '"a/y"' in embedded and '"seconds"' not in embedded
    assert manifest.artifact is not None and manifest.artifact.size_bytes == out.stat().st_size


def test_fusing_is_deterministic(tmp_path):
    a = builders.save(builders.affine(0), tmp_path / "a.onnx")
    b = builders.save(builders.affine(1), tmp_path / "b.onnx")
    first, second = tmp_path / "first.onnx", tmp_path / "second.onnx"
    fuse_files([("a", a), ("b", b)], first, FusionOptions(share_inputs="auto"))
    fuse_files([("a", a), ("b", b)], second, FusionOptions(share_inputs="auto"))
    assert first.read_bytes() == second.read_bytes()


def test_custom_domain_at_two_versions_is_refused(tmp_path):
    def with_domain(version: int) -> onnx.ModelProto:
        model = builders.affine(version)
        model.opset_import.append(helper.make_opsetid("com.example", version))
        return model

    a = builders.save(with_domain(1), tmp_path / "a.onnx")
    b = builders.save(with_domain(2), tmp_path / "b.onnx")
    with pytest.raises(MergeError, match=r"com\.example"):
        fuse_files([("a", a), ("b", b)], tmp_path / "f.onnx")


def test_no_dedup_and_no_cse_keep_the_graph_as_merged(tmp_path):
    a = builders.save(builders.affine(0), tmp_path / "a.onnx")
    b = builders.save(builders.affine(0), tmp_path / "b.onnx")
    out = tmp_path / "fused.onnx"
    options = FusionOptions(share_inputs="auto", dedup=False, cse=False)
    manifest = fuse_files([("a", a), ("b", b)], out, options)
    fused = onnx.load(out)
    assert len(fused.graph.node) == 6 and len(fused.graph.initializer) == 4
    assert [p.name for p in manifest.passes] == ["normalize", "prefix", "merge", "share", "cleanup"]
    np.testing.assert_equal([e for e, _ in compare_fused(out, manifest).values()], [0.0, 0.0])
