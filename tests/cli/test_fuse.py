"""`fuse` and `inspect` as a user runs them: the passes explained, side files, the ORT format."""

from __future__ import annotations

import json

from tests.support import builders
from tests.support.commands import assert_clean_failure, fuse_pair, run_cli


def test_fuse_explain_reports_every_pass(tmp_path):
    _, result = fuse_pair(tmp_path, "--explain", "--share-inputs", "auto")
    for name in ("normalize", "prefix", "merge", "share", "dedup", "cse", "cleanup"):
        assert name in result.stdout
    assert "x <- a.x, second.x" in result.stdout
    manifest = json.loads((tmp_path / "fused.onnx.manifest.json").read_text())
    assert manifest["format"] == "fusedinf-bundle/1"
    assert [m["name"] for m in manifest["models"]] == ["a", "second"]
    assert manifest["models"][1]["source"] == "b.onnx"
    assert manifest["artifact"]["sha256"]


def test_inspect_shows_the_per_model_map(tmp_path):
    out, _ = fuse_pair(tmp_path)
    result = run_cli("inspect", out)
    assert result.returncode == 0, result.stderr
    assert "second/y" in result.stdout and "per-model map" in result.stdout
    result = run_cli("inspect", tmp_path / "fused.onnx.manifest.json")
    assert result.returncode == 0 and "second/x" in result.stdout


def test_large_weights_go_to_a_side_file_unless_single_file_is_asked(tmp_path):
    # 2 x 1100 x 1100 float32 weights: past the 8 MiB at which ONNX Runtime loads faster from
    # a side file.
    a = builders.save(builders.affine(0, width=1100), tmp_path / "a.onnx")
    b = builders.save(builders.affine(1, width=1100), tmp_path / "b.onnx")
    split, single = tmp_path / "split.onnx", tmp_path / "single.onnx"
    assert run_cli("fuse", a, b, "-o", split).returncode == 0
    assert run_cli("fuse", a, b, "-o", single, "--single-file").returncode == 0
    data = tmp_path / "split.onnx.data"
    assert data.stat().st_size > 2 * 1100 * 1100 * 4
    assert split.stat().st_size < 64 * 1024
    assert single.stat().st_size > 2 * 1100 * 1100 * 4
    assert not (tmp_path / "single.onnx.data").exists()
    manifest = json.loads((tmp_path / "split.onnx.manifest.json").read_text())
    assert manifest["artifact"]["external_data"] == "split.onnx.data"
    # Each model's part points into the same side file: it writes no weight again.
    parts = {part["model"]: tmp_path / part["path"] for part in manifest["parts"]}
    assert sorted(parts) == ["a", "b"]
    assert all(path.stat().st_size < 64 * 1024 for path in parts.values())
    assert json.loads((tmp_path / "single.onnx.manifest.json").read_text())["parts"] == []
    # Two outputs, and with a side file the two parts that serve one model each.
    for artifact, compared in ((split, 4), (single, 2)):
        result = run_cli("verify", artifact)
        assert result.returncode == 0 and result.stdout.count("bitwise") == compared, result.stdout


def test_ort_format_artifact_verifies_and_records_how_it_was_built(tmp_path):
    a = builders.save(builders.affine(0), tmp_path / "a.onnx")
    b = builders.save(builders.affine(1), tmp_path / "b.onnx")
    out = tmp_path / "fused.ort"
    result = run_cli("fuse", a, b, "-o", out)
    assert result.returncode == 0, result.stderr
    manifest = json.loads((tmp_path / "fused.ort.manifest.json").read_text())
    assert manifest["build_options"] == {
        "format": "ort",
        "graph_optimization_level": "all",
        "aot": True,
    }
    assert manifest["device"]["kind"] == "cpu" and manifest["device"]["isa"]
    assert run_cli("verify", out).returncode == 0


def test_a_bundle_named_like_one_of_its_models_is_refused_at_fuse(tmp_path):
    a = builders.save(builders.affine(0), tmp_path / "a.onnx")
    b = builders.save(builders.affine(1), tmp_path / "b.onnx")
    out = tmp_path / "out" / "a.onnx"
    out.parent.mkdir()
    result = run_cli("fuse", a, b, "-o", out)
    assert_clean_failure(result, out, mentions="the bundle would be named 'a', like one of its")
    alone = tmp_path / "out" / "b.onnx"
    assert run_cli("fuse", b, "-o", alone).returncode == 0  # a bundle of the model alone may


def test_one_model_is_counted_as_one(tmp_path):
    a = builders.save(builders.affine(0), tmp_path / "a.onnx")
    result = run_cli("fuse", a, "-o", tmp_path / "one.onnx")
    assert result.returncode == 0 and "(" in result.stdout
    assert "1 model, 1 output)" in result.stdout
