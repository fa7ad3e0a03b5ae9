"""The TensorRT target and engines: what fails in one line without TensorRT, and, on a GPU, engines
that build, run and match their sources."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
from onnx import helper

from fusedinf_cc.backends.tensorrt.options import (
    EngineOptions,
)
from fusedinf_cc.common.errors import UserInputError
from fusedinf_cc.common.tolerances import (
    FP16_RTOL,
)
from fusedinf_cc.compiler.targets.tensorrt import precision_record
from tests.support import builders
from tests.support.builders import FLOAT
from tests.support.commands import assert_clean_failure, run_cli

# the CLI without TensorRT -----------------------------------------------------------------------
NO_TENSORRT = importlib.util.find_spec("tensorrt") is None


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
