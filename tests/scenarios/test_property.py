"""Property: for random small DAGs, fused outputs equal the separate models' outputs."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import helper

from fusedinf_cc.passes.base import FusionOptions
from tests.support import builders
from tests.support.commands import fuse_files
from tests.support.oracle import compare_fused

WIDTH = 4
UNARY = ("Relu", "Tanh", "Sigmoid", "Neg", "Abs")
BINARY = ("Add", "Mul", "Sub")
# Names that collide across models and that contain the separator.
NAME_STEMS = ("t", "h/", "a.b/", "y")


@st.composite
def dag_models(draw: st.DrawFn, index: int):
    rng_seeds = st.integers(0, 3)  # few seeds: equal weights across models happen often
    inputs = ["x"] + (["x2"] if draw(st.booleans()) else [])
    vectors = [f"v{i}" for i in range(draw(st.integers(1, 2)))]
    initializers = [
        builders.tensor(
            name, np.random.default_rng(draw(rng_seeds)).standard_normal(WIDTH).astype(np.float32)
        )
        for name in vectors
    ]
    initializers.append(
        builders.tensor(
            "W",
            np.random.default_rng(draw(rng_seeds))
            .standard_normal((WIDTH, WIDTH))
            .astype(np.float32),
        )
    )
    activations = list(inputs)  # [2, WIDTH]; the first operand is one, so outputs stay [2, WIDTH]
    nodes = []
    for i in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(("unary", "binary", "matmul")))
        out = f"{draw(st.sampled_from(NAME_STEMS))}{i}"
        first = draw(st.sampled_from(activations))
        if kind == "unary":
            nodes.append(helper.make_node(draw(st.sampled_from(UNARY)), [first], [out]))
        elif kind == "binary":
            second = draw(st.sampled_from(activations + vectors))
            nodes.append(helper.make_node(draw(st.sampled_from(BINARY)), [first, second], [out]))
        else:
            nodes.append(helper.make_node("MatMul", [first, "W"], [out]))
        activations.append(out)
    produced = [node.output[0] for node in nodes]
    outputs = sorted({produced[-1], *draw(st.lists(st.sampled_from(produced), max_size=2))})
    shape = [2, WIDTH]
    return builders.make_model(
        nodes,
        [helper.make_tensor_value_info(name, builders.FLOAT, shape) for name in inputs],
        [helper.make_tensor_value_info(name, builders.FLOAT, shape) for name in outputs],
        initializers,
        opset=draw(st.sampled_from((13, 17))),
    )


@st.composite
def model_sets(draw: st.DrawFn):
    count = draw(st.integers(2, 3))
    return [draw(dag_models(i)) for i in range(count)]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    models=model_sets(),
    share=st.sampled_from(("auto", "none")),
    dedup=st.booleans(),
    cse=st.booleans(),
)
def test_fused_random_dags_match_separate_models(models, share, dedup, cse):
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        specs = [(f"m{i}", builders.save(m, root / f"m{i}.onnx")) for i, m in enumerate(models)]
        out = root / "fused.onnx"
        manifest = fuse_files(specs, out, FusionOptions(share_inputs=share, dedup=dedup, cse=cse))
        results = compare_fused(out, manifest, seed=len(models))
        assert len(results) == sum(len(m.graph.output) for m in models)
        errors = {name: error for name, (error, _) in results.items() if error > 1e-5}
        assert not errors, errors


CHANNELS = 4
CONSTANT_SHAPES = ((1, CHANNELS, 1, 1), (CHANNELS, 1, 1), (), (1,))


@st.composite
def cnn_plans(draw: st.DrawFn):
    """One architecture: a list of layers on a 1x3x8x8 image, every activation CHANNELS wide."""
    kinds = ("conv", "relu", "sigmoid", "clip", "scale", "shift", "residual", "gate", "pool")
    return [("conv", 3, 1)] + [
        (
            kind,
            draw(st.sampled_from((1, 3))),  # conv kernel
            draw(st.sampled_from((1, CHANNELS))),  # conv groups
        )
        for kind in draw(st.lists(st.sampled_from(kinds), min_size=1, max_size=8))
    ]


def cnn_from_plan(
    plan, seed: int, constants: list[float], shared_stem: bool = False
) -> builders.onnx.ModelProto:
    """The plan's model with weights from `seed`; `constants` are its non-weight constants,
    which differ between models where the strategy drew them so. With `shared_stem` the first
    convolution's weights are the same in every model (cse then computes it once)."""
    rng = np.random.default_rng(seed)
    stem_rng = np.random.default_rng(1000) if shared_stem else rng
    nodes, initializers = [], []
    current, size, same_size = "image", 8, []
    for index, (kind, kernel, groups) in enumerate(plan):
        out = f"a{index}"

        def const(name: str, values: np.ndarray, i: int = index) -> str:
            initializers.append(builders.tensor(f"{name}{i}", values.astype(np.float32)))
            return f"{name}{i}"

        if kind == "conv":
            cin = 3 if index == 0 else CHANNELS
            groups = 1 if index == 0 else groups
            fan_in = cin // groups * kernel * kernel  # unit-scale activations: errors stay absolute
            shape = (CHANNELS, cin // groups, kernel, kernel)
            draw = stem_rng if index == 0 else rng
            weight = const("w", draw.standard_normal(shape) / np.sqrt(fan_in))
            pad = kernel // 2
            nodes.append(
                helper.make_node("Conv", [current, weight], [out], group=groups, pads=[pad] * 4)
            )
        elif kind in ("relu", "sigmoid"):
            nodes.append(helper.make_node(kind.capitalize(), [current], [out]))
        elif kind == "clip":
            low = const("lo", np.array(-constants[index % len(constants)]))
            nodes.append(
                helper.make_node("Clip", [current, low, const("hi", np.array(1.0))], [out])
            )
        elif kind in ("scale", "shift"):
            shape = CONSTANT_SHAPES[index % len(CONSTANT_SHAPES)]
            values = (
                rng.standard_normal(shape)
                if shape and CHANNELS in shape
                else np.full(shape, constants[index % len(constants)])
            )
            op = "Mul" if kind == "scale" else "Add"
            nodes.append(helper.make_node(op, [current, const("c", values)], [out]))
        elif kind == "residual" and same_size:
            nodes.append(helper.make_node("Add", [current, same_size[0]], [out]))
        elif kind == "gate":
            nodes.append(helper.make_node("GlobalAveragePool", [current], [f"{out}_pool"]))
            nodes.append(helper.make_node("Sigmoid", [f"{out}_pool"], [f"{out}_gate"]))
            nodes.append(helper.make_node("Mul", [current, f"{out}_gate"], [out]))
        elif kind == "pool" and size >= 2:
            nodes.append(
                helper.make_node("MaxPool", [current], [out], kernel_shape=[2, 2], strides=[2, 2])
            )
            size, same_size = size // 2, []
        else:
            continue
        current = out
        same_size.append(out)
    return builders.make_model(
        nodes,
        [helper.make_tensor_value_info("image", builders.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info(current, builders.FLOAT, [1, CHANNELS, size, size])],
        initializers,
    )


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    plan=cnn_plans(),
    count=st.integers(2, 3),
    constants=st.lists(
        st.lists(st.sampled_from((0.5, 2.0)), min_size=1, max_size=3), min_size=3, max_size=3
    ),
    shared_stem=st.booleans(),
)
def test_stacked_random_cnns_match_separate_models(plan, count, constants, shared_stem):
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        models = [cnn_from_plan(plan, seed, constants[seed], shared_stem) for seed in range(count)]
        specs = [(f"m{i}", builders.save(m, root / f"m{i}.onnx")) for i, m in enumerate(models)]
        out = root / "stacked.onnx"
        options = FusionOptions(share_inputs="auto", stack=True)
        manifest = fuse_files(specs, out, options)
        results = compare_fused(out, manifest)
        assert len(results) == count
        errors = {name: error for name, (error, _) in results.items() if error > 1e-4}
        assert not errors, errors
