"""share: inputs several models read become one, their shapes unified or refused naming the dims."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest

from fusedinf_cc.common.errors import FusedInfWarning, MergeError, UserInputError
from fusedinf_cc.onnx_io.model_io import SourceModel
from fusedinf_cc.passes.base import FusionOptions, ShareSpec
from fusedinf_cc.passes.share import parse_share_spec, unify_shapes
from tests.support import builders
from tests.support.commands import fuse_files
from tests.support.oracle import assert_bitwise


def _source(name: str, *inputs: str) -> SourceModel:
    return SourceModel(name, Path(f"{name}.onnx"), "", None, inputs, ("y",))  # type: ignore[arg-type]


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
    with pytest.warns(FusedInfWarning, match=r"b\.x dim 0 \('batch'\) is fixed to 1"):
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
    with pytest.warns(FusedInfWarning, match=r"--share-inputs auto: a\.x, b\.x stay apart"):
        manifest = fuse_files([("a", a), ("b", b)], out, FusionOptions(share_inputs="auto"))
    assert [i.name for i in onnx.load(out).graph.input] == ["a/x", "b/x"]
    share_record = next(p for p in manifest.passes if p.name == "share")
    assert "not shared a.x, b.x (dim 1: 4 vs 8)" in share_record.detail


def test_unify_shapes_prefers_fixed_dims_and_common_symbols():
    unified, problems = unify_shapes(
        [builders.ir_shape("a/batch", 3), builders.ir_shape("b/batch", 3), builders.ir_shape(1, 3)]
    )
    assert problems == [] and unified == builders.ir_shape(1, 3)
    unified, problems = unify_shapes([builders.ir_shape("a/n", 3), builders.ir_shape("b/n", 3)])
    assert unified == builders.ir_shape("n", 3)
    unified, problems = unify_shapes([builders.ir_shape("a/n", 3), builders.ir_shape("b/m", 3)])
    assert unified == builders.ir_shape("a/n", 3)


def test_unify_shapes_reports_every_difference():
    _, problems = unify_shapes([builders.ir_shape(1, 3, 224), builders.ir_shape(1, 4, 256)])
    assert problems == ["dim 1: 3 vs 4", "dim 2: 224 vs 256"]
    _, problems = unify_shapes([builders.ir_shape(1, 3), builders.ir_shape(1, 3, 1)])
    assert problems == ["ranks 2 vs 3"]


def test_share_spec_resolves_model_names_that_contain_dots():
    sources = [_source("det.v2", "image"), _source("det", "v2.scan"), _source("cls", "image")]
    spec = parse_share_spec("img=det.v2.image,cls.image", sources)
    assert spec.members == (("det.v2", "image"), ("cls", "image"))
    spec = parse_share_spec("img=det.v2.scan,cls.image", sources)
    assert spec.members == (("det", "v2.scan"), ("cls", "image"))
    ambiguous = [_source("det.v2", "image"), _source("det", "v2.image")]
    with pytest.raises(UserInputError, match="ambiguous"):
        parse_share_spec("img=det.v2.image,det.v2.image", ambiguous)
    with pytest.raises(UserInputError, match="at least two"):
        parse_share_spec("img=det.v2.image", sources)
    with pytest.raises(UserInputError, match="expected FUSED="):
        parse_share_spec("det.v2.image,det.v2.image", sources)
