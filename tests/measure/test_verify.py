"""`verify`: every fused output against its source model's, and what it refuses."""

from __future__ import annotations

import json

import numpy as np
import onnx
from onnx import numpy_helper

from fusedinf_cc.artifacts.manifest import manifest_path_for
from fusedinf_cc.compiler.build import build_fused
from tests.support import builders
from tests.support.commands import fuse_pair, run_cli


def test_verify_passes_on_a_faithful_fusion(tmp_path):
    out, _ = fuse_pair(tmp_path)
    result = run_cli("verify", out)
    assert result.returncode == 0, result.stderr
    assert "all 2 outputs match, and so do the 2 model parts" in result.stdout
    assert result.stdout.count("bitwise") == 4  # each output, from the whole and from its part


def test_verify_fails_and_says_where_when_an_output_differs(tmp_path):
    out, _ = fuse_pair(tmp_path)
    fused = onnx.load(out)
    for initializer in fused.graph.initializer:
        if initializer.name == "second/b":
            bias = numpy_helper.to_array(initializer) + np.float32(0.5)
            initializer.CopyFrom(numpy_helper.from_array(bias, initializer.name))
    onnx.save(fused, out)
    result = run_cli("verify", out)
    assert result.returncode == 1
    assert "MISMATCH" in result.stdout
    assert "mismatch: second.y" in result.stderr
    row = next(line for line in result.stdout.splitlines() if "second/y" in line)
    assert "0.5" in row  # the max abs error is the bias shift


def test_verify_with_inputs_from_npz(tmp_path):
    out, _ = fuse_pair(tmp_path)
    feeds = tmp_path / "feeds.npz"
    rng = np.random.default_rng(3)
    np.savez(
        feeds,
        **{
            "a/x": rng.standard_normal((1, 8)).astype(np.float32),
            "second/x": rng.standard_normal((1, 8)).astype(np.float32),
        },
    )
    assert run_cli("verify", out, "--inputs", feeds).returncode == 0
    np.savez(feeds, **{"a/x": np.zeros((1, 8), np.float32)})
    result = run_cli("verify", out, "--inputs", feeds)
    assert result.returncode == 2
    assert "missing ['second/x']" in result.stderr


def test_verify_fills_dynamic_dims_from_shapes(tmp_path):
    a = builders.save(builders.affine(0, batch="batch"), tmp_path / "a.onnx")
    b = builders.save(builders.affine(1, batch="batch"), tmp_path / "b.onnx")
    out = tmp_path / "fused.onnx"
    assert run_cli("fuse", a, b, "-o", out).returncode == 0
    result = run_cli("verify", out, "--shapes", "a/x:4x8,b/x:2x8")
    assert result.returncode == 0, result.stderr
    assert "4x8" in result.stdout and "2x8" in result.stdout
    result = run_cli("verify", out, "--shapes", "a/x:4x9")
    assert result.returncode == 2 and "does not fit" in result.stderr


def test_verify_refuses_a_source_that_changed(tmp_path):
    out, _ = fuse_pair(tmp_path)
    builders.save(builders.affine(7), tmp_path / "b.onnx")
    result = run_cli("verify", out)
    assert result.returncode == 2
    assert "changed since it was fused" in result.stderr


def test_verify_fails_a_manifest_that_names_no_model_or_leaves_an_output_unclaimed(tmp_path):
    out = tmp_path / "fused.onnx"
    build_fused(builders.affine_pair_specs(tmp_path / "m", 0), out)
    sidecar = manifest_path_for(out)
    manifest = json.loads(sidecar.read_text())
    kept = {**manifest, "models": manifest["models"][:1], "parts": manifest["parts"][:1]}
    sidecar.write_text(json.dumps(kept))
    result = run_cli("verify", out)
    assert result.returncode == 2 and "belong to no model" in result.stderr, result.stderr
    # A part for a model the manifest does not name is damage too.
    sidecar.write_text(json.dumps({**manifest, "models": manifest["models"][:1]}))
    result = run_cli("verify", out)
    assert result.returncode == 2 and "names no model of the bundle" in result.stderr
    sidecar.write_text(json.dumps({**manifest, "models": [], "parts": []}))
    result = run_cli("verify", out)
    assert result.returncode == 2 and "names no model" in result.stderr, result.stderr
    assert "match" not in result.stdout
