"""`check --target tensorrt`: every node against TensorRT's ONNX operator table, without a GPU."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

from fusedinf_cc.compiler.tensorrt_support import check_tensorrt_support, support_table
from tests.support import builders
from tests.support.builders import FLOAT
from tests.support.commands import run_cli


# operator check ---------------------------------------------------------------------------------
def _checked(tmp_path: Path, model: onnx.ModelProto):
    return check_tensorrt_support(builders.save(model, tmp_path / "m.onnx"))


def _messages(report) -> list[tuple[str, str, str]]:
    return [(f.severity, f.op, f.message) for f in report.findings]


def test_the_support_table_is_data_with_its_version():
    table = support_table()
    assert table.tensorrt.startswith("10.")
    assert table.operators["Conv"] and table.operators["Unique"] is None
    assert (table.opset_min, table.opset_max) == (9, 24)


def test_clean_model_passes(tmp_path):
    report = _checked(tmp_path, builders.affine(0))
    assert report.ok and report.findings == [] and report.nodes == 3


def test_unsupported_ops_custom_domains_and_attributes_are_errors(tmp_path):
    nodes = [
        helper.make_node("Unique", ["x"], ["u"], name="uniq"),
        helper.make_node(
            "MaxPool", ["img"], ["p"], kernel_shape=[2, 2], dilations=[2, 2], name="pool"
        ),
        helper.make_node("Resize", ["p", "", "scales"], ["r"], mode="cubic", name="up"),
        helper.make_node("TopK", ["x", "k"], ["v", "i"], sorted=0, name="topk"),
        helper.make_node("Shape", ["x"], ["k"], start=0, end=1, name="shape"),
        helper.make_node("Fancy", ["x"], ["f"], domain="vendor", name="fancy"),
    ]
    model = builders.make_model(
        nodes,
        [
            helper.make_tensor_value_info("x", FLOAT, [8]),
            helper.make_tensor_value_info("img", FLOAT, [1, 1, 8, 8]),
        ],
        [
            helper.make_tensor_value_info(name, FLOAT, None)
            if name != "i"
            else helper.make_tensor_value_info(name, TensorProto.INT64, None)
            for name in ("u", "r", "v", "i", "f")
        ],
        [builders.tensor("scales", np.array([1, 1, 2, 2], np.float32))],
        extra_opsets=[helper.make_opsetid("vendor", 1)],
    )
    onnx.save(model, tmp_path / "m.onnx")  # the custom op fails onnx's checker by design
    report = check_tensorrt_support(tmp_path / "m.onnx")
    errors = {(f.op, f.message) for f in report.errors}
    assert ("Unique", "TensorRT 10.15's ONNX parser has no Unique") in errors
    assert any(op == "MaxPool" and "dilation" in m for op, m in errors)
    assert any(op == "Resize" and "mode='cubic'" in m for op, m in errors)
    assert any(op == "TopK" and "sorted=0" in m for op, m in errors)
    assert any(op == "TopK" and "`K` must be a constant" in m for op, m in errors)
    assert any(op == "Fancy" and "plugin" in m for op, m in errors)
    assert not report.ok


def test_types_double_casts_and_profiles(tmp_path):
    model = builders.make_model(
        [
            helper.make_node("MatMul", ["a", "b"], ["c"], name="int_matmul"),
            helper.make_node("Relu", ["d"], ["e"], name="double_relu"),
        ],
        [
            helper.make_tensor_value_info("a", TensorProto.INT64, ["n", 4]),
            helper.make_tensor_value_info("b", TensorProto.INT64, [4, 4]),
            helper.make_tensor_value_info("d", TensorProto.DOUBLE, [4]),
        ],
        [
            helper.make_tensor_value_info("c", TensorProto.INT64, ["n", 4]),
            helper.make_tensor_value_info("e", TensorProto.DOUBLE, [4]),
        ],
    )
    findings = _messages(_checked(tmp_path, model))
    assert (
        "error",
        "MatMul",
        "input a is INT64; TensorRT's MatMul takes FP32, FP16, BF16",
    ) in findings
    assert any(
        s == "warning" and op == "Relu" and "casts it to float" in m for s, op, m in findings
    )
    assert any(s == "profile" and "--shapes a:1x4" in m for s, _, m in findings)


def test_subgraphs_and_local_functions_are_walked(tmp_path):
    function = helper.make_function(
        "local",
        "Odd",
        ["a"],
        ["b"],
        [helper.make_node("Det", ["a"], ["b"])],
        opset_imports=[helper.make_opsetid("", 17)],
    )
    model = builders.if_reading_outer(0)
    body = model.graph.node[-1].attribute[0].g
    body.node.insert(
        0, helper.make_node("Unique", [body.node[0].input[0]], ["unused_u"], name="deep")
    )
    model.graph.node.append(helper.make_node("Odd", ["y"], ["z"], domain="local", name="call"))
    model.graph.output.append(helper.make_tensor_value_info("z", FLOAT, None))
    model.functions.append(function)
    model.opset_import.append(helper.make_opsetid("local", 1))
    onnx.save(model, tmp_path / "m.onnx")
    ops = {f.op for f in check_tensorrt_support(tmp_path / "m.onnx").errors}
    assert ops == {"Unique", "Det"}


def test_check_cli_exit_codes(tmp_path):
    clean = builders.save(builders.affine(0, batch="n"), tmp_path / "clean.onnx")
    result = run_cli("check", "--target", "tensorrt", clean)
    assert result.returncode == 0, result.stderr
    assert "dynamic dims" in result.stdout and "nothing TensorRT would reject" in result.stdout
    bad = builders.make_model(
        [helper.make_node("Unique", ["x"], ["y"], name="uniq")],
        [helper.make_tensor_value_info("x", FLOAT, [4])],
        [helper.make_tensor_value_info("y", FLOAT, ["k"])],
    )
    result = run_cli("check", "--target", "tensorrt", builders.save(bad, tmp_path / "bad.onnx"))
    assert result.returncode == 1 and "uniq" in result.stdout and "1 findings" in result.stderr
    result = run_cli("check", "--target", "coreml", clean)
    assert result.returncode == 2 and "only tensorrt" in result.stderr
