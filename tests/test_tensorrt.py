"""TensorRT: what runs without a GPU (options, profiles, compatibility, the operator check, the
CLI's refusals) is tested here; building and running engines needs `tensorrt` and a GPU."""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import TensorProto, helper

from fusedinf_cc.artifacts.manifest import Manifest
from fusedinf_cc.backends.base import TensorSpec
from fusedinf_cc.backends.tensorrt.compat import (
    EngineTarget,
    IncompatibleEngineError,
    check_engine_compatible,
)
from fusedinf_cc.backends.tensorrt.names import check_supported_tensorrt
from fusedinf_cc.backends.tensorrt.options import (
    EngineOptions,
    build_profiles,
    check_for_tensorrt,
    parse_engine_options,
    parse_mem_pool_sizes,
)
from fusedinf_cc.backends.tensorrt.parser_errors import ParserIssue, parser_error
from fusedinf_cc.common.errors import BackendUnavailableError, UserInputError
from fusedinf_cc.common.tolerances import (
    DEFAULT_ATOL,
    DEFAULT_RTOL,
    FP16_ATOL,
    FP16_RTOL,
    default_tolerances,
)
from fusedinf_cc.compiler.targets.tensorrt import model_for_builder, precision_record
from fusedinf_cc.compiler.tensorrt_support import check_tensorrt_support, support_table
from tests import builders
from tests.conftest import run_cli
from tests.test_cli_errors import assert_clean_failure

FLOAT = TensorProto.FLOAT


# options ----------------------------------------------------------------------------------------
def test_mem_pool_sizes_take_trtexec_names_and_units():
    pools = parse_mem_pool_sizes("workspace:2GiB,dlaSRAM:1MiB,tacticSharedMem:48KiB")
    assert pools == {"workspace": 2 * 2**30, "dlaSRAM": 2**20, "tacticSharedMem": 48 * 1024}
    with pytest.raises(UserInputError, match="POOL:SIZE with POOL one of workspace"):
        parse_mem_pool_sizes("scratch:1GiB")
    with pytest.raises(UserInputError, match="--mem-pool-size workspace"):
        parse_mem_pool_sizes("workspace:lots")


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ({"builder_opt_level": 6}, "use 0 to 5"),
        ({"hardware_compatibility": "turing+"}, "use one of none, ampere+"),
        ({"min_shapes": "x:1x8", "max_shapes": "x:4x8"}, "must name the same inputs"),
        (
            {
                "shapes": "x:1x8",
                "min_shapes": "x:1x8",
                "opt_shapes": "x:2x8",
                "max_shapes": "x:4x8",
            },
            "either --shapes or --min",
        ),
        ({"opt_shapes": "x:1xq"}, "--opt-shapes 'x:1xq'"),
    ],
)
def test_option_mistakes_are_one_line_errors(flags, message):
    with pytest.raises(UserInputError, match=message):
        parse_engine_options(**flags)


@pytest.mark.parametrize(
    ("flags", "version", "message"),
    [
        ({"strongly_typed": True, "fp16": True}, "10.3.0", "drop --fp16/--int8"),
        ({"weight_streaming": True}, "10.16.1.11", "--weight-streaming needs --strongly-typed"),
        ({"int8": True}, "10.3.0", "--int8 needs --calib-cache"),
        ({"hardware_compatibility": "same-compute-capability"}, "10.8.0", "needs TensorRT 10.9"),
        ({"int8": True, "calib_cache": "CACHE"}, "11.4.0.106", "has no INT8 calibrators"),
    ],
)
def test_what_one_tensorrt_version_cannot_build_is_refused_in_one_line(
    tmp_path, flags, version, message
):
    cache = tmp_path / "calib.cache"
    cache.write_bytes(b"TRT-1001-EntropyCalibration2\n")
    flags = {key: cache if value == "CACHE" else value for key, value in flags.items()}
    options = parse_engine_options(**flags)
    with pytest.raises(UserInputError, match=message):
        check_for_tensorrt(options, version)


@pytest.mark.parametrize(
    ("flags", "version"),
    [
        ({"strongly_typed": True, "fp16": True}, "11.4.0.106"),  # 11: fp16 is the graph's
        ({"weight_streaming": True}, "11.0.0"),  # 11: every network is strongly typed
        ({"int8": True}, "11.4.0.106"),  # 11: scales from Q/DQ nodes, checked at build
        ({"hardware_compatibility": "same-compute-capability"}, "10.9.0.34"),
        ({"fp16": True, "hardware_compatibility": "ampere+"}, "10.3.0"),
    ],
)
def test_what_a_tensorrt_version_can_build_passes(flags, version):
    check_for_tensorrt(parse_engine_options(**flags), version)


def test_calibration_cache_must_exist_and_go_with_int8(tmp_path):
    with pytest.raises(UserInputError, match="no such file"):
        parse_engine_options(int8=True, calib_cache=tmp_path / "missing.cache")
    cache = tmp_path / "calib.cache"
    cache.write_bytes(b"TRT-1001-EntropyCalibration2\n")
    with pytest.raises(UserInputError, match="only used with --int8"):
        parse_engine_options(calib_cache=cache)
    options = parse_engine_options(int8=True, calib_cache=cache, builder_opt_level=0)
    assert options.to_record()["calib_cache"] == "calib.cache"
    assert options.to_record()["builder_opt_level"] == 0


# profiles ---------------------------------------------------------------------------------------
INPUTS = [
    TensorSpec("image", np.dtype(np.float32), ("batch", 3, 224, 224)),
    TensorSpec("mask", np.dtype(np.int64), (1, 16)),
]


def test_fixed_shapes_give_a_profile_with_min_opt_max_equal():
    (profile,) = build_profiles(INPUTS, parse_engine_options(shapes="image:4x3x224x224"))
    assert (profile.name, profile.min, profile.opt, profile.max) == (
        "image",
        (4, 3, 224, 224),
        (4, 3, 224, 224),
        (4, 3, 224, 224),
    )


def test_ranges_cover_each_dynamic_input_and_skip_static_ones():
    options = parse_engine_options(
        min_shapes="image:1x3x224x224",
        opt_shapes="image:8x3x224x224",
        max_shapes="image:16x3x224x224",
    )
    (profile,) = build_profiles(INPUTS, options)
    assert profile.min[0] == 1 and profile.opt[0] == 8 and profile.max[0] == 16


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (
            {},
            r"input 'image' has dynamic dims \(batchx3x224x224\): give --shapes image:1x3x224x224",
        ),
        ({"shapes": "image:1x3x224"}, "does not fit the model's batchx3x224x224"),
        ({"shapes": "image:1x1x224x224"}, "does not fit"),
        ({"shapes": "image:0x3x224x224"}, "at least 1"),
        ({"shapes": "image:1x3x224x224,label:1"}, r"unknown inputs \['label'\]"),
        ({"shapes": "image:1x3x224x224,mask:1x8"}, "'mask': shape 1x8 does not fit"),
        (
            {
                "min_shapes": "image:4x3x224x224",
                "opt_shapes": "image:2x3x224x224",
                "max_shapes": "image:8x3x224x224",
            },
            "min <= opt <= max",
        ),
    ],
)
def test_profile_mistakes_name_the_input(flags, message):
    with pytest.raises(UserInputError, match=message):
        build_profiles(INPUTS, parse_engine_options(**flags))


# compatibility ----------------------------------------------------------------------------------
ORIN = EngineTarget("10.3.0", "8.7", "Orin")


@pytest.mark.parametrize(
    ("built", "here", "problem"),
    [
        (ORIN, EngineTarget("10.3.0", "8.7", "Orin"), None),
        (ORIN, EngineTarget("10.7.0", "8.7", "Orin"), "TensorRT versions differ"),
        (ORIN, EngineTarget("10.3.0", "8.9", "RTX 4090"), "compute capabilities differ"),
        (
            EngineTarget("10.3.0", "8.7", version_compatible=True),
            EngineTarget("10.7.0", "8.7"),
            None,
        ),
        (
            EngineTarget("10.7.0", "8.7", version_compatible=True),
            EngineTarget("10.3.0", "8.7"),
            "same or a later TensorRT",
        ),
        (
            EngineTarget("10.3.0", "8.7", version_compatible=True),
            EngineTarget("11.0.0", "8.7"),
            "same or a later TensorRT",
        ),
        (
            EngineTarget("10.3.0", "8.7", hardware_compatibility="ampere+"),
            EngineTarget("10.3.0", "9.0"),
            None,
        ),
        (
            EngineTarget("10.3.0", "8.7", hardware_compatibility="ampere+"),
            EngineTarget("10.3.0", "7.5"),
            "Ampere or newer",
        ),
    ],
)
def test_engine_compatibility(built, here, problem):
    if problem is None:
        check_engine_compatible(built, here, "fused.engine")
        return
    with pytest.raises(IncompatibleEngineError) as raised:
        check_engine_compatible(built, here, "fused.engine")
    message = str(raised.value)
    assert problem in message
    assert f"built for TensorRT {built.tensorrt} on compute capability {built.compute_capability}"
    assert f"this machine has TensorRT {here.tensorrt}" in message
    assert "rebuild it here" in message and "\n" not in message


def test_device_record_round_trips_through_the_manifest():
    target = EngineTarget("10.3.0", "8.7", "Orin", version_compatible=True)
    manifest = Manifest(models=[], device=target.to_record())
    again = Manifest.from_dict(json.loads(manifest.to_json()))
    assert EngineTarget.from_record(again.device) == target
    assert "device" not in manifest.to_dict(reproducible=True)


# parser errors ----------------------------------------------------------------------------------
@dataclass
class RecordedParserError:
    """The fields of a tensorrt.IParserError, as TensorRT reports them (methods, not attributes)."""

    index: int
    name: str
    op: str
    text: str

    def node(self) -> int:
        return self.index

    def node_name(self) -> str:
        return self.name

    def node_operator(self) -> str:
        return self.op

    def desc(self) -> str:
        return self.text


def test_parser_errors_name_each_node_op_and_reason():
    issues = [
        ParserIssue.from_parser_error(RecordedParserError(i, f"cls/n{i}", "Unique", "no importer"))
        for i in range(7)
    ]
    message = str(parser_error("fused.onnx", issues))
    assert message.startswith(
        "TensorRT's ONNX parser rejected fused.onnx: node 0 'cls/n0' (Unique)"
    )
    assert "no importer" in message and "and 2 more" in message and "\n" not in message
    whole_model = ParserIssue.from_parser_error(RecordedParserError(-1, "", "", "bad protobuf"))
    assert whole_model.describe() == "bad protobuf"


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


# the CLI without TensorRT -----------------------------------------------------------------------
NO_TENSORRT = importlib.util.find_spec("tensorrt") is None


@pytest.mark.skipif(not NO_TENSORRT, reason="tests the refusal on a machine without tensorrt")
def test_engine_output_without_tensorrt_says_what_to_install(tmp_path):
    a = builders.save(builders.affine(0), tmp_path / "a.onnx")
    out = tmp_path / "fused.engine"
    result = run_cli("fuse", a, "-o", out, "--fp16")
    assert_clean_failure(result, out, mentions="TensorRT is not installed")
    assert "JetPack" in result.stderr and "fusedinf-cc[tensorrt]" in result.stderr


def test_engine_options_on_an_onnx_output_are_refused(tmp_path):
    a = builders.save(builders.affine(0), tmp_path / "a.onnx")
    out = tmp_path / "fused.onnx"
    result = run_cli("fuse", a, "-o", out, "--fp16")
    assert_clean_failure(result, out, mentions="apply to .engine outputs only")


def test_bad_engine_option_fails_before_any_model_is_read(tmp_path):
    out = tmp_path / "fused.engine"
    result = run_cli("fuse", tmp_path / "missing.onnx", "-o", out, "--mem-pool-size", "vram:1GiB")
    assert_clean_failure(result, out, mentions="--mem-pool-size 'vram:1GiB'")


def test_weight_streaming_budget_is_for_engines_only(tmp_path):
    a = builders.save(builders.affine(0), tmp_path / "a.onnx")
    result = run_cli("run", a, "--weight-streaming-budget", "64MiB")
    assert result.returncode == 2 and "applies to TensorRT engines" in result.stderr
    result = run_cli("run", a, "--weight-streaming-budget", "much")
    assert result.returncode == 2 and "--weight-streaming-budget 'much'" in result.stderr


def test_tensorrt_backend_needs_an_engine(tmp_path):
    a = builders.save(builders.affine(0), tmp_path / "a.onnx")
    result = run_cli("bench", a, "--backend", "tensorrt")
    assert result.returncode == 2 and "benches an engine" in result.stderr


def test_gpu_providers_missing_from_onnxruntime_are_named(tmp_path):
    ort = pytest.importorskip("onnxruntime", reason="needs ONNX Runtime")
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this ONNX Runtime has the CUDA provider")
    a = builders.save(builders.affine(0), tmp_path / "a.onnx")
    fuse = run_cli("fuse", a, "-o", tmp_path / "f.onnx")
    assert fuse.returncode == 0, fuse.stderr
    result = run_cli("run", tmp_path / "f.onnx", "--backend", "ort-cuda")
    assert result.returncode == 2
    assert "has no CUDAExecutionProvider" in result.stderr and "onnxruntime-gpu" in result.stderr


# on a GPU with TensorRT -------------------------------------------------------------------------
def _gpu_reason() -> str | None:
    if NO_TENSORRT:
        return "needs the tensorrt package (JetPack on a Jetson, or `pip install tensorrt`)"
    try:
        from fusedinf_cc.backends.tensorrt.device import open_device

        open_device()
    except Exception as error:  # no CUDA library or no GPU: say which
        return f"needs a CUDA GPU ({error})"
    return None


needs_gpu = pytest.mark.skipif(_gpu_reason() is not None, reason=str(_gpu_reason()))


@needs_gpu
def test_engine_builds_runs_and_matches_the_separate_models(tmp_path):
    a = builders.save(builders.affine(0, batch="n"), tmp_path / "a.onnx")
    b = builders.save(builders.affine(1, batch="n", width=4), tmp_path / "b.onnx")
    out = tmp_path / "fused.engine"
    cache = tmp_path / "timing.cache"
    result = run_cli(
        "fuse", a, b, "-o", out, "--shapes", "a/x:2x8,b/x:2x4", "--timing-cache", cache
    )
    assert result.returncode == 0, result.stderr
    assert cache.is_file() and cache.stat().st_size > 0
    manifest = json.loads(out.with_name(out.name + ".manifest.json").read_text())
    assert manifest["artifact"]["backend"] == "tensorrt"
    assert manifest["device"]["tensorrt"] and manifest["device"]["compute_capability"]
    assert manifest["footprint"]["device_memory_bytes"] >= 0
    verify = run_cli("verify", out, "--shapes", "a/x:2x8,b/x:2x4", "--atol", "1e-3")
    assert verify.returncode == 0, verify.stdout + verify.stderr


@needs_gpu
def test_an_engine_from_another_tensorrt_is_refused_before_deserializing(tmp_path):
    a = builders.save(builders.affine(0), tmp_path / "a.onnx")
    out = tmp_path / "fused.engine"
    assert run_cli("fuse", a, "-o", out).returncode == 0
    sidecar = out.with_name(out.name + ".manifest.json")
    data = json.loads(sidecar.read_text())
    data["device"]["tensorrt"] = "9.0.0"
    sidecar.write_text(json.dumps(data))
    result = run_cli("run", out)
    assert result.returncode == 2 and "built for TensorRT 9.0.0" in result.stderr


def test_engine_options_default_to_none():
    assert EngineOptions().to_record()["hardware_compatibility"] == "none"


@needs_gpu
def test_a_dynamic_batch_profile_serves_every_batch_in_range(tmp_path):
    a = builders.save(builders.affine(0, batch="n"), tmp_path / "a.onnx")
    out = tmp_path / "dyn.engine"
    ranges = ("--min-shapes", "a/x:1x8", "--opt-shapes", "a/x:2x8", "--max-shapes", "a/x:4x8")
    assert run_cli("fuse", a, "-o", out, *ranges).returncode == 0
    from fusedinf_cc.backends.sessions import open_session

    session = open_session(out)
    reference = pytest.importorskip("onnxruntime").InferenceSession(str(a))
    for batch in (1, 3, 4):
        x = np.random.default_rng(batch).standard_normal((batch, 8)).astype(np.float32)
        got = session.run({"a/x": x})["a/y"]
        np.testing.assert_allclose(got, reference.run(None, {"x": x})[0], rtol=1e-3, atol=1e-3)
    with pytest.raises(UserInputError, match="outside the engine's profile"):
        session.run({"a/x": np.zeros((5, 8), np.float32)})
    session.close()


@needs_gpu
def test_parser_rejections_name_the_node(tmp_path):
    bad = builders.make_model(
        [helper.make_node("Unique", ["x"], ["y"], name="dedupe_ids")],
        [helper.make_tensor_value_info("x", FLOAT, [4])],
        [helper.make_tensor_value_info("y", FLOAT, ["k"])],
    )
    source = builders.save(bad, tmp_path / "bad.onnx")
    out = tmp_path / "bad.engine"
    result = run_cli("fuse", source, "-o", out)
    assert_clean_failure(result, out, mentions="(Unique)")
    assert "dedupe_ids" in result.stderr


@needs_gpu
def test_weight_streaming_engine_runs_under_a_small_budget(tmp_path):
    a = builders.save(builders.affine(0, width=512), tmp_path / "a.onnx")
    out = tmp_path / "ws.engine"
    assert run_cli("fuse", a, "-o", out, "--strongly-typed", "--weight-streaming").returncode == 0
    result = run_cli("run", out, "--weight-streaming-budget", "64KiB")
    assert result.returncode == 0, result.stderr


@needs_gpu
def test_an_fp16_engine_verifies_at_fp16_tolerances(tmp_path):
    """TensorRT 10 sets the FP16 flag; 11 builds the graph converted to FP16."""
    a = builders.save(builders.affine(0), tmp_path / "a.onnx")
    b = builders.save(builders.small_cnn(1), tmp_path / "b.onnx")
    out = tmp_path / "half.engine"
    result = run_cli("fuse", a, b, "-o", out, "--fp16")
    assert result.returncode == 0, result.stderr
    manifest = json.loads(out.with_name(out.name + ".manifest.json").read_text())
    assert manifest["build_options"]["fp16"] is True
    verify = run_cli("verify", out)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert f"rtol={FP16_RTOL:g}" in verify.stdout


@needs_gpu
def test_a_version_compatible_engine_builds_and_runs(tmp_path):
    a = builders.save(builders.affine(0), tmp_path / "a.onnx")
    out = tmp_path / "vc.engine"
    result = run_cli("fuse", a, "-o", out, "--version-compatible")
    assert result.returncode == 0, result.stderr
    assert run_cli("verify", out).returncode == 0


@needs_gpu
def test_bench_compares_a_fused_engine_with_engines_of_its_sources(tmp_path):
    a = builders.save(builders.affine(0), tmp_path / "a.onnx")
    b = builders.save(builders.affine(1), tmp_path / "b.onnx")
    out = tmp_path / "f.engine"
    assert run_cli("fuse", a, b, "-o", out).returncode == 0
    report = tmp_path / "bench.json"
    result = run_cli(
        "bench", "--fused", out, "--backend", "tensorrt", "--runs", "5", "--json", report
    )
    assert result.returncode == 0, result.stderr
    data = json.loads(report.read_text())
    assert data["environment"]["backend"] == "tensorrt"
    assert all(c["gpu_bytes"] is not None for c in data["configs"])


# TensorRT 10 and 11: versions, and precision from the graph ------------------------------------
@pytest.mark.parametrize("version", ["8.6.2", "10.2.0", "12.0.0", "unknown"])
def test_an_unsupported_tensorrt_is_refused_naming_the_range(version):
    with pytest.raises(BackendUnavailableError, match=r"TensorRT 10\.3 to 11\.x"):
        check_supported_tensorrt(version)


@pytest.mark.parametrize("version", ["10.3.0", "10.16.1.11", "11.4.0.106", "10.7.0.post1"])
def test_a_supported_tensorrt_passes(version):
    check_supported_tensorrt(version)


def _fused(tmp_path: Path) -> ir.Model:
    a = builders.save(builders.affine(0, batch="n"), tmp_path / "a.onnx")
    b = builders.save(builders.small_cnn(1), tmp_path / "b.onnx")
    out = tmp_path / "fused.onnx"
    result = run_cli("fuse", a, b, "-o", out)
    assert result.returncode == 0, result.stderr
    return ir.load(out)


def test_fp16_for_tensorrt_11_converts_the_graph_and_keeps_its_interface(tmp_path):
    ort = pytest.importorskip("onnxruntime", reason="runs both graphs on ONNX Runtime")
    fused = _fused(tmp_path)
    half = model_for_builder(fused, EngineOptions(fp16=True), "11.4.0.106", "fused.engine")
    assert model_for_builder(fused, EngineOptions(fp16=True), "10.3.0", "f.engine") is fused

    def interface(model: ir.Model) -> list[tuple[str, ir.DataType | None]]:
        return [(v.name, v.dtype) for v in [*model.graph.inputs, *model.graph.outputs]]

    assert interface(half) == interface(fused)
    weights = [v.const_value.dtype for v in half.graph.initializers.values() if v.const_value]
    assert ir.DataType.FLOAT16 in weights and ir.DataType.FLOAT not in weights
    half_path = tmp_path / "half.onnx"
    ir.save(half, half_path)
    sessions = [
        ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        for path in (tmp_path / "fused.onnx", half_path)
    ]
    rng = np.random.default_rng(0)
    feeds = {
        i.name: rng.standard_normal([d if isinstance(d, int) else 2 for d in i.shape]).astype(
            np.float32
        )
        for i in sessions[0].get_inputs()
    }
    runs = [
        dict(zip([o.name for o in s.get_outputs()], s.run(None, feeds), strict=True))
        for s in sessions
    ]
    full, reduced = runs
    for name, expected in full.items():
        assert reduced[name].dtype == np.float32
        np.testing.assert_allclose(reduced[name], expected, rtol=FP16_RTOL, atol=FP16_ATOL)
    # FP16 is not FP32: the defaults would fail what FP16's tolerances pass.
    assert not all(
        np.allclose(reduced[name], expected, rtol=DEFAULT_RTOL, atol=DEFAULT_ATOL)
        for name, expected in full.items()
    )
    assert default_tolerances({"fp16": True}) == (FP16_RTOL, FP16_ATOL)
    assert default_tolerances({"fp16": False}) == (DEFAULT_RTOL, DEFAULT_ATOL)


def test_int8_for_tensorrt_11_needs_qdq_nodes(tmp_path):
    fused = _fused(tmp_path)
    with pytest.raises(UserInputError, match="takes its scales from Q/DQ nodes"):
        model_for_builder(fused, EngineOptions(int8=True), "11.4.0.106", "fused.engine")
    scale, zero = builders.tensor("s", np.float32(0.05)), builders.tensor("z", np.int8(0))
    quantized = builders.make_model(
        [
            helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
            helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"]),
        ],
        [helper.make_tensor_value_info("x", FLOAT, [4])],
        [helper.make_tensor_value_info("y", FLOAT, [4])],
        [scale, zero],
    )
    model = ir.serde.deserialize_model(quantized)
    kept = model_for_builder(model, EngineOptions(int8=True), "11.4.0.106", "q.engine")
    assert kept is model


def test_the_manifest_says_where_precision_came_from():
    assert precision_record(EngineOptions(fp16=True), "11.4.0.106") == {
        "precision_from": "fp16 graph"
    }
    assert precision_record(EngineOptions(fp16=True), "10.3.0") == {
        "precision_from": "builder flags"
    }
    assert precision_record(EngineOptions(strongly_typed=True), "10.3.0") == {
        "precision_from": "graph types"
    }
