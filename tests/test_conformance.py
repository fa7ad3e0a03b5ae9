"""Valid models of the kinds ONNX's own conformance cases hold, fused and checked against their
expected outputs (computed here, not taken from ONNX Runtime)."""

from __future__ import annotations

import shutil

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from fusedinf_cc.artifacts.manifest import read_manifest
from fusedinf_cc.common.errors import MergeError
from fusedinf_cc.compiler.build import build_fused
from tests import builders, conformance_sweep
from tests.conftest import run_cli

ML = "ai.onnx.ml"
X = np.array([[0.1, 0.6, 0.5, 0.9]], np.float32)


def binarizer(ml_version: int) -> onnx.ModelProto:
    """y = x > 0.5: an `ai.onnx.ml`-only model, as sklearn exports them (no default domain)."""
    graph = helper.make_graph(
        [helper.make_node("Binarizer", ["x"], ["y"], domain=ML, threshold=0.5)],
        "binarizer",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid(ML, ml_version)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def label_encoder_v1() -> onnx.ModelProto:
    """`LabelEncoder` as ai.onnx.ml 1 defined it (classes_strings); version 2 redefined it."""
    graph = helper.make_graph(
        [
            helper.make_node(
                "LabelEncoder",
                ["x"],
                ["y"],
                domain=ML,
                classes_strings=["a", "b"],
                default_int64=-1,
            )
        ],
        "encoder",
        [helper.make_tensor_value_info("x", TensorProto.STRING, [2])],
        [helper.make_tensor_value_info("y", TensorProto.INT64, [2])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid(ML, 1)])
    model.ir_version = 8
    return model


def scan_opset8() -> onnx.ModelProto:
    """A running sum with the opset-8 `Scan`, whose inputs carry a batch axis that opset 9
    removed: converting it changes the model's interface."""
    body = helper.make_graph(
        [
            helper.make_node("Add", ["sum_in", "next"], ["sum_out"]),
            helper.make_node("Identity", ["sum_out"], ["scan_out"]),
        ],
        "body",
        [
            helper.make_tensor_value_info("sum_in", TensorProto.FLOAT, [2]),
            helper.make_tensor_value_info("next", TensorProto.FLOAT, [2]),
        ],
        [
            helper.make_tensor_value_info("sum_out", TensorProto.FLOAT, [2]),
            helper.make_tensor_value_info("scan_out", TensorProto.FLOAT, [2]),
        ],
    )
    graph = helper.make_graph(
        [helper.make_node("Scan", ["", "initial", "x"], ["y", "z"], num_scan_inputs=1, body=body)],
        "scan",
        [
            helper.make_tensor_value_info("initial", TensorProto.FLOAT, [1, 2]),
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 2]),
        ],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2]),
            helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 3, 2]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 8)])
    model.ir_version = 4
    onnx.checker.check_model(model, full_check=True)
    return model


def _run(path, feeds):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds), strict=True))


def test_a_model_of_ml_operators_only_fuses_without_conversion(tmp_path):
    ml = builders.save(binarizer(1), tmp_path / "ml.onnx")
    affine = builders.save(builders.affine(0, width=4), tmp_path / "affine.onnx")
    out = tmp_path / "fused.onnx"
    manifest = build_fused([f"ml={ml}", f"affine={affine}"], out)
    assert "converted" not in manifest.passes[0].detail  # nothing to convert
    imports = {o.domain: o.version for o in onnx.load(out).opset_import}
    assert imports == {"": 17, ML: 1}
    got = _run(out, {"ml/x": X, "affine/x": X})
    np.testing.assert_array_equal(got["ml/y"], (X > 0.5).astype(np.float32))
    weight, bias = (onnx.numpy_helper.to_array(t) for t in onnx.load(affine).graph.initializer)
    np.testing.assert_allclose(got["affine/y"], np.maximum(X @ weight + bias, 0), rtol=1e-6)
    assert run_cli("verify", out).returncode == 0


def test_models_that_all_import_only_the_ml_domain_fuse(tmp_path):
    first = builders.save(binarizer(1), tmp_path / "first.onnx")
    second = builders.save(binarizer(1), tmp_path / "second.onnx")
    out = tmp_path / "fused.onnx"
    build_fused([f"first={first}", f"second={second}"], out)
    # The default opset of the release that brought ai.onnx.ml 1, raised to one ONNX Runtime
    # guarantees; only what the passes themselves add can use it.
    assert {o.domain: o.version for o in onnx.load(out).opset_import} == {"": 7, ML: 1}
    got = _run(out, {"first/x": X, "second/x": X})
    assert all(np.array_equal(v, (X > 0.5).astype(np.float32)) for v in got.values())


def test_the_ml_domain_at_two_versions_takes_the_newer_where_no_schema_changed(tmp_path):
    old = builders.save(binarizer(1), tmp_path / "old.onnx")
    new = builders.save(binarizer(3), tmp_path / "new.onnx")
    out = tmp_path / "fused.onnx"
    manifest = build_fused([f"old={old}", f"new={new}"], out)
    assert f"old {ML} 1->3" in manifest.passes[0].detail
    assert {o.domain: o.version for o in onnx.load(out).opset_import}[ML] == 3
    got = _run(out, {"old/x": X, "new/x": X})
    assert all(np.array_equal(v, (X > 0.5).astype(np.float32)) for v in got.values())


def test_the_ml_domain_at_two_versions_is_refused_where_a_schema_changed(tmp_path):
    old = tmp_path / "old.onnx"
    onnx.save(label_encoder_v1(), old)
    new = builders.save(binarizer(4), tmp_path / "new.onnx")
    with pytest.raises(MergeError, match=rf"operator LabelEncoder changed between {ML} versions 1"):
        build_fused([f"old={old}", f"new={new}"], tmp_path / "fused.onnx")


def test_a_conversion_that_changes_a_models_interface_is_refused(tmp_path):
    scan = builders.save(scan_opset8(), tmp_path / "scan.onnx")
    affine = builders.save(builders.affine(0, width=4), tmp_path / "affine.onnx")
    out = tmp_path / "fused.onnx"
    result = run_cli("fuse", f"scan={scan}", f"affine={affine}", "-o", out)
    assert result.returncode == 2 and result.stderr.strip().count("\n") == 0, result.stderr
    assert "changes 'initial' from FLOAT [1,2] to FLOAT [2] by operator Scan" in result.stderr
    assert not out.exists()
    # Alone, it runs as exported: the running sums over its three steps.
    initial = np.zeros((1, 2), np.float32)
    steps = np.arange(6, dtype=np.float32).reshape(1, 3, 2)
    got = _run(scan, {"initial": initial, "x": steps})
    np.testing.assert_array_equal(got["z"], np.cumsum(steps, axis=1))


def test_models_at_older_opsets_still_convert_and_match(tmp_path):
    old = builders.save(builders.affine(1, width=4, opset=11), tmp_path / "old.onnx")
    new = builders.save(builders.affine(2, width=4), tmp_path / "new.onnx")
    out = tmp_path / "fused.onnx"
    manifest = build_fused([f"old={old}", f"new={new}"], out)
    assert "converted old 11->17" in manifest.passes[0].detail
    assert read_manifest(tmp_path / "fused.onnx.manifest.json").opset == 17
    assert run_cli("verify", out).returncode == 0


def test_the_fused_model_is_held_to_no_stricter_check_than_its_sources(tmp_path):
    """`MeanVarianceNormalization` is a function op whose body fails onnx's full check (its
    `Constant`), yet ONNX Runtime runs it: beside it, the fused model gets the structural check
    (a failure on an operator no source fails on is still refused)."""
    mvn_graph = helper.make_graph(
        [helper.make_node("MeanVarianceNormalization", ["x"], ["y"])],
        "mvn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 3, 3, 1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 3, 3, 1])],
    )
    mvn = helper.make_model(mvn_graph, opset_imports=[helper.make_opsetid("", 13)])
    mvn.ir_version = 7
    with pytest.raises(onnx.shape_inference.InferenceError):
        onnx.checker.check_model(mvn, full_check=True)  # the source fails it alone
    onnx.save(mvn, tmp_path / "mvn.onnx")
    mean_graph = helper.make_graph(
        [helper.make_node("Mean", ["a", "b"], ["c"])],
        "mean",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [3]) for n in ("a", "b")],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, [3])],
    )
    mean = helper.make_model(mean_graph, opset_imports=[helper.make_opsetid("", 13)])
    mean.ir_version = 7
    onnx.save(mean, tmp_path / "mean.onnx")
    out = tmp_path / "fused.onnx"
    manifest = build_fused([f"mvn={tmp_path / 'mvn.onnx'}", f"mean={tmp_path / 'mean.onnx'}"], out)
    assert "shape inference fails on source mvn too" in manifest.passes[-1].detail
    x = np.random.default_rng(0).standard_normal((3, 3, 3, 1)).astype(np.float32)
    a, b = np.array([1, 2, 3], np.float32), np.array([3, 4, 7], np.float32)
    got = _run(out, {"mvn/x": x, "mean/a": a, "mean/b": b})
    centred = x - x.mean(axis=(0, 2, 3), keepdims=True)
    expected = centred / np.sqrt((centred**2).mean(axis=(0, 2, 3), keepdims=True))
    np.testing.assert_allclose(got["mvn/y"], expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(got["mean/c"], (a + b) / 2)


def test_a_check_failure_that_no_source_shares_is_not_excused(tmp_path):
    from fusedinf_cc.onnx_io.model_io import load_sources
    from fusedinf_cc.passes.cleanup import _sources_failing_alike

    affine = builders.save(builders.affine(0, width=4), tmp_path / "affine.onnx")
    (member,) = load_sources([("affine", affine)])
    failure = "[ShapeInferenceError] Inference error(s): (op_type:MatMul): incompatible shapes"
    assert _sources_failing_alike([member], failure) == []


def test_opset_picks_the_common_opset_up_or_down(tmp_path):
    relu = builders.save(builders.affine(0, width=4), tmp_path / "affine.onnx")  # opset 17
    ml = builders.save(binarizer(1), tmp_path / "ml.onnx")
    for opset in (15, 21):
        out = tmp_path / f"at{opset}.onnx"
        assert run_cli("fuse", relu, ml, "-o", out, "--opset", opset).returncode == 0
        assert {o.domain: o.version for o in onnx.load(out).opset_import}[""] == opset
        got = _run(out, {"affine/x": X, "ml/x": X})
        np.testing.assert_array_equal(got["ml/y"], (X > 0.5).astype(np.float32))
        assert run_cli("verify", out).returncode == 0
    newest = onnx.defs.onnx_opset_version()
    result = run_cli("fuse", relu, ml, "-o", tmp_path / "bad.onnx", "--opset", newest + 1)
    assert result.returncode == 2 and f"choose an opset from 1 to {newest}" in result.stderr
    # Down to where onnx's converter has no adapter: one line naming the operator.
    result = run_cli("fuse", relu, ml, "-o", tmp_path / "low.onnx", "--opset", 13)
    assert result.returncode == 2 and "cannot be converted from opset 17 to 13" in result.stderr
    assert not (tmp_path / "bad.onnx").exists() and not (tmp_path / "low.onnx").exists()


def test_a_bundle_spec_names_its_opset(tmp_path):
    from tests.conftest import build_dist

    builders.save(builders.affine(0, width=4), tmp_path / "a.onnx")
    builders.save(builders.affine(1, width=4, opset=13), tmp_path / "b.onnx")
    dist = build_dist(
        tmp_path, '[bundles.pair]\nmodels = { a = "a.onnx", b = "b.onnx" }\nopset = 18\n'
    )
    assert {o.domain: o.version for o in onnx.load(dist / "pair" / "pair.onnx").opset_import} == {
        "": 18
    }


def _neighbouring_pairs() -> list[tuple[int, int]]:
    cases = conformance_sweep.runnable_cases()
    return [(i, i + 1) for i in range(0, len(cases) - 1, 2)]


def _sweep(pairs: list[tuple[int, int]], folder) -> list[str]:
    cases = conformance_sweep.runnable_cases()
    outcomes = []
    for index, (i, j) in enumerate(pairs):
        where = folder / f"pair{index}"
        outcome = conformance_sweep.fuse_pair(cases[i], cases[j], where)
        outcomes.append(f"{outcome} [{cases[i].name} + {cases[j].name}]")
        shutil.rmtree(where)  # a sweep writes thousands of models
    return outcomes


@pytest.mark.parametrize("seed", [0, 1])
def test_random_pairs_of_onnxs_conformance_cases_fuse_and_match(tmp_path, seed):
    cases = conformance_sweep.runnable_cases()
    assert len(cases) > 1000  # the cases really were collected and run
    # Any two: operators of different opsets, so one side is converted to the other's.
    drawn = np.random.default_rng(seed).choice(len(cases), size=(40, 2), replace=False)
    outcomes = _sweep([(int(i), int(j)) for i, j in drawn], tmp_path)
    counted = conformance_sweep.tally(outcomes)
    assert counted["wrong"] == counted["crashed"] == 0, [o for o in outcomes if "equal" not in o]
    assert counted["equal"] >= 30


@pytest.mark.slow
def test_every_neighbouring_pair_and_a_thousand_random_ones_fuse_or_are_refused(tmp_path):
    cases = conformance_sweep.runnable_cases()
    drawn = np.random.default_rng(7).choice(len(cases), size=(1000, 2))
    pairs = _neighbouring_pairs() + [(int(i), int(j)) for i, j in drawn if i != j]
    outcomes = _sweep(pairs, tmp_path)
    counted = conformance_sweep.tally(outcomes)
    print(f"conformance pairs: {dict(counted)}")
    for outcome in outcomes:
        if not outcome.startswith("equal"):
            print(outcome)
    assert counted["wrong"] == counted["crashed"] == 0, [o for o in outcomes if "equal" not in o]


def image_decoder() -> onnx.ModelProto:
    """A valid opset-20 model whose one operator ONNX Runtime implements no CPU kernel for."""
    graph = helper.make_graph(
        [helper.make_node("ImageDecoder", ["encoded"], ["image"])],
        "decoder",
        [helper.make_tensor_value_info("encoded", TensorProto.UINT8, [None])],
        [helper.make_tensor_value_info("image", TensorProto.UINT8, [None, None, 3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    onnx.checker.check_model(model, full_check=True)
    return model


def test_fuse_says_at_once_when_the_installed_runtime_cannot_run_the_fused_model(tmp_path):
    decoder = builders.save(image_decoder(), tmp_path / "decoder.onnx")
    affine = builders.save(builders.affine(0, width=4), tmp_path / "affine.onnx")
    out = tmp_path / "fused.onnx"
    result = run_cli("fuse", f"decoder={decoder}", f"affine={affine}", "-o", out)
    assert result.returncode == 0, result.stderr
    (line,) = [x for x in result.stderr.splitlines() if x.startswith("warning:")]
    assert f"ONNX Runtime {ort.__version__} here has no CPU kernel for ImageDecoder-20" in line
    assert "--opset N" in line and out.exists()
    with pytest.raises(Exception, match="ImageDecoder"):  # what the warning foretold
        _run(out, {})
    # A fused model the runtime runs gets no warning.
    plain = run_cli("fuse", f"a={affine}", f"b={affine}", "-o", tmp_path / "plain.onnx")
    assert plain.returncode == 0 and "warning" not in plain.stderr
