"""Bad input: one line on stderr, exit code 2, no traceback, and no output file left behind."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

from tests.support import builders
from tests.support.commands import assert_clean_failure, run_cli


@pytest.fixture
def two_models(tmp_path: Path) -> tuple[Path, Path]:
    a = builders.save(builders.affine(0, width=8), tmp_path / "a.onnx")
    b = builders.save(builders.affine(1, width=4), tmp_path / "b.onnx")
    return a, b


def test_missing_file(tmp_path, two_models):
    out = tmp_path / "fused.onnx"
    result = run_cli("fuse", two_models[0], tmp_path / "nope.onnx", "-o", out)
    assert_clean_failure(result, out, mentions="nope.onnx: no such file")


def test_non_onnx_file(tmp_path, two_models):
    text = tmp_path / "notes.onnx"
    text.write_text("these are not the weights you are looking for\n")
    out = tmp_path / "fused.onnx"
    result = run_cli("fuse", two_models[0], text, "-o", out)
    assert_clean_failure(result, out, mentions="notes.onnx: not a")


def test_truncated_protobuf(tmp_path, two_models):
    whole = two_models[0].read_bytes()
    truncated = tmp_path / "cut.onnx"
    truncated.write_bytes(whole[: len(whole) // 2])
    out = tmp_path / "fused.onnx"
    result = run_cli("fuse", two_models[1], truncated, "-o", out)
    assert_clean_failure(result, out, mentions="cut.onnx")


def test_duplicate_names(tmp_path, two_models):
    out = tmp_path / "fused.onnx"
    a, b = two_models
    result = run_cli("fuse", f"m={a}", f"m={b}", "-o", out)
    assert_clean_failure(result, out, mentions="model name 'm' is used twice")


def test_duplicate_stems_from_two_folders(tmp_path, two_models):
    other = tmp_path / "other"
    other.mkdir()
    (other / "a.onnx").write_bytes(two_models[1].read_bytes())
    out = tmp_path / "fused.onnx"
    result = run_cli("fuse", two_models[0], other / "a.onnx", "-o", out)
    assert_clean_failure(result, out, mentions="NAME=PATH")


def test_model_name_with_a_slash(tmp_path, two_models):
    out = tmp_path / "fused.onnx"
    result = run_cli("fuse", f"a/b={two_models[0]}", two_models[1], "-o", out)
    assert_clean_failure(result, out, mentions="model name 'a/b' is not allowed")


def test_output_folder_missing(tmp_path, two_models):
    out = tmp_path / "no" / "such" / "fused.onnx"
    result = run_cli("fuse", *two_models, "-o", out)
    assert_clean_failure(result, out, mentions="does not exist")


def test_output_under_a_file(tmp_path, two_models):
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    out = blocker / "fused.onnx"
    result = run_cli("fuse", *two_models, "-o", out)
    assert_clean_failure(result, out, mentions="fused.onnx")


def test_output_that_would_clobber_an_input(tmp_path, two_models):
    a, b = two_models
    before = a.read_bytes()
    result = run_cli("fuse", a, b, "-o", a)
    assert result.returncode == 2
    assert "would overwrite the input model" in result.stderr
    assert a.read_bytes() == before


def test_opset_that_cannot_be_converted(tmp_path, two_models):
    legacy = helper.make_model(
        helper.make_graph(
            [helper.make_node("ImageScaler", ["x"], ["y"], scale=2.0, name="scaler")],
            "legacy",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 4, 4])],
        ),
        opset_imports=[helper.make_opsetid("", 6)],
    )
    legacy.ir_version = 3
    onnx.save(legacy, tmp_path / "legacy.onnx")
    out = tmp_path / "fused.onnx"
    result = run_cli("fuse", two_models[0], tmp_path / "legacy.onnx", "-o", out)
    assert_clean_failure(result, out, mentions="operator ImageScaler (node 'scaler')")
    assert "from opset 6 to 17" in result.stderr


@pytest.mark.parametrize(
    ("share", "mentions"),
    [
        ("img=a.x,b.pixels", "model 'b' has no input 'pixels'"),
        ("img=a.x,c.x", "'c.x' names no model's input"),
        ("x=a.x,b.x", "dim 1: 4 vs 8"),  # a is 1x8, b is 1x4
    ],
    ids=["unknown-input", "unknown-model", "incompatible-shapes"],
)
def test_bad_share_input(tmp_path, two_models, share, mentions):
    out = tmp_path / "fused.onnx"
    result = run_cli("fuse", *two_models, "-o", out, "--share-input", share)
    assert_clean_failure(result, out, mentions=mentions)


def test_unknown_output_suffix(tmp_path, two_models):
    out = tmp_path / "fused.txt"
    result = run_cli("fuse", *two_models, "-o", out)
    assert_clean_failure(result, out, mentions="unknown suffix '.txt'")


def test_failed_fusion_leaves_an_existing_output_untouched(tmp_path, two_models):
    out = tmp_path / "fused.onnx"
    out.write_bytes(b"previous build")
    result = run_cli("fuse", *two_models, "-o", out, "--share-input", "x=a.x,b.x")
    assert result.returncode == 2
    assert out.read_bytes() == b"previous build"


@pytest.mark.parametrize(("flag", "value"), [("--atol", "-1"), ("--rtol", "nan")])
def test_verify_refuses_a_tolerance_no_output_could_meet(tmp_path, two_models, flag, value):
    fused = tmp_path / "fused.onnx"
    assert run_cli("fuse", *two_models, "-o", fused).returncode == 0
    result = run_cli("verify", fused, flag, value)
    assert_clean_failure(result, tmp_path / "none", mentions=f"{flag}: a tolerance is a finite")


def test_verify_without_a_manifest(tmp_path, two_models):
    result = run_cli("verify", two_models[0])
    assert result.returncode == 2
    assert "no manifest beside it" in result.stderr
    assert "Traceback" not in result.stderr


def test_inspect_a_missing_file(tmp_path):
    result = run_cli("inspect", tmp_path / "gone.onnx")
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: {tmp_path / 'gone.onnx'}: no such file"


def test_a_path_prints_as_written(tmp_path, two_models):
    missing = tmp_path / "model.onnx:x:"  # ":x:" is an emoji code to rich
    out = tmp_path / "fused.onnx"
    result = run_cli("fuse", two_models[0], missing, "-o", out)
    assert_clean_failure(result, out, mentions=f"{missing}: no such file")


@pytest.mark.parametrize(
    "command",
    [
        ("bench", "--json", "{missing}/report.json"),
        ("bench", "--plot", "{missing}/report.png"),
        ("simulate", "--synthetic", "--json", "{missing}/sim.json"),
        ("simulate", "--synthetic", "--save-trace", "{missing}/trace.csv"),
    ],
)
def test_reports_into_a_missing_folder_fail_before_the_work(tmp_path, two_models, command):
    missing = tmp_path / "gone"
    verb, *options = command
    args = [option.format(missing=missing) for option in options]
    result = run_cli(verb, *two_models, *args)
    assert_clean_failure(result, missing / "x", mentions=f"output folder {missing} does not exist")
    assert result.stdout == ""  # no table: nothing was measured first


def test_bench_refuses_negative_threads(tmp_path, two_models):
    result = run_cli("bench", *two_models, "--threads", "-1")
    assert_clean_failure(result, tmp_path / "none", mentions="--threads at least 0")


@pytest.mark.parametrize("output", ["fused.onnx", "fused.ort"])
def test_an_operator_onnx_runtime_lacks_fails_the_ahead_of_time_build(tmp_path, two_models, output):
    custom = helper.make_model(
        helper.make_graph(
            [helper.make_node("FancyOp", ["x"], ["y"], domain="com.example", name="fancy")],
            "custom",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        ),
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)],
    )
    path = tmp_path / "custom.onnx"
    onnx.save(custom, path)
    out = tmp_path / output
    aot = ["--aot"] if output.endswith(".onnx") else []
    result = run_cli("fuse", two_models[0], path, "-o", out, *aot)
    assert_clean_failure(result, out, mentions="com.example:FancyOp")
    assert not out.with_name(out.name + ".manifest.json").exists()


def test_simulate_refuses_a_model_name_twice_and_a_file_as_work_folder(tmp_path, two_models):
    work = tmp_path / "work"
    a, b = two_models
    twice = run_cli("simulate", a, b, f"a={b}", "--synthetic", "--work-dir", work)
    assert_clean_failure(twice, work, mentions="model name 'a' is used twice")
    a_file = tmp_path / "notes.txt"
    a_file.write_text("not a folder\n")
    result = run_cli("simulate", *two_models, "--synthetic", "--work-dir", a_file)
    assert_clean_failure(result, tmp_path / "none", mentions=f"--work-dir {a_file}: not a folder")
    assert a_file.read_text() == "not a folder\n"


@pytest.mark.parametrize(
    "command",
    [("run", "--loading", "eager"), ("simulate", "--synthetic", "--loading", "bulk,eager")],
)
def test_an_unknown_loading_policy_is_one_line(tmp_path, two_models, command):
    verb, *options = command
    models = two_models[:1] if verb == "run" else two_models
    result = run_cli(verb, *models, *options, *(["--work-dir", tmp_path] if verb != "run" else []))
    assert_clean_failure(result, tmp_path / "none", mentions="unknown loading policy 'eager'")


def test_verify_a_missing_file_says_so(tmp_path):
    result = run_cli("verify", tmp_path / "missing.onnx")
    assert_clean_failure(result, tmp_path / "none", mentions="missing.onnx: no such file")
