"""stack: models of one architecture on one input run as one wider model, with equal outputs."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import helper

from fusedinf_cc.compiler.pipeline import fuse
from fusedinf_cc.onnx_io.model_io import load_sources
from fusedinf_cc.passes.base import FusionOptions
from tests.support.builders import (
    FLOAT,
    attention_block,
    make_model,
    save,
    small_cnn,
    stem_and_head,
    tensor,
)
from tests.support.commands import fuse_files, run_cli
from tests.support.oracle import assert_within_rounding

STACK = FusionOptions(share_inputs="auto", stack=True)
PLAIN = FusionOptions(share_inputs="auto")


def _cnns(tmp_path, count=2, **kwargs):
    return [
        (
            f"m{seed}",
            save(small_cnn(seed, **kwargs.get(f"m{seed}", {})), tmp_path / f"m{seed}.onnx"),
        )
        for seed in range(count)
    ]


def _ops(path):
    return [node.op_type for node in onnx.load(path).graph.node]


def _stack_record(manifest):
    (record,) = [p for p in manifest.passes if p.name == "stack"]
    return record


@pytest.mark.parametrize("count", [2, 3])
def test_stacked_models_compute_each_layer_once_with_equal_outputs(tmp_path, count):
    specs = _cnns(tmp_path, count)
    manifest = fuse_files(specs, tmp_path / "stacked.onnx", STACK)
    fuse_files(specs, tmp_path / "plain.onnx", PLAIN)
    stacked, plain = _ops(tmp_path / "stacked.onnx"), _ops(tmp_path / "plain.onnx")
    # Thirteen layers run once for all models; each model keeps its own Flatten and Gemm, and
    # two Splits give every model back its pooled features and its `r2` output.
    assert stacked.count("Conv") == 2 and plain.count("Conv") == 2 * count
    assert stacked.count("Gemm") == count and stacked.count("Split") == 2
    assert len(stacked) == 13 + 2 * count + 2
    record = _stack_record(manifest)
    label = "+".join(m for m, _ in specs)
    assert record.changed and record.detail.startswith(f"{label}: 13 of 15 layers stacked; ")
    convs = [n for n in onnx.load(tmp_path / "stacked.onnx").graph.node if n.op_type == "Conv"]
    groups = [next((a.i for a in n.attribute if a.name == "group"), 1) for n in convs]
    assert groups == [1, 8 * count]  # shared input: plain; depthwise: every model's channels
    assert_within_rounding(tmp_path / "stacked.onnx", manifest)


def _unread_initializers(path):
    graph = onnx.load(path).graph
    read = {name for node in graph.node for name in node.input}
    return [init.name for init in graph.initializer if init.name not in read]


def test_the_models_own_weights_are_gone_once_stacked(tmp_path):
    fuse_files(_cnns(tmp_path), tmp_path / "stacked.onnx", STACK)
    assert _unread_initializers(tmp_path / "stacked.onnx") == []


@pytest.mark.parametrize("opset", [17, 18])
def test_attention_blocks_stack_on_the_model_axis_with_equal_outputs(tmp_path, opset):
    specs = [
        (f"t{k}", save(attention_block(k, opset=opset), tmp_path / f"t{k}.onnx")) for k in range(3)
    ]
    manifest = fuse_files(specs, tmp_path / "stacked.onnx", STACK)
    ops = _ops(tmp_path / "stacked.onnx")
    # One batched MatMul per layer for the three models, the LayerNormalization once (its
    # scale and bias stacked), the Gemm per model behind one Gather each.
    assert ops.count("MatMul") == 3 and ops.count("LayerNormalization") == 1
    assert ops.count("Softmax") == 1 and ops.count("Gemm") == 3 and ops.count("Gather") == 3
    assert _stack_record(manifest).detail == (
        "t0+t1+t2: 16 of 17 layers stacked; not stacked: Gemm (no stacked form) x1"
    )
    assert _unread_initializers(tmp_path / "stacked.onnx") == []
    assert_within_rounding(tmp_path / "stacked.onnx", manifest)


def _conv_norm_conv(seed, size):
    """Conv, then a channels-last LayerNormalization between two Transposes, then a depthwise
    Conv: a ConvNeXt block's shape, on a `size` x `size` image."""
    rng = np.random.default_rng(seed)

    def draw(*shape):
        return rng.standard_normal(shape).astype(np.float32)

    return make_model(
        [
            helper.make_node("Conv", ["image", "w1"], ["c1"]),
            helper.make_node("Transpose", ["c1"], ["last"], perm=[0, 2, 3, 1]),
            helper.make_node("LayerNormalization", ["last", "scale", "bias"], ["normed"]),
            helper.make_node("Transpose", ["normed"], ["first"], perm=[0, 3, 1, 2]),
            helper.make_node("Conv", ["first", "w2"], ["c2"], group=4, pads=[1, 1, 1, 1]),
            helper.make_node("Relu", ["c2"], ["y"]),
        ],
        [helper.make_tensor_value_info("image", FLOAT, [1, 3, size, size])],
        [helper.make_tensor_value_info("y", FLOAT, [1, 4, size, size])],
        [
            tensor("w1", draw(4, 3, 1, 1)),
            tensor("scale", 1 + draw(4)),
            tensor("bias", draw(4)),
            tensor("w2", draw(4, 1, 3, 3)),
        ],
    )


def test_a_small_map_moves_onto_the_model_axis_and_does_not_come_back(tmp_path):
    """The convolution stacks on channels; its small output moves to the model axis (a
    Reshape, a Transpose) for the channels-last layers; the convolution after them stays per
    model, since moving back would cost transposes on every such block."""
    specs = [(f"m{k}", save(_conv_norm_conv(k, 6), tmp_path / f"m{k}.onnx")) for k in range(2)]
    manifest = fuse_files(specs, tmp_path / "stacked.onnx", STACK)
    assert _stack_record(manifest).detail == (
        "m0+m1: 4 of 6 layers stacked; not stacked: Conv after channels-last layers (moving "
        "back costs more than it saves) x1, Relu after an unstacked layer x1"
    )
    ops = _ops(tmp_path / "stacked.onnx")
    assert ops.count("Conv") == 3 and ops.count("LayerNormalization") == 1
    assert_within_rounding(tmp_path / "stacked.onnx", manifest)


def test_a_large_feature_map_is_not_moved_channels_last(tmp_path):
    specs = [(f"m{k}", save(_conv_norm_conv(k, 160), tmp_path / f"m{k}.onnx")) for k in range(2)]
    manifest = fuse_files(specs, tmp_path / "stacked.onnx", STACK)
    detail = _stack_record(manifest).detail
    assert detail.startswith("m0+m1: 0 of 6 layers stacked; ")
    assert "Transpose on feature maps too large to move channels last x1" in detail


@pytest.mark.parametrize("opset", [17, 18])
def test_a_mean_over_height_and_width_stacks_on_the_channels(tmp_path, opset):
    """A squeeze-and-excite as torch's dynamo exporter writes it: ReduceMean over H and W, not
    GlobalAveragePool. It keeps the channel axis, so it runs once over every model's channels
    and the convolutions after it stack too."""

    def squeeze_excite(seed):
        rng = np.random.default_rng(seed)

        def draw(*shape):
            return rng.standard_normal(shape).astype(np.float32)

        mean = (
            helper.make_node("ReduceMean", ["c", "hw"], ["m"], keepdims=1)
            if opset >= 18
            else helper.make_node("ReduceMean", ["c"], ["m"], axes=[2, 3], keepdims=1)
        )
        initializers = [tensor("w", draw(8, 3, 1, 1)), tensor("w_se", draw(8, 8, 1, 1))]
        if opset >= 18:
            initializers.append(tensor("hw", np.array([2, 3], np.int64)))
        return make_model(
            [
                helper.make_node("Conv", ["image", "w"], ["c"]),
                mean,
                helper.make_node("Conv", ["m", "w_se"], ["e"]),
                helper.make_node("Sigmoid", ["e"], ["gate"]),
                helper.make_node("Mul", ["c", "gate"], ["y"]),
            ],
            [helper.make_tensor_value_info("image", FLOAT, [1, 3, 8, 8])],
            [helper.make_tensor_value_info("y", FLOAT, [1, 8, 8, 8])],
            initializers,
            opset=opset,
        )

    specs = [(f"m{k}", save(squeeze_excite(k), tmp_path / f"m{k}.onnx")) for k in range(2)]
    manifest = fuse_files(specs, tmp_path / "stacked.onnx", STACK)
    assert _stack_record(manifest).detail == "m0+m1: 5 of 5 layers stacked"
    assert _ops(tmp_path / "stacked.onnx").count("ReduceMean") == 1
    assert_within_rounding(tmp_path / "stacked.onnx", manifest)


def test_graph_outputs_keep_their_names(tmp_path):
    manifest = fuse_files(_cnns(tmp_path), tmp_path / "stacked.onnx", STACK)
    outputs = [o.name for o in onnx.load(tmp_path / "stacked.onnx").graph.output]
    assert outputs == [name for m in manifest.models for name in m.outputs.values()]
    assert sorted(outputs) == ["m0/logits", "m0/r2", "m1/logits", "m1/r2"]


def test_a_constant_that_differs_stops_the_stack_there(tmp_path):
    specs = _cnns(tmp_path, m1={"clip_max": 5.0})
    manifest = fuse_files(specs, tmp_path / "stacked.onnx", STACK)
    ops = _ops(tmp_path / "stacked.onnx")
    # conv, bn, relu and the depthwise conv stack; from the Clip on, each model runs its own.
    assert ops.count("Conv") == 2 and ops.count("Clip") == 2
    detail = _stack_record(manifest).detail
    assert detail.startswith("m0+m1: 4 of ") and "layers stacked" in detail
    # Why the rest was not: first the Clip, whose constants differ; layers that follow an
    # unstacked one only after the reasons that stopped a stack.
    assert "not stacked: Clip (weights or attributes of another form) x1, " in detail
    assert_within_rounding(tmp_path / "stacked.onnx", manifest)


def test_models_of_other_shapes_or_on_other_inputs_are_left_apart(tmp_path):
    wide = save(small_cnn(1, channels=16), tmp_path / "wide.onnx")
    specs = [("m0", save(small_cnn(0), tmp_path / "m0.onnx")), ("wide", wide)]
    manifest = fuse_files(specs, tmp_path / "mixed.onnx", STACK)
    assert not _stack_record(manifest).changed
    apart = fuse_files(_cnns(tmp_path), tmp_path / "apart.onnx", FusionOptions(stack=True))
    assert not _stack_record(apart).changed  # two inputs: nothing both read
    assert _ops(tmp_path / "apart.onnx").count("Conv") == 4


def test_heads_of_one_architecture_on_a_shared_backbone_stack(tmp_path):
    specs = [(f"h{k}", save(stem_and_head(0, k + 1), tmp_path / f"h{k}.onnx")) for k in range(3)]
    manifest = fuse_files(specs, tmp_path / "heads.onnx", STACK)
    ops = _ops(tmp_path / "heads.onnx")
    # cse computes the stem once; the three heads then read it as a shared value and stack.
    assert ops.count("Conv") == 3 and ops.count("Relu") == 2 and ops.count("Split") == 1
    assert _stack_record(manifest).detail == "h0+h1+h2: 4 of 4 layers stacked"
    assert_within_rounding(tmp_path / "heads.onnx", manifest)


def test_a_group_with_one_stackable_layer_is_left_as_merged(tmp_path):
    def conv_then_flatten(seed):
        weight = np.random.default_rng(seed).standard_normal((4, 3, 1, 1)).astype(np.float32)
        return make_model(
            [
                helper.make_node("Conv", ["image", "w"], ["c"], name="conv"),
                helper.make_node("Flatten", ["c"], ["flat"], name="flatten"),
            ],
            [helper.make_tensor_value_info("image", FLOAT, [1, 3, 2, 2])],
            [helper.make_tensor_value_info("flat", FLOAT, [1, 16])],
            [tensor("w", weight)],
        )

    specs = [(f"m{k}", save(conv_then_flatten(k), tmp_path / f"m{k}.onnx")) for k in range(2)]
    fused = fuse(load_sources(specs), STACK)
    assert _stack_record(fused.manifest).detail == (
        "m0+m1: 0 of 2 layers stacked; not stacked: Flatten (no stacked form) x1, "
        "a lone stackable layer (its Split would cost what it saves) x1"
    )
    # The stacked conv built and dropped reads nothing: the input's readers are the two convs.
    (image,) = fused.model.graph.inputs
    assert sorted(use.node.name for use in image.uses()) == ["m0/conv", "m1/conv"]


def test_stack_runs_only_when_asked(tmp_path):
    manifest = fuse_files(_cnns(tmp_path), tmp_path / "plain.onnx", PLAIN)
    assert "stack" not in [p.name for p in manifest.passes]


def test_cli_fuse_stack(tmp_path):
    (a, path_a), (b, path_b) = _cnns(tmp_path)
    out = tmp_path / "stacked.onnx"
    result = run_cli(
        "fuse",
        f"{a}={path_a}",
        f"{b}={path_b}",
        "--share-inputs",
        "auto",
        "--stack",
        "--explain",
        "-o",
        out,
    )
    assert result.returncode == 0, result.stderr
    assert "m0+m1: 13 of 15 layers stacked" in result.stdout
    verified = run_cli("verify", out)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    # Without --explain, --stack still says what it stacked and why the rest stayed merged.
    quiet = run_cli(
        "fuse", f"{a}={path_a}", f"{b}={path_b}", "--share-inputs", "auto", "--stack",
        "-o", tmp_path / "quiet.onnx",
    )  # fmt: skip
    assert quiet.returncode == 0, quiet.stderr
    line = next(x for x in quiet.stdout.splitlines() if x.startswith("--stack: "))
    assert "m0+m1: 13 of 15 layers stacked; not stacked: " in line


@pytest.mark.slow
@pytest.mark.parametrize("architecture", ["resnet18", "mobilenet_v3_small"])
def test_zoo_models_of_one_architecture_stack_with_equal_outputs(tmp_path, architecture):
    pytest.importorskip("torch", reason="the model zoo needs torch (pip install torch==2.13.0)")
    from model_zoo.zoo import export
    from tests.support.commands import ZOO_CACHE

    specs = [(f"v{v}", export(architecture, ZOO_CACHE / "opset17", variant=v)) for v in (1, 2)]
    manifest = fuse_files(specs, tmp_path / "stacked.onnx", STACK)
    plain = fuse_files(specs, tmp_path / "plain.onnx", PLAIN)
    # Everything up to the classifier runs once for both models.
    assert manifest.passes[-1].nodes_after < 0.6 * plain.passes[-1].nodes_after
    assert_within_rounding(tmp_path / "stacked.onnx", manifest)


def _export_with_random_norms(architecture, variant, path, dynamo):
    """A zoo architecture with every weight drawn from `variant`, LayerNormalizations too (a
    fine-tuned model's are not the identity), exported by torch's legacy or dynamo exporter."""
    import torch

    from model_zoo.zoo import CATALOGUE

    spec = CATALOGUE[architecture]
    torch.manual_seed(variant)
    model = spec.build().eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.LayerNorm):
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.1, 0.1)
    example = torch.randn(spec.input_shape)
    torch.onnx.export(
        model, (example,), path, dynamo=dynamo, input_names=["image"], output_names=["logits"]
    )
    return path


def _stacked_pair(tmp_path, architecture, dynamo):
    """Two variants of a zoo architecture exported by torch, fused with --stack: the manifest
    and what the stack pass said."""
    pytest.importorskip("torch", reason="the model zoo needs torch (pip install torch==2.13.0)")
    specs = [
        (f"v{v}", _export_with_random_norms(architecture, v, tmp_path / f"v{v}.onnx", dynamo))
        for v in (1, 2)
    ]
    manifest = fuse_files(specs, tmp_path / "stacked.onnx", STACK)
    return specs, manifest, _stack_record(manifest).detail


@pytest.mark.slow
@pytest.mark.parametrize("dynamo", [False, True], ids=["legacy", "dynamo"])
def test_vision_transformers_stack_on_the_model_axis_with_equal_outputs(tmp_path, dynamo):
    specs, manifest, detail = _stacked_pair(tmp_path, "vit", dynamo)
    plain = fuse_files(specs, tmp_path / "plain.onnx", PLAIN)
    # Every layer but the classifier runs once for both models, whichever exporter wrote them
    # (the legacy one computes its Reshape targets from Shape: folded first).
    assert detail.endswith("layers stacked; not stacked: Gemm (no stacked form) x1"), detail
    assert manifest.passes[-1].nodes_after < 0.6 * plain.passes[-1].nodes_after
    assert _unread_initializers(tmp_path / "stacked.onnx") == []
    assert_within_rounding(tmp_path / "stacked.onnx", manifest)


@pytest.mark.slow
def test_a_dynamo_exported_mobilenet_stacks_through_its_squeeze_excite_means(tmp_path):
    _, manifest, detail = _stacked_pair(tmp_path, "mobilenet_v3_small", dynamo=True)
    assert detail.startswith("v1+v2: 119 of 122 layers stacked; "), detail
    assert_within_rounding(tmp_path / "stacked.onnx", manifest)


@pytest.mark.slow
def test_convnext_stacks_its_stem_and_says_why_not_the_rest(tmp_path):
    _, manifest, detail = _stacked_pair(tmp_path, "convnext", dynamo=False)
    assert detail.startswith("v1+v2: 2 of ") and "layers stacked; not stacked: " in detail
    assert "Transpose on feature maps too large to move channels last x1" in detail
    assert_within_rounding(tmp_path / "stacked.onnx", manifest)


def test_a_bundle_spec_asks_for_stacking(tmp_path):
    _cnns(tmp_path)
    (tmp_path / "fusedinf.toml").write_text(
        '[bundles.pair]\nmodels = { m0 = "m0.onnx", m1 = "m1.onnx" }\n'
        'share_inputs = "auto"\nstack = true\n',
        encoding="utf-8",
    )
    built = run_cli("bundle", "build", "fusedinf.toml", "--out", "dist", cwd=tmp_path)
    assert built.returncode == 0, built.stderr
    manifest = json.loads((tmp_path / "dist" / "pair" / "pair.onnx.manifest.json").read_text())
    (record,) = [p for p in manifest["passes"] if p["name"] == "stack"]
    assert record["detail"].startswith("m0+m1: 13 of 15 layers stacked; ")
