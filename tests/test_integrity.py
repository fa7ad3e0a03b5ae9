"""An artifact is a set of files; no reader trusts one of them alone, and numbers and paths read
from files are checked before anything waits on them or serves them."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper

from fusedinf_cc.artifacts.index import INDEX, verify_bundle_dir
from fusedinf_cc.artifacts.manifest import manifest_path_for
from fusedinf_cc.common.errors import UserInputError
from fusedinf_cc.compiler.build import build_fused
from fusedinf_cc.runtime.bundle import open_bundle
from fusedinf_cc.runtime.loader import BundleCache
from tests import builders
from tests.conftest import build_dist, run_cli

pytest.importorskip("onnxruntime", reason="needs ONNX Runtime")


def _pair(folder: Path, seed: int, width: int = 64) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    specs = []
    for name, offset in (("a", 0), ("b", 1)):
        path = folder / f"{name}.onnx"
        builders.save(builders.affine(seed * 10 + offset, width=width), path)
        specs.append(f"{name}={path}")
    return specs


@pytest.mark.parametrize("aot", [False, True])
def test_a_side_file_from_another_build_is_refused_not_run(tmp_path, aot):
    """The state an interrupted overwrite leaves: this build's model and manifest beside the
    next build's side file. Without the side file's digest it loads and answers wrongly."""
    out = tmp_path / "ow.onnx"
    other = tmp_path / "other" / "ow.onnx"
    width = 64 if aot else 1100  # a portable model keeps weights under 8 MiB inside itself
    build_fused(_pair(tmp_path / "m0", 0, width), out, aot=aot)
    other.parent.mkdir()
    build_fused(_pair(tmp_path / "m1", 1, width), other, aot=aot)
    side = out.with_name(out.name + ".data")
    assert side.is_file()
    assert run_cli("run", out).returncode == 0
    shutil.copyfile(other.with_name(other.name + ".data"), side)
    result = run_cli("run", out)
    assert result.returncode == 2, result.stdout
    assert "differs from the one it was built with" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    side.unlink()
    with pytest.raises(UserInputError, match="is missing"):
        open_bundle(out)


def test_verify_fails_a_manifest_that_names_no_model_or_leaves_an_output_unclaimed(tmp_path):
    out = tmp_path / "fused.onnx"
    build_fused(_pair(tmp_path / "m", 0), out)
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


@pytest.mark.parametrize("budget", ["abc", None, math.nan, True, -1, 0, 1.5])
def test_the_loader_refuses_a_budget_that_is_not_a_positive_number_of_bytes(budget):
    with pytest.raises(UserInputError, match="positive number of bytes"):
        BundleCache(budget_bytes=budget)  # type: ignore[arg-type]


def test_register_takes_a_str_or_any_path_like(tmp_path):
    out = tmp_path / "fused.onnx"
    build_fused(_pair(tmp_path / "m", 0), out)
    cache = BundleCache(1 << 30)
    assert cache.register(str(out)).name == "fused"
    outputs = cache.run("a", {"x": np.ones((1, 64), np.float32)})
    assert outputs["y"].shape == (1, 64)


@pytest.fixture
def dist(tmp_path: Path) -> Path:
    _pair(tmp_path / "models", 0)
    return build_dist(
        tmp_path,
        '[bundles.pair]\nmodels = { a = "models/a.onnx", b = "models/b.onnx" }\n',
    )


@pytest.mark.parametrize("where", ["absolute", "climbs"])
def test_a_bundle_index_cannot_name_a_file_outside_its_folder(dist, tmp_path, where):
    from fusedinf_cc.serve.app import register_dist

    outside = tmp_path / "elsewhere.onnx"
    shutil.copyfile(dist / "pair" / "pair.onnx", outside)
    index_file = dist / "pair" / INDEX
    index = json.loads(index_file.read_text())
    index["artifacts"][0]["path"] = str(outside) if where == "absolute" else "../../elsewhere.onnx"
    index_file.write_text(json.dumps(index))
    with pytest.raises(UserInputError, match="not a file of this bundle"):
        register_dist(BundleCache(1 << 30), dist, "ort-cpu")
    assert any("not a file of this bundle" in p for p in verify_bundle_dir(dist / "pair"))
    assert run_cli("bundle", "verify", dist).returncode == 1


def test_a_built_bundle_hashes_its_manifests_too(dist):
    manifest = dist / "pair" / "pair.onnx.manifest.json"
    assert manifest.name in json.loads((dist / "pair" / INDEX).read_text())["files"]
    manifest.write_text(manifest.read_text().replace('"a/x"', '"a/z"'))
    assert any("sha256 differs" in p for p in verify_bundle_dir(dist / "pair"))


def test_a_request_that_can_never_fit_fails_at_once_rather_than_waiting(tmp_path):
    """Accounting that cannot be met (here a budget lowered below a registered bundle) is an
    error for the request, never a wait that nothing will end."""
    out = tmp_path / "fused.onnx"
    build_fused(_pair(tmp_path / "m", 0), out)
    cache = BundleCache(1 << 30)
    bundle = cache.register(out)
    cache.budget_bytes = bundle.footprint.measured_bytes // 2
    raised: list[BaseException] = []

    def request() -> None:
        try:
            cache.run("a", {"x": np.ones((1, 64), np.float32)})
        except UserInputError as error:
            raised.append(error)

    worker = threading.Thread(target=request, daemon=True)
    worker.start()
    worker.join(timeout=60)
    assert not worker.is_alive(), "the request waited for room that could never come"
    assert raised and "does not fit the budget" in str(raised[0])


def test_an_engine_manifest_with_a_negative_size_is_refused(tmp_path):
    engine = tmp_path / "fused.engine"
    engine.write_bytes(b"not a real plan")
    manifest = {
        "format": "fusedinf-bundle/1",
        "models": [],
        "footprint": {"engine_bytes": 10, "device_memory_bytes": -(10**15)},
    }
    manifest_path_for(engine).write_text(json.dumps(manifest))
    with pytest.raises(UserInputError, match="not a number of bytes"):
        open_bundle(engine)


def _picky_model(path: Path) -> Path:
    """y = table[idx] for a table of two rows: like a sample rate that must be 8000 or 16000,
    the random integers a footprint measurement draws (0..7) are mostly refused."""
    model = builders.make_model(
        [helper.make_node("Gather", ["table", "idx"], ["y"], axis=0)],
        [helper.make_tensor_value_info("idx", TensorProto.INT64, [4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 3])],
        [builders.tensor("table", np.arange(6, dtype=np.float32).reshape(2, 3))],
    )
    return builders.save(model, path)


def test_a_model_that_refuses_random_inputs_is_measured_on_the_users_feeds(tmp_path):
    model = _picky_model(tmp_path / "picky.onnx")
    refused = run_cli("run", model)
    assert refused.returncode == 2 and "--inputs FEEDS.npz" in refused.stderr, refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1 and "Traceback" not in refused.stderr

    feeds = tmp_path / "feeds.npz"
    np.savez(feeds, idx=np.array([0, 1, 1, 0], np.int64))
    ran = run_cli("run", model, "--inputs", feeds)
    assert ran.returncode == 0, ran.stderr
    # Measured now and kept: a later request with bad values fails as a request, in one line.
    bad = tmp_path / "bad.npz"
    np.savez(bad, idx=np.array([0, 7, 1, 0], np.int64))
    failed = run_cli("run", model, "--inputs", bad)
    assert failed.returncode == 2 and "cannot run it on these inputs" in failed.stderr
    assert len(failed.stderr.strip().splitlines()) == 1 and "Traceback" not in failed.stderr


def test_a_single_array_npy_feeds_a_model_of_one_input(tmp_path):
    model = _picky_model(tmp_path / "picky.onnx")
    one = tmp_path / "idx.npy"
    np.save(one, np.array([1, 0, 0, 1], np.int64))
    assert run_cli("run", model, "--inputs", one).returncode == 0
    out = tmp_path / "fused.onnx"
    build_fused(_pair(tmp_path / "m", 0), out)
    np.save(one, np.ones((1, 64), np.float32))
    result = run_cli("verify", out, "--inputs", one)
    assert result.returncode == 2 and ".npz keyed by input names" in result.stderr


def test_a_bundle_ships_representative_inputs_for_a_model_that_refuses_random_ones(
    tmp_path, monkeypatch
):
    (tmp_path / "models").mkdir()
    _picky_model(tmp_path / "models" / "picky.onnx")
    good = np.array([1, 0, 0, 1], np.int64)
    np.savez(tmp_path / "feeds.npz", **{"picky/idx": good})  # by the bundle's fused names
    np.savez(tmp_path / "model_feeds.npz", idx=good)  # by the model's own
    spec = tmp_path / "fusedinf.toml"
    spec.write_text('[bundles.vad]\nmodels = { picky = "models/picky.onnx" }\n')
    refused = run_cli("bundle", "build", spec, "--out", tmp_path / "dist")
    assert refused.returncode == 2 and "cannot run it on these inputs" in refused.stderr

    spec.write_text(
        '[bundles.vad]\nmodels = { picky = "models/picky.onnx" }\ninputs = "feeds.npz"\n'
    )
    built = run_cli("bundle", "build", spec, "--out", tmp_path / "dist")
    assert built.returncode == 0, built.stderr
    folder = tmp_path / "dist" / "vad"
    assert json.loads((folder / INDEX).read_text())["inputs"] == "inputs.npz"
    assert run_cli("bundle", "verify", tmp_path / "dist").returncode == 0
    # A request for the model alone: the bundle's footprint is measured on what it ships.
    env = {**os.environ, "FUSEDINF_CACHE_DIR": str(tmp_path / "fresh-cache")}
    ran = subprocess.run(
        [sys.executable, "-m", "fusedinf_cc", "run", folder / "vad.onnx", "--model", "picky",
         "--inputs", tmp_path / "model_feeds.npz"], capture_output=True, text=True, env=env,
        check=False,
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    benched = run_cli(
        "bench", "--fused", folder / "vad.onnx", "--inputs", tmp_path / "feeds.npz",
        "--runs", "2", "--warmup", "0", "--rounds", "1",
    )  # fmt: skip
    assert benched.returncode == 0, benched.stderr
    pytest.importorskip("starlette", reason="needs the serve extra")
    from fusedinf_cc.serve.app import register_dist

    monkeypatch.setenv("FUSEDINF_CACHE_DIR", str(tmp_path / "serve-cache"))
    cache = BundleCache(1 << 30)
    assert register_dist(cache, tmp_path / "dist", "ort-cpu") == ["vad"]  # measured as shipped
    assert cache.run("picky", {"idx": good})["y"].shape == (4, 3)


@pytest.mark.parametrize("field", ["path", "external_data"])
def test_a_manifest_cannot_name_a_file_outside_its_folder(tmp_path, field):
    out = tmp_path / "fused.onnx"
    build_fused(_pair(tmp_path / "m", 0), out, aot=True)
    sidecar = manifest_path_for(out)
    manifest = json.loads(sidecar.read_text())
    manifest["artifact"][field] = "../../etc/passwd"
    sidecar.write_text(json.dumps(manifest))
    with pytest.raises(UserInputError, match="not a plain file name"):
        open_bundle(out)
    result = run_cli("run", out)
    assert result.returncode == 2 and "not a plain file name" in result.stderr
