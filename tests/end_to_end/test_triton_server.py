"""Bundles exported for Triton, served by a real tritonserver (`tests/support/tritonserver.py`
says how).

Triton's own parts are real: the server, its config parser, explicit model control, batch
limits, requested outputs and its HTTP protocol, spoken to by `tritonclient`. The onnxruntime
backend is a stand-in (`tests/support/triton_stand_in_backend.py`); `tensorrt_plan` configs
stay checked against Triton's schema only (tests/export/test_triton.py).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.support import builders
from tests.support.commands import REPO, run_cli
from tests.support.tritonserver import TritonServer, backend_folder, triton_install

http = pytest.importorskip("tritonclient.http", reason="needs tritonclient[http] (dev extra)")
ort = pytest.importorskip("onnxruntime", reason="runs the sources for the expected outputs")
utils = pytest.importorskip("tritonclient.utils")

CACHE = Path(os.environ.get("FUSEDINF_TRITON_CACHE", REPO / ".cache" / "triton"))
pytestmark = [pytest.mark.slow, pytest.mark.network]


def _repository(tmp_path: Path) -> tuple[Path, Path]:
    """Three bundles exported into one repository, and the folder of their sources."""
    models = tmp_path / "models"
    models.mkdir()
    builders.save(builders.affine(0, batch="n"), models / "a.onnx")
    builders.save(builders.affine(1, batch="n"), models / "b.onnx")
    weight = np.random.default_rng(2).standard_normal((1500, 1500)).astype(np.float32)
    builders.save(builders.affine(2, width=1500, weight=weight), models / "big.onnx")
    (tmp_path / "fusedinf.toml").write_text(
        "[bundles.pair]\n"
        'models = { a = "models/a.onnx", b = "models/b.onnx" }\n'
        'share_inputs = "auto"\n'
        "\n"
        "[bundles.wide]\n"
        'models = { big = "models/big.onnx" }\n'
    )
    built = run_cli("bundle", "build", "fusedinf.toml", "--out", "dist", cwd=tmp_path)
    assert built.returncode == 0, built.stderr
    assert (tmp_path / "dist" / "wide" / "wide.onnx.data").is_file()  # a bundle with a side file
    for bundle in ("pair", "wide"):
        exported = run_cli("export", "triton", f"dist/{bundle}", "-o", "repo", cwd=tmp_path)
        assert exported.returncode == 0, exported.stderr
    return tmp_path / "repo", models


def _infer(client, model: str, x: np.ndarray, outputs: list[str] | None = None, name: str = "x"):
    tensor = http.InferInput(name, list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    wanted = [http.InferRequestedOutput(name) for name in outputs] if outputs else None
    return client.infer(model, [tensor], outputs=wanted)


def _expected(source: Path, x: np.ndarray) -> np.ndarray:
    return ort.InferenceSession(str(source), providers=["CPUExecutionProvider"]).run(
        None, {"x": x}
    )[0]


def test_exported_bundles_load_and_answer_on_a_real_tritonserver(tmp_path):
    repository, models = _repository(tmp_path)
    broken = repository / "broken"
    shutil.copytree(repository / "pair", broken)
    config = (broken / "config.pbtxt").read_text().replace('"pair"', '"broken"')
    (broken / "config.pbtxt").write_text(config.replace("TYPE_FP32", "TYPE_FLOAT32", 1))
    install = triton_install(CACHE)
    server = TritonServer(install, repository, backend_folder(install, tmp_path), tmp_path / "log")
    try:
        client = http.InferenceServerClient(server.url, connection_timeout=10, network_timeout=60)
        index = {entry["name"]: entry for entry in client.get_model_repository_index()}
        assert set(index) == {"pair", "wide", "broken"}
        assert not client.is_model_ready("pair")  # explicit control: nothing loads by itself

        client.load_model("pair")
        rng = np.random.default_rng(0)
        for batch in (1, 5, 8):  # the dynamic batch dim, up to max_batch_size
            x = rng.standard_normal((batch, 8)).astype(np.float32)
            result = _infer(client, "pair", x)
            for model in ("a", "b"):  # two models of one bundle
                expected = _expected(models / f"{model}.onnx", x)
                np.testing.assert_allclose(result.as_numpy(f"{model}/y"), expected, rtol=1e-6)
        only_b = _infer(client, "pair", x, outputs=["b/y"])
        assert only_b.as_numpy("a/y") is None and only_b.as_numpy("b/y").shape == (8, 8)
        with pytest.raises(utils.InferenceServerException, match="batch-size must be <= 8"):
            _infer(client, "pair", np.zeros((9, 8), np.float32))

        client.load_model("wide")
        x = rng.standard_normal((1, 1500)).astype(np.float32)
        np.testing.assert_allclose(
            _infer(client, "wide", x, name="big/x").as_numpy("big/y"),
            _expected(models / "big.onnx", x),
            rtol=1e-5,
            atol=1e-4,
        )

        with pytest.raises(utils.InferenceServerException, match="failed to load 'broken'"):
            client.load_model("broken")
        assert "TYPE_FLOAT32" in (tmp_path / "log").read_text()  # its parser says why
        assert not client.is_model_ready("broken") and client.is_model_ready("pair")

        client.unload_model("pair")
        assert not client.is_model_ready("pair")
        with pytest.raises(utils.InferenceServerException):
            _infer(client, "pair", x[:, :8])
        client.load_model("pair")
        x = rng.standard_normal((2, 8)).astype(np.float32)
        np.testing.assert_allclose(
            _infer(client, "pair", x).as_numpy("a/y"), _expected(models / "a.onnx", x), rtol=1e-6
        )
        client.close()
    finally:
        server.stop()
    assert server.process.returncode is not None
    assert not _processes_under(tmp_path), "a backend stub outlived the server"


def _processes_under(folder: Path) -> list[int]:
    """PIDs whose command line names `folder` (the server and its backend stubs do)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if str(folder) in command:
            found.append(int(entry.name))
    return found
