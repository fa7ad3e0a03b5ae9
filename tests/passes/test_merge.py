"""merge: the prefixed source graphs moved into one graph, weights not copied."""

from __future__ import annotations

from pathlib import Path

from fusedinf_cc.onnx_io.model_io import load_sources
from fusedinf_cc.passes.base import FusionOptions, FusionState, PassContext
from fusedinf_cc.passes.merge import Merge
from fusedinf_cc.passes.normalize import Normalize
from fusedinf_cc.passes.prefix import Prefix
from tests.support import builders


def _merged(tmp_path: Path) -> tuple[FusionState, dict[str, int], object]:
    a = builders.save(builders.affine(0, width=16), tmp_path / "a.onnx")
    b = builders.save(builders.affine(1, width=8), tmp_path / "b.onnx")
    state = FusionState(members=load_sources([("a", a), ("b", b)]))
    ctx = PassContext.for_sources(state.members, FusionOptions())
    for fusion_pass in (Normalize(), Prefix()):
        fusion_pass.run(state, ctx)
    tensors = {
        name: id(value.const_value)
        for member in state.members
        for name, value in member.model.graph.initializers.items()
    }
    outcome = Merge().run(state, ctx)
    return state, tensors, outcome


def test_merge_takes_the_union_of_every_models_graph(tmp_path):
    state, tensors, outcome = _merged(tmp_path)
    fused = state.require_fused().graph
    assert [v.name for v in fused.inputs] == ["a/x", "b/x"]
    assert [v.name for v in fused.outputs] == ["a/y", "b/y"]
    assert set(fused.initializers) == set(tensors)
    assert [node.name for node in fused] == [
        f"{model}/{op}" for model in "ab" for op in ("matmul", "add", "relu")
    ]
    assert outcome.detail == "2 models (a, b): 2 inputs, 2 outputs"
    # The sources' graphs are emptied: their nodes and weights were moved, not copied.
    for member in state.members:
        graph = member.model.graph
        assert len(graph) == 0 and not graph.initializers and not graph.inputs


def test_merge_moves_weights_without_copying_them(tmp_path):
    state, tensors, _ = _merged(tmp_path)
    fused = state.require_fused().graph
    assert {name: id(v.const_value) for name, v in fused.initializers.items()} == tensors
