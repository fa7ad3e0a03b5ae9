"""cse: identical nodes on identical inputs computed once."""

from __future__ import annotations

import onnx
import onnx.numpy_helper
import pytest

from fusedinf_cc.passes.base import FusionOptions
from tests.support import builders
from tests.support.commands import fuse_files
from tests.support.oracle import assert_bitwise


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


@pytest.mark.parametrize("pair", [("head0", "head1"), ("resnet_head0", "resnet_head1")])
def test_two_heads_on_one_backbone_compute_the_backbone_once(tmp_path, zoo, pair):
    head0, head1 = zoo(pair[0]), zoo(pair[1])
    nodes0 = len(onnx.load(head0).graph.node)
    nodes1 = len(onnx.load(head1).graph.node)
    out = tmp_path / "heads.onnx"
    manifest = fuse_files([("cls", head0), ("seg", head1)], out, FusionOptions(share_inputs="auto"))
    fused = onnx.load(out)
    # One backbone plus two heads: every node of the larger model, plus the other model's head.
    head_nodes = 3
    assert len(fused.graph.node) <= max(nodes0, nodes1) + head_nodes
    assert len(fused.graph.node) < 0.6 * (nodes0 + nodes1)
    weights = manifest.passes[-1].weight_bytes_after
    assert weights < 0.6 * manifest.passes[0].weight_bytes_before
    assert_bitwise(out, manifest)
