"""The zoo's fusion sets: equal outputs, shared batch dims, reproducible exports."""

from __future__ import annotations

import onnx
import onnx.numpy_helper
import pytest

from fusedinf_cc.passes.base import FusionOptions
from tests.support.commands import fuse_files
from tests.support.oracle import assert_bitwise


def test_unrelated_models_fuse_bitwise(tmp_path, zoo):
    specs = [
        (name, zoo(name))
        for name in ("resnet18", "mobilenet_v3_small", "squeezenet1_1", "transformer_encoder")
    ]
    out = tmp_path / "fused.onnx"
    manifest = fuse_files(specs, out, FusionOptions(share_inputs="auto"))
    shared = {s.name: s.members for s in manifest.shared_inputs}
    assert shared == {
        "image": ["resnet18.image", "mobilenet_v3_small.image", "squeezenet1_1.image"]
    }
    assert_bitwise(out, manifest)


def test_dynamic_batch_models_share_one_batch_dim(tmp_path, zoo):
    a = zoo("squeezenet1_1", dynamic_batch=True)
    b = zoo("head0", dynamic_batch=True)
    out = tmp_path / "fused.onnx"
    manifest = fuse_files([("a", a), ("b", b)], out, FusionOptions(share_inputs="auto"))
    (image,) = onnx.load(out).graph.input
    assert image.type.tensor_type.shape.dim[0].dim_param == "batch"
    assert_bitwise(out, manifest, dims={"batch": 2})


def test_zoo_exports_are_cached_and_reproducible(tmp_path, zoo):
    from model_zoo.zoo import export

    first = export("head0", tmp_path / "one")
    stamp = first.stat().st_mtime_ns
    assert export("head0", tmp_path / "one").stat().st_mtime_ns == stamp
    second = export("head0", tmp_path / "two")
    assert first.read_bytes() == second.read_bytes()


@pytest.mark.parametrize("name", ["head0", "squeezenet1_1"])
def test_weight_variants_share_no_weight(tmp_path, zoo, name):
    """`variant=K` is another model of one architecture: dedup and cse find nothing to fold,
    even for a model whose trunk is shared across the heads of variant 0."""
    from model_zoo.zoo import export

    def weights(path):
        model = onnx.load(path)
        return {onnx.numpy_helper.to_array(t).tobytes() for t in model.graph.initializer if t.dims}

    one = export(name, tmp_path, variant=1)
    two = export(name, tmp_path, variant=2)
    assert not weights(one) & weights(two)
