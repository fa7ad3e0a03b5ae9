"""Footprints: measured once per artifact and machine in a fresh process, on inputs the model
accepts, and never written into a model folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from fusedinf_cc.artifacts.index import INDEX
from fusedinf_cc.artifacts.manifest import manifest_path_for
from fusedinf_cc.runtime.bundle import open_bundle
from fusedinf_cc.runtime.loader import BundleCache
from tests.support import builders
from tests.support.bundles import fused_pair_bundle
from tests.support.commands import run_cli


def test_a_model_that_refuses_random_inputs_is_measured_on_the_users_feeds(tmp_path):
    model = builders.picky_model(tmp_path / "picky.onnx")
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


def test_a_bundle_ships_representative_inputs_for_a_model_that_refuses_random_ones(
    tmp_path, monkeypatch
):
    (tmp_path / "models").mkdir()
    builders.picky_model(tmp_path / "models" / "picky.onnx")
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


def test_footprint_is_measured_once_and_never_written_into_the_manifest(tmp_path):
    path = fused_pair_bundle(tmp_path, "solo", 7, width=64)
    sidecar = manifest_path_for(path)
    manifest_bytes, stamp = sidecar.read_bytes(), sidecar.stat().st_mtime_ns
    first = open_bundle(path)
    assert first.footprint.measured_bytes > 0
    again = open_bundle(path)
    assert again.footprint == first.footprint  # from the footprint cache, not measured again
    assert sidecar.read_bytes() == manifest_bytes and sidecar.stat().st_mtime_ns == stamp


@pytest.mark.parametrize(
    "entry", ["zeros", "huge", "other-digest", "dev-zero", "fifo", "big", "curve", "curve-type"]
)
def test_a_cache_entry_in_doubt_is_measured_again(tmp_path, entry):
    """A record the cache did not write for these bytes on this machine, or one no load of
    them could have, is never trusted; reading it never hangs or fills memory."""
    from fusedinf_cc.runtime.footprint import FootprintCache

    artifact = fused_pair_bundle(tmp_path / "pair", "pair", seed=5, width=512)  # 2 MiB weights
    cache = FootprintCache(tmp_path / "cache")
    truth = open_bundle(artifact, footprints=cache).footprint
    (path,) = (tmp_path / "cache" / "footprints").iterdir()
    record = json.loads(path.read_text())
    path.unlink()
    if entry == "zeros":
        path.write_text(json.dumps(record | {"measured_bytes": 0, "activation_bytes": 0}))
    elif entry == "huge":
        path.write_text(json.dumps(record | {"measured_bytes": 2**61}))
    elif entry == "other-digest":  # right numbers for other bytes: wrong for these
        wrong = {"artifact_sha256": "0" * 64, "measured_bytes": 10 * truth.measured_bytes}
        path.write_text(json.dumps(record | wrong))
    elif entry == "dev-zero":
        path.symlink_to("/dev/zero")
    elif entry == "fifo":
        os.mkfifo(path)
    elif entry in ("curve", "curve-type"):  # growth that goes back, or is not a number
        curve = [[4.0, 100], [2.0, 5]] if entry == "curve" else [["4", 100]]
        wrong = {"measured_bytes": 10 * truth.measured_bytes, "activation_curve": curve}
        path.write_text(json.dumps(record | wrong))
    else:  # too large to be a record of ours, whatever it says
        wrong = {"measured_bytes": 10 * truth.measured_bytes}
        path.write_text(json.dumps(record | wrong) + " " * (2 << 20))
    again = open_bundle(artifact, footprints=cache).footprint
    assert 0.5 < again.measured_bytes / truth.measured_bytes < 2
