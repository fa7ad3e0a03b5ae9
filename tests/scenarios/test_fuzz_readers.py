"""Every file the tool reads is checked at the door: hypothesis mutates valid manifests, bundle
indexes, specs and feeds (types, keys, depth, sizes), and a reader either accepts the file or
refuses it with one UserInputError line; no other exception ever escapes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fusedinf_cc.artifacts.index import INDEX, read_index, verify_bundle_dir
from fusedinf_cc.artifacts.manifest import manifest_path_for, read_manifest
from fusedinf_cc.common.errors import UserInputError
from fusedinf_cc.precompile.spec import read_spec
from fusedinf_cc.runtime.bundle import open_bundle
from fusedinf_cc.runtime.feeds import load_feeds
from tests.support.commands import build_pair_dist, run_cli

pytest.importorskip("onnxruntime", reason="needs ONNX Runtime")

LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
    st.just("../../etc/passwd"),
    st.just(10**4000),  # an integer of 4,001 digits
)
VALUES = st.recursive(
    LEAVES,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)


def _paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    found = [prefix]
    if isinstance(node, dict):
        for key, value in node.items():
            found += _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += _paths(value, (*prefix, index))
    return found


@st.composite
def mutated(draw: st.DrawFn, document: dict) -> tuple[str, Any]:
    """`document` with one change: a value replaced, a key dropped, or a subtree buried deep."""
    copy = json.loads(json.dumps(document))
    path = draw(st.sampled_from(_paths(copy)[1:]))
    parent = copy
    for step in path[:-1]:
        parent = parent[step]
    action = draw(st.sampled_from(["replace", "drop", "bury"]))
    if action == "drop" and isinstance(parent, dict):
        del parent[path[-1]]
    elif action == "bury":
        parent[path[-1]] = DEEP
    else:
        parent[path[-1]] = draw(VALUES)
    return action, copy


DEEP = "<nested 100,000 deep>"


def _dumped(document: Any) -> str:
    """The document as a hostile file may hold it: `DEEP` becomes arrays nested 100,000 deep
    (no Python object that deep can be built to dump)."""
    return json.dumps(document).replace(json.dumps(DEEP), "[" * 100_000 + "]" * 100_000)


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_pair_dist(tmp_path_factory.mktemp("fuzz"), width=32, aot=True)


def _accepts_or_refuses_in_one_line(read: Any) -> None:
    try:
        read()
    except UserInputError as error:
        assert "\n" not in str(error), str(error)


SETTINGS = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@SETTINGS
@given(data=st.data())
def test_a_damaged_manifest_is_read_or_refused_in_one_line(dist, tmp_path_factory, data):
    folder = tmp_path_factory.mktemp("manifest")
    for path in (dist / "pair").iterdir():
        shutil.copyfile(path, folder / path.name)
    sidecar = manifest_path_for(folder / "pair.onnx")
    _, document = data.draw(mutated(json.loads(sidecar.read_text())))
    sidecar.write_text(_dumped(document))
    _accepts_or_refuses_in_one_line(lambda: read_manifest(sidecar))
    _accepts_or_refuses_in_one_line(lambda: open_bundle(folder / "pair.onnx"))


@SETTINGS
@given(data=st.data())
def test_a_damaged_bundle_index_is_read_or_refused_in_one_line(dist, tmp_path_factory, data):
    folder = tmp_path_factory.mktemp("index") / "pair"
    shutil.copytree(dist / "pair", folder)
    _, document = data.draw(mutated(json.loads((folder / INDEX).read_text())))
    (folder / INDEX).write_text(_dumped(document))
    _accepts_or_refuses_in_one_line(lambda: read_index(folder))
    problems = verify_bundle_dir(folder)
    assert all("\n" not in problem for problem in problems)


SPEC = {
    "bundles": {
        "pair": {
            "models": {"a": "models/m0.onnx", "b": "models/m1.onnx"},
            "targets": ["onnx"],
            "verify": {"rtol": 1e-5, "atol": 1e-5},
            "engine": {"fp16": True},
        }
    }
}


def _toml(node: Any) -> str:
    """A TOML rendering of `node` as inline tables (TOML has no null: it becomes a string)."""
    if isinstance(node, dict):
        return "{ " + ", ".join(f"{json.dumps(k)} = {_toml(v)}" for k, v in node.items()) + " }"
    if isinstance(node, list):
        return "[" + ", ".join(_toml(v) for v in node) + "]"
    if node is None:
        return '"none"'
    if isinstance(node, bool):
        return "true" if node else "false"
    if isinstance(node, str):
        return json.dumps(node)
    return repr(node)


@SETTINGS
@given(data=st.data())
def test_a_damaged_spec_is_read_or_refused_in_one_line(dist, tmp_path_factory, data):
    folder = tmp_path_factory.mktemp("spec")
    shutil.copytree(dist.parent / "models", folder / "models")
    _, document = data.draw(mutated(SPEC))
    text = "\n".join(f"{json.dumps(k)} = {_toml(v)}" for k, v in document.items())
    (folder / "fusedinf.toml").write_text(text)
    _accepts_or_refuses_in_one_line(lambda: read_spec(folder / "fusedinf.toml"))


@settings(max_examples=40, deadline=None)
@given(
    names=st.lists(st.sampled_from(["x", "y", "a/x", ""]), max_size=3),
    dtype=st.sampled_from(["float32", "float64", "int64", "bool", "U3"]),
    shape=st.lists(st.integers(0, 4), max_size=3),
)
def test_damaged_feeds_are_read_or_refused_in_one_line(tmp_path_factory, names, dtype, shape):
    from fusedinf_cc.backends.base import TensorSpec

    path = tmp_path_factory.mktemp("feeds") / "feeds.npz"
    arrays = {name or "unnamed": np.zeros(shape, dtype=dtype) for name in names}
    np.savez(path, **arrays)
    specs = [TensorSpec("x", np.dtype(np.float32), (1, 4))]
    _accepts_or_refuses_in_one_line(lambda: load_feeds(path, specs))


@pytest.mark.parametrize(
    ("change", "command"),
    [
        (lambda m: m.update(models="not a list"), "inspect"),
        (lambda m: m["footprint"].update(weight_bytes=float("inf")), "run"),
        (lambda m: m["models"][0].pop("outputs"), "verify"),
        (lambda m: m.update(opset=10**4000), "run"),
        (lambda m: m["artifact"].update(path=7), "run"),
    ],
)
def test_a_damaged_manifest_is_one_line_through_the_commands(dist, tmp_path, change, command):
    folder = tmp_path / "pair"
    shutil.copytree(dist / "pair", folder)
    sidecar = manifest_path_for(folder / "pair.onnx")
    document = json.loads(sidecar.read_text())
    change(document)
    sidecar.write_text(json.dumps(document))
    target = sidecar if command == "inspect" else folder / "pair.onnx"
    result = run_cli(command, target)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
