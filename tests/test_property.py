"""Property: for random small DAGs, fused outputs equal the separate models' outputs."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import helper

from fusedinf_cc.passes.base import FusionOptions
from tests import builders
from tests.conftest import fuse_files
from tests.oracle import compare_fused

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
