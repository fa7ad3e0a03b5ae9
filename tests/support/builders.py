"""Small ONNX models built by hand, each shaped like a real-world kind of trouble for fusion."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
from onnx import TensorProto, helper, numpy_helper

FLOAT = TensorProto.FLOAT


def save(model: onnx.ModelProto, path: Path) -> Path:
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, path)
    return path


def make_model(
    nodes: Sequence[onnx.NodeProto],
    inputs: Sequence[onnx.ValueInfoProto],
    outputs: Sequence[onnx.ValueInfoProto],
    initializers: Sequence[onnx.TensorProto] = (),
    *,
    opset: int = 17,
    ir_version: int | None = None,
    functions: Sequence[onnx.FunctionProto] = (),
    extra_opsets: Sequence[onnx.OperatorSetIdProto] = (),
) -> onnx.ModelProto:
    graph = helper.make_graph(list(nodes), "g", list(inputs), list(outputs), list(initializers))
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", opset), *extra_opsets],
        functions=list(functions),
    )
    model.ir_version = ir_version or helper.find_min_ir_version_for(
        [helper.make_opsetid("", opset)]
    )
    return model


def tensor(name: str, values: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(values, name)


def affine(
    seed: int,
    *,
    in_name: str = "x",
    out_name: str = "y",
    width: int = 8,
    batch: int | str = 1,
    opset: int = 17,
    ir_version: int | None = None,
    weight: np.ndarray | None = None,
) -> onnx.ModelProto:
    """y = relu(x @ W + b): the smallest model with real weights."""
    rng = np.random.default_rng(seed)
    w = weight if weight is not None else rng.standard_normal((width, width)).astype(np.float32)
    b = rng.standard_normal(width).astype(np.float32)
    return make_model(
        [
            helper.make_node("MatMul", [in_name, "W"], ["h"], name="matmul"),
            helper.make_node("Add", ["h", "b"], ["z"], name="add"),
            helper.make_node("Relu", ["z"], [out_name], name="relu"),
        ],
        [helper.make_tensor_value_info(in_name, FLOAT, [batch, width])],
        [helper.make_tensor_value_info(out_name, FLOAT, [batch, width])],
        [tensor("W", w), tensor("b", b)],
        opset=opset,
        ir_version=ir_version,
    )


def if_reading_outer(seed: int) -> onnx.ModelProto:
    """An If whose branches read an initializer and an input of the outer graph."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal(4).astype(np.float32)
    then_branch = helper.make_graph(
        [helper.make_node("Add", ["x", "w"], ["t"], name="then_add")],
        "then",
        [],
        [helper.make_tensor_value_info("t", FLOAT, [1, 4])],
    )
    else_branch = helper.make_graph(
        [helper.make_node("Mul", ["x", "w"], ["t"], name="else_mul")],
        "else",
        [],
        [helper.make_tensor_value_info("t", FLOAT, [1, 4])],
    )
    return make_model(
        [
            helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0, name="sum"),
            helper.make_node("Greater", ["s", "zero"], ["c"], name="positive"),
            helper.make_node(
                "If", ["c"], ["y"], then_branch=then_branch, else_branch=else_branch, name="if"
            ),
        ],
        [helper.make_tensor_value_info("x", FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", FLOAT, [1, 4])],
        [tensor("w", w), tensor("zero", np.array(0.0, dtype=np.float32))],
        opset=13,
    )


def loop_reading_outer(seed: int) -> onnx.ModelProto:
    """A Loop that adds an outer-scope initializer to its carried value three times."""
    rng = np.random.default_rng(seed)
    body = helper.make_graph(
        [
            helper.make_node("Add", ["acc_in", "step"], ["acc_out"], name="body_add"),
            helper.make_node("Identity", ["cond_in"], ["cond_out"], name="body_cond"),
        ],
        "body",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("acc_in", FLOAT, [1, 4]),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("acc_out", FLOAT, [1, 4]),
        ],
    )
    return make_model(
        [helper.make_node("Loop", ["trips", "", "x"], ["y"], body=body, name="loop")],
        [helper.make_tensor_value_info("x", FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", FLOAT, [1, 4])],
        [
            tensor("trips", np.array(3, dtype=np.int64)),
            tensor("step", rng.standard_normal((1, 4)).astype(np.float32)),
        ],
        opset=13,
    )


def with_local_function(seed: int, scale: float) -> onnx.ModelProto:
    """A model calling a model-local function named `Scale` (same name, different body per seed)."""
    function = helper.make_function(
        "local",
        "Scale",
        ["a"],
        ["b"],
        [
            helper.make_node("Constant", [], ["k"], value_float=scale),
            helper.make_node("Mul", ["a", "k"], ["b"]),
        ],
        opset_imports=[helper.make_opsetid("", 17)],
    )
    model = affine(seed, out_name="h2")
    model.graph.node.append(helper.make_node("Scale", ["h2"], ["y"], domain="local", name="scale"))
    model.graph.output[0].name = "y"
    model.functions.append(function)
    model.opset_import.append(helper.make_opsetid("local", 1))
    return model


def small_cnn(
    seed: int, *, channels: int = 8, clip_max: float = 6.0, opset: int = 17
) -> onnx.ModelProto:
    """A mobile-style block on a 1x3x16x16 image: conv, BN, depthwise conv with a bias, clip,
    a squeeze-excite scale, a per-channel shift and a residual add, then pool and classify.
    Every weight depends on `seed`; `clip_max` is a constant that is not a weight."""
    rng = np.random.default_rng(seed)

    def weights(*shape: int) -> np.ndarray:
        return rng.standard_normal(shape).astype(np.float32)

    c = channels
    return make_model(
        [
            helper.make_node("Conv", ["image", "w1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
            helper.make_node(
                "BatchNormalization", ["c1", "scale", "shift", "mean", "var"], ["b1"], name="bn"
            ),
            helper.make_node("Relu", ["b1"], ["r1"], name="relu"),
            helper.make_node(
                "Conv", ["r1", "w2", "bias2"], ["c2"], group=c, pads=[1, 1, 1, 1], name="dw"
            ),
            helper.make_node("Clip", ["c2", "zero", "clip_max"], ["r2"], name="clip"),
            helper.make_node("GlobalAveragePool", ["r2"], ["pooled"], name="squeeze"),
            helper.make_node("HardSigmoid", ["pooled"], ["gate"], name="excite"),
            helper.make_node("Mul", ["r2", "gate"], ["scaled"], name="scale"),
            helper.make_node("Add", ["scaled", "channel_shift"], ["shifted"], name="shift"),
            helper.make_node("Mul", ["shifted", "half"], ["halved"], name="halve"),
            helper.make_node("Add", ["halved", "r1"], ["res"], name="residual"),
            helper.make_node("MaxPool", ["res"], ["mp"], kernel_shape=[2, 2], strides=[2, 2]),
            helper.make_node("GlobalAveragePool", ["mp"], ["gap"], name="gap"),
            helper.make_node("Flatten", ["gap"], ["flat"], name="flatten"),
            helper.make_node("Gemm", ["flat", "fc", "fc_bias"], ["logits"], name="fc"),
        ],
        [helper.make_tensor_value_info("image", FLOAT, [1, 3, 16, 16])],
        [
            helper.make_tensor_value_info("logits", FLOAT, [1, 4]),
            helper.make_tensor_value_info("r2", FLOAT, [1, c, 16, 16]),
        ],
        [
            tensor("w1", weights(c, 3, 3, 3)),
            tensor("scale", weights(c)),
            tensor("shift", weights(c)),
            tensor("mean", weights(c)),
            tensor("var", np.abs(weights(c)) + 0.5),
            tensor("w2", weights(c, 1, 3, 3)),
            tensor("bias2", weights(c)),
            tensor("zero", np.array(0.0, dtype=np.float32)),
            tensor("clip_max", np.array(clip_max, dtype=np.float32)),
            tensor("channel_shift", weights(1, c, 1, 1)),
            tensor("half", np.array(0.5, dtype=np.float32)),
            tensor("fc", weights(c, 4)),
            tensor("fc_bias", weights(4)),
        ],
        opset=opset,
    )


def attention_block(
    seed: int, opset: int = 17, tokens: int = 8, width: int = 16
) -> onnx.ModelProto:
    """One self-attention block with a classifier, as torch's exporter spells it: x [1, T, W]
    -> qkv MatMul and bias, Reshape, Transpose, Split into q, k, v, scaled scores, Softmax,
    the residual, a LayerNormalization, the tokens' mean, a Gemm. Every weight drawn from
    `seed`, the LayerNormalization's too: models of it stack only on the model axis."""
    rng = np.random.default_rng(seed)

    def draw(*shape: int, scale: float = 0.3) -> np.ndarray:
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    axes_as_input = opset >= 18
    mean = (
        helper.make_node("ReduceMean", ["normed", "mean_axes"], ["pooled"], keepdims=0)
        if axes_as_input
        else helper.make_node("ReduceMean", ["normed"], ["pooled"], axes=[1], keepdims=0)
    )
    nodes = [
        helper.make_node("MatMul", ["x", "w_qkv"], ["qkv_mm"]),
        helper.make_node("Add", ["qkv_mm", "b_qkv"], ["qkv"]),
        helper.make_node("Reshape", ["qkv", "qkv_shape"], ["qkv_split"]),
        helper.make_node("Transpose", ["qkv_split"], ["qkv_first"], perm=[2, 0, 1, 3]),
        helper.make_node("Split", ["qkv_first", "thirds"], ["q3", "k3", "v3"], axis=0),
        helper.make_node("Squeeze", ["q3", "zero"], ["q"]),
        helper.make_node("Squeeze", ["k3", "zero"], ["k"]),
        helper.make_node("Squeeze", ["v3", "zero"], ["v"]),
        helper.make_node("Transpose", ["k"], ["k_t"], perm=[0, 2, 1]),
        helper.make_node("MatMul", ["q", "k_t"], ["scores"]),
        helper.make_node("Div", ["scores", "scale"], ["scaled"]),
        helper.make_node("Softmax", ["scaled"], ["attention"], axis=-1),
        helper.make_node("MatMul", ["attention", "v"], ["attended"]),
        helper.make_node("Add", ["x", "attended"], ["residual"]),
        helper.make_node("LayerNormalization", ["residual", "ln_scale", "ln_bias"], ["normed"]),
        mean,
        helper.make_node("Gemm", ["pooled", "w_out", "b_out"], ["logits"], transB=1),
    ]
    initializers = [
        tensor("w_qkv", draw(width, 3 * width)),
        tensor("b_qkv", draw(3 * width)),
        tensor("qkv_shape", np.array([1, tokens, 3, width], np.int64)),
        tensor("thirds", np.array([1, 1, 1], np.int64)),
        tensor("zero", np.array([0], np.int64)),
        tensor("scale", np.array(np.sqrt(width), np.float32)),
        tensor("ln_scale", 1 + draw(width)),
        tensor("ln_bias", draw(width)),
        tensor("w_out", draw(4, width)),
        tensor("b_out", draw(4)),
    ]
    if axes_as_input:
        initializers.append(tensor("mean_axes", np.array([1], np.int64)))
    return make_model(
        nodes,
        [helper.make_tensor_value_info("x", FLOAT, [1, tokens, width])],
        [helper.make_tensor_value_info("logits", FLOAT, [1, 4])],
        initializers,
        opset=opset,
    )


def stem_and_head(stem_seed: int, head_seed: int, channels: int = 8) -> onnx.ModelProto:
    """A conv stem and a conv head on a 1x3x16x16 image: models with one `stem_seed` share the
    stem's weights (so `cse` computes it once); `head_seed` draws the head's."""
    stem, head = np.random.default_rng(stem_seed), np.random.default_rng(head_seed)
    c = channels
    return make_model(
        [
            helper.make_node("Conv", ["image", "stem_w"], ["s"], pads=[1, 1, 1, 1], name="stem"),
            helper.make_node("Relu", ["s"], ["features"], name="stem_relu"),
            helper.make_node("Conv", ["features", "h1"], ["h"], pads=[1, 1, 1, 1], name="head1"),
            helper.make_node("Relu", ["h"], ["hr"], name="head_relu"),
            helper.make_node("Conv", ["hr", "h2"], ["scores"], name="head2"),
            helper.make_node("GlobalAveragePool", ["scores"], ["pooled"], name="pool"),
        ],
        [helper.make_tensor_value_info("image", FLOAT, [1, 3, 16, 16])],
        [helper.make_tensor_value_info("pooled", FLOAT, [1, 4, 1, 1])],
        [
            tensor("stem_w", stem.standard_normal((c, 3, 3, 3)).astype(np.float32)),
            tensor("h1", head.standard_normal((c, c, 3, 3)).astype(np.float32)),
            tensor("h2", head.standard_normal((4, c, 1, 1)).astype(np.float32)),
        ],
    )


def affine_pair(folder: Path) -> tuple[Path, Path]:
    """Two distinct affine models, `a.onnx` and `b.onnx`, in `folder`."""
    return save(affine(0), folder / "a.onnx"), save(affine(1), folder / "b.onnx")


def affine_pair_specs(folder: Path, seed: int, width: int = 64) -> list[str]:
    """Two affine models `a` and `b` drawn from `seed`, written into `folder`, as NAME=PATH."""
    folder.mkdir(parents=True, exist_ok=True)
    specs = []
    for name, offset in (("a", 0), ("b", 1)):
        path = folder / f"{name}.onnx"
        save(affine(seed * 10 + offset, width=width), path)
        specs.append(f"{name}={path}")
    return specs


def picky_model(path: Path) -> Path:
    """y = table[idx + offset] for a table of two rows: like a sample rate that must be 8000
    or 16000, the random integers a footprint measurement draws (0..7) are mostly refused, and
    the index is computed, so the graph does not say what `idx` admits."""
    model = make_model(
        [
            helper.make_node("Add", ["idx", "offset"], ["row"]),
            helper.make_node("Gather", ["table", "row"], ["y"], axis=0),
        ],
        [helper.make_tensor_value_info("idx", TensorProto.INT64, [4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 3])],
        [
            tensor("table", np.arange(6, dtype=np.float32).reshape(2, 3)),
            tensor("offset", np.zeros((), dtype=np.int64)),
        ],
    )
    return save(model, path)


def token_model(path: Path, seed: int = 0) -> Path:
    """A transformer's embeddings in small: word ids into a table of 50 rows and token-type
    ids, through a Cast, into a table of 2, summed: random integers must stay below 2."""
    rng = np.random.default_rng(seed)
    model = make_model(
        [
            helper.make_node("Gather", ["words", "input_ids"], ["w"], axis=0),
            helper.make_node("Cast", ["token_type_ids"], ["types32"], to=TensorProto.INT32),
            helper.make_node("Gather", ["types", "types32"], ["t"], axis=0),
            helper.make_node("Add", ["w", "t"], ["embeddings"]),
        ],
        [
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, [1, 6]),
            helper.make_tensor_value_info("token_type_ids", TensorProto.INT64, [1, 6]),
        ],
        [helper.make_tensor_value_info("embeddings", TensorProto.FLOAT, [1, 6, 4])],
        [
            tensor("words", rng.standard_normal((50, 4)).astype(np.float32)),
            tensor("types", rng.standard_normal((2, 4)).astype(np.float32)),
        ],
    )
    return save(model, path)


def dynamic_conv(seed: int = 0) -> onnx.ModelProto:
    """One 3x3 convolution to 16 channels over an image `x` [1, 3, h, w] of any height and
    width, averaged to `y` [1, 16]: its activations grow with the image."""
    weight = np.random.default_rng(seed).standard_normal((16, 3, 3, 3)).astype(np.float32)
    return make_model(
        [
            helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
            helper.make_node("ReduceMean", ["c"], ["y"], axes=[2, 3], keepdims=0),
        ],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, "h", "w"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16])],
        [tensor("w", weight)],
    )


def random_feeds(width: int = 256, seed: int = 0) -> dict[str, np.ndarray]:
    """An input `x` of 1 x `width` normal floats, for an `affine` model."""
    return {"x": np.random.default_rng(seed).standard_normal((1, width)).astype(np.float32)}


def ir_shape(*dims: int | str) -> ir.Shape:
    """An onnx-ir shape: numbers are fixed dims, strings symbolic ones."""
    return ir.Shape([ir.SymbolicDim(d) if isinstance(d, str) else d for d in dims])
