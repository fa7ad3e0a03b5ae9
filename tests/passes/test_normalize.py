"""normalize: one default-domain opset and IR version for every model, through onnx's converter
where needed, or a refusal that names the operator."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from fusedinf_cc.artifacts.manifest import read_manifest
from fusedinf_cc.common.errors import MergeError
from fusedinf_cc.compiler.build import build_fused
from tests.support import builders, oracle
from tests.support.commands import fuse_files, run_cli
from tests.support.oracle import assert_bitwise, compare_fused

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


def test_a_model_of_ml_operators_only_fuses_without_conversion(tmp_path):
    ml = builders.save(binarizer(1), tmp_path / "ml.onnx")
    affine = builders.save(builders.affine(0, width=4), tmp_path / "affine.onnx")
    out = tmp_path / "fused.onnx"
    manifest = build_fused([f"ml={ml}", f"affine={affine}"], out)
    assert "converted" not in manifest.passes[0].detail  # nothing to convert
    imports = {o.domain: o.version for o in onnx.load(out).opset_import}
    assert imports == {"": 17, ML: 1}
    got = oracle.outputs(out, {"ml/x": X, "affine/x": X})
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
    got = oracle.outputs(out, {"first/x": X, "second/x": X})
    assert all(np.array_equal(v, (X > 0.5).astype(np.float32)) for v in got.values())


def test_the_ml_domain_at_two_versions_takes_the_newer_where_no_schema_changed(tmp_path):
    old = builders.save(binarizer(1), tmp_path / "old.onnx")
    new = builders.save(binarizer(3), tmp_path / "new.onnx")
    out = tmp_path / "fused.onnx"
    manifest = build_fused([f"old={old}", f"new={new}"], out)
    assert f"old {ML} 1->3" in manifest.passes[0].detail
    assert {o.domain: o.version for o in onnx.load(out).opset_import}[ML] == 3
    got = oracle.outputs(out, {"old/x": X, "new/x": X})
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
    got = oracle.outputs(scan, {"initial": initial, "x": steps})
    np.testing.assert_array_equal(got["z"], np.cumsum(steps, axis=1))


def test_models_at_older_opsets_still_convert_and_match(tmp_path):
    old = builders.save(builders.affine(1, width=4, opset=11), tmp_path / "old.onnx")
    new = builders.save(builders.affine(2, width=4), tmp_path / "new.onnx")
    out = tmp_path / "fused.onnx"
    manifest = build_fused([f"old={old}", f"new={new}"], out)
    assert "converted old 11->17" in manifest.passes[0].detail
    assert read_manifest(tmp_path / "fused.onnx.manifest.json").opset == 17
    assert run_cli("verify", out).returncode == 0


def test_opset_picks_the_common_opset_up_or_down(tmp_path):
    relu = builders.save(builders.affine(0, width=4), tmp_path / "affine.onnx")  # opset 17
    ml = builders.save(binarizer(1), tmp_path / "ml.onnx")
    for opset in (15, 21):
        out = tmp_path / f"at{opset}.onnx"
        assert run_cli("fuse", relu, ml, "-o", out, "--opset", opset).returncode == 0
        assert {o.domain: o.version for o in onnx.load(out).opset_import}[""] == opset
        got = oracle.outputs(out, {"affine/x": X, "ml/x": X})
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
    from tests.support.commands import build_dist

    builders.save(builders.affine(0, width=4), tmp_path / "a.onnx")
    builders.save(builders.affine(1, width=4, opset=13), tmp_path / "b.onnx")
    dist = build_dist(
        tmp_path, '[bundles.pair]\nmodels = { a = "a.onnx", b = "b.onnx" }\nopset = 18\n'
    )
    assert {o.domain: o.version for o in onnx.load(dist / "pair" / "pair.onnx").opset_import} == {
        "": 18
    }


def test_mixed_opsets_and_ir_versions(tmp_path):
    specs = []
    for seed, (opset, ir_version) in enumerate([(11, 6), (13, 7), (17, 8)]):
        model = builders.affine(seed, opset=opset, ir_version=ir_version)
        specs.append((f"op{opset}", builders.save(model, tmp_path / f"op{opset}.onnx")))
    out = tmp_path / "fused.onnx"
    manifest = fuse_files(specs, out)
    fused = onnx.load(out)
    assert {o.domain: o.version for o in fused.opset_import}[""] == 17
    assert fused.ir_version >= 8
    assert "op11 11->17" in manifest.passes[0].detail
    assert "op13 13->17" in manifest.passes[0].detail
    assert_bitwise(out, manifest)


@pytest.mark.slow
def test_mixed_opsets_of_zoo_models(tmp_path, zoo):
    specs = [
        ("squeeze", zoo("squeezenet1_1", opset=11)),
        ("mobile", zoo("mobilenet_v3_small", opset=13)),
        ("head0", zoo("head0", opset=17)),
    ]
    out = tmp_path / "fused.onnx"
    manifest = fuse_files(specs, out)
    assert manifest.opset == 17
    errors = compare_fused(out, manifest)
    assert max(error for error, _ in errors.values()) <= 1e-5, errors


def test_custom_domain_at_two_versions_is_refused(tmp_path):
    def with_domain(version: int) -> onnx.ModelProto:
        model = builders.affine(version)
        model.opset_import.append(helper.make_opsetid("com.example", version))
        return model

    a = builders.save(with_domain(1), tmp_path / "a.onnx")
    b = builders.save(with_domain(2), tmp_path / "b.onnx")
    with pytest.raises(MergeError, match=r"com\.example"):
        fuse_files([("a", a), ("b", b)], tmp_path / "f.onnx")


def _global_mean(noop: int) -> onnx.ModelProto:
    """ReduceMean over H and W at opset 18, the axes an input and `noop_with_empty_axes` set,
    as torch's dynamo exporter writes every global average pooling."""
    return builders.make_model(
        [
            helper.make_node(
                "ReduceMean", ["x", "axes"], ["y"], keepdims=1, noop_with_empty_axes=noop,
                name="pool",
            )
        ],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 1, 1])],
        [builders.tensor("axes", np.array([2, 3], np.int64))],
        opset=18,
    )  # fmt: skip


def test_down_conversion_drops_an_attribute_the_older_opset_lacks_at_its_default(tmp_path):
    source = tmp_path / "pool.onnx"
    onnx.save(_global_mean(0), source)
    out = tmp_path / "pool17.onnx"
    manifest = build_fused([f"e={source}"], out, opset=17)
    node = onnx.load(str(out)).graph.node[0]
    assert node.op_type == "ReduceMean" and {a.name for a in node.attribute} == {"axes", "keepdims"}
    assert all(bitwise for _, bitwise in compare_fused(out, manifest).values())


def test_down_conversion_refuses_an_attribute_value_the_older_opset_cannot_express(tmp_path):
    source = tmp_path / "pool.onnx"
    onnx.save(_global_mean(1), source)
    with pytest.raises(MergeError, match=r"'e': operator ReduceMean \(node 'pool'\) has "):
        build_fused([f"e={source}"], tmp_path / "pool17.onnx", opset=17)
