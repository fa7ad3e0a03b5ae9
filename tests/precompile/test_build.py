"""`bundle build`: fuse, build every target, verify, and write dist folders, skipping what is
unchanged."""

from __future__ import annotations

import json
from dataclasses import replace

from onnx import TensorProto, helper

from fusedinf_cc.precompile.build import cache_key
from fusedinf_cc.precompile.spec import read_spec
from tests.support import builders
from tests.support.commands import run_cli

FLOAT = TensorProto.FLOAT


def test_build_verifies_writes_and_then_skips_unchanged_bundles(project):
    report = project / "report.json"
    first = run_cli(
        "bundle", "build", "fusedinf.toml", "--out", "dist", "--json", report, cwd=project
    )
    assert first.returncode == 0, first.stderr
    dist = project / "dist"
    assert sorted(p.name for p in (dist / "pair").iterdir()) == [
        "bundle.json",
        "pair.onnx",
        "pair.onnx.manifest.json",
        "pair.ort",
        "pair.ort.manifest.json",
        "pair.part-a.onnx",  # what a request for model a runs
        "pair.part-a.ort",
        "pair.part-b.onnx",
        "pair.part-b.ort",
    ]
    data = json.loads(report.read_text())
    assert data["ok"] and {b["status"] for b in data["bundles"]} == {"built"}
    assert all(v["ok"] for b in data["bundles"] for v in b["verify"])
    stamp = (dist / "pair" / "pair.onnx").stat().st_mtime_ns

    second = run_cli("bundle", "build", "fusedinf.toml", "--out", "dist", cwd=project)
    assert second.returncode == 0 and "nothing to do" in second.stdout
    assert (dist / "pair" / "pair.onnx").stat().st_mtime_ns == stamp

    builders.save(builders.affine(7, batch="n"), project / "models" / "b.onnx")
    third = run_cli(
        "bundle", "build", "fusedinf.toml", "--out", "dist", "--json", report, cwd=project
    )
    assert third.returncode == 0, third.stderr
    statuses = {b["name"]: b["status"] for b in json.loads(report.read_text())["bundles"]}
    assert statuses == {"pair": "built", "solo": "cached"}


def test_an_aot_bundle_is_built_for_this_cpu_and_keyed_by_it(project):
    (project / "fusedinf.toml").write_text(
        '[bundles.pair]\nmodels = { a = "models/a.onnx", b = "models/b.onnx" }\naot = true\n'
    )
    result = run_cli("bundle", "build", "fusedinf.toml", "--out", "dist", cwd=project)
    assert result.returncode == 0, result.stderr
    manifest = json.loads((project / "dist" / "pair" / "pair.onnx.manifest.json").read_text())
    assert manifest["build_options"]["aot"] is True and manifest["device"]["kind"] == "cpu"
    spec = read_spec(project / "fusedinf.toml")
    portable = replace(spec.bundles["pair"], aot=False)
    assert cache_key(spec.bundles["pair"]) != cache_key(portable)
    assert run_cli("bundle", "verify", project / "dist").returncode == 0
    exported = run_cli("export", "triton", "dist/pair", "-o", "repo", cwd=project)
    assert exported.returncode == 2 and "aot = true" in exported.stderr
    assert not (project / "repo" / "pair").exists()


def test_fused_onnx_is_byte_identical_across_builds(project):
    for out in ("one", "two"):
        result = run_cli(
            "bundle", "build", "fusedinf.toml", "--out", out, "--targets", "onnx", cwd=project
        )
        assert result.returncode == 0, result.stderr
    for name in ("pair/pair.onnx", "solo/solo.onnx"):
        assert (project / "one" / name).read_bytes() == (project / "two" / name).read_bytes()


def test_parallel_jobs_build_the_same_bundles(project):
    result = run_cli(
        "bundle", "build", "fusedinf.toml", "--out", "dist", "--jobs", "2", cwd=project
    )
    assert result.returncode == 0, result.stderr
    verify = run_cli("bundle", "verify", "dist", cwd=project)
    assert verify.returncode == 0 and "2 bundles intact" in verify.stdout


def test_a_bundle_that_fails_verification_exits_1_and_is_not_written(project):
    noisy = builders.make_model(
        [
            helper.make_node("RandomUniformLike", ["x"], ["r"], name="noise"),
            helper.make_node("Add", ["x", "r"], ["y"], name="add"),
        ],
        [helper.make_tensor_value_info("x", FLOAT, [1, 8])],
        [helper.make_tensor_value_info("y", FLOAT, [1, 8])],
    )
    builders.save(noisy, project / "models" / "noisy.onnx")
    # Random kernels draw seeds in graph order: fused, the second model's draw differs from
    # the draw it makes alone, as a real fusion bug would make an output differ.
    (project / "fusedinf.toml").write_text(
        '[bundles.noisy]\nmodels = { n = "models/noisy.onnx", m = "models/noisy.onnx" }\n'
    )
    result = run_cli("bundle", "build", "fusedinf.toml", "--out", "dist", cwd=project)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "noisy.onnx differs from its sources:" in result.stderr
    assert not (project / "dist" / "noisy").exists()
