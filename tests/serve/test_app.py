"""`serve`: a real server process, spoken to by Triton's own HTTP client (tritonclient)."""

from __future__ import annotations

import dataclasses
import http.client as http_client
import json
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper

from fusedinf_cc.precompile.build import build_bundles
from fusedinf_cc.precompile.spec import read_spec
from tests.support import builders
from tests.support.serving import swapping_budget

http = pytest.importorskip("tritonclient.http", reason="needs tritonclient[http] (dev extra)")
pytest.importorskip("starlette", reason="needs the serve extra")
ort = pytest.importorskip("onnxruntime", reason="needs ONNX Runtime")

FLOAT = TensorProto.FLOAT


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _slow_model(iterations: int) -> object:
    """y = x @ I, repeated `iterations` times in a Loop: a request that takes a while."""
    body = helper.make_graph(
        [
            helper.make_node("MatMul", ["acc_in", "eye"], ["acc_out"]),
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
        ],
        "body",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("acc_in", FLOAT, [256, 256]),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("acc_out", FLOAT, [256, 256]),
        ],
    )
    return builders.make_model(
        [helper.make_node("Loop", ["trips", "", "x"], ["y"], body=body, name="loop")],
        [helper.make_tensor_value_info("x", FLOAT, [256, 256])],
        [helper.make_tensor_value_info("y", FLOAT, [256, 256])],
        [
            builders.tensor("trips", np.array(iterations, np.int64)),
            builders.tensor("eye", np.eye(256, dtype=np.float32)),
        ],
    )


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("serve")
    models = root / "models"
    models.mkdir()
    for seed in range(4):
        builders.save(builders.affine(seed, width=64), models / f"m{seed}.onnx")
    builders.save(_slow_model(6000), models / "slow.onnx")
    (root / "fusedinf.toml").write_text(
        "[bundles.pair]\n"
        'models = { a = "models/m0.onnx", b = "models/m1.onnx" }\n'
        "[bundles.other]\n"
        'models = { c = "models/m2.onnx", d = "models/m3.onnx" }\n'
        "[bundles.slow]\n"
        'models = { s = "models/slow.onnx" }\n'
    )
    spec = read_spec(root / "fusedinf.toml")
    results = build_bundles(list(spec.bundles.values()), root / "dist")
    assert all(r.status == "built" for r in results), results
    return root / "dist"


class Server:
    def __init__(self, dist: Path, *extra: str):
        self.port = _free_port()
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "fusedinf_cc",
                "serve",
                str(dist),
                "--port",
                str(self.port),
                *extra,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.client = http.InferenceServerClient(f"127.0.0.1:{self.port}", concurrency=8)
        deadline = time.monotonic() + 120  # registration measures each bundle's footprint once
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited: {self.process.stderr.read()}")  # type: ignore[union-attr]
            try:
                if self.client.is_server_live():
                    return
            except Exception:  # not listening yet
                time.sleep(0.2)
        raise RuntimeError("server did not start")

    def new_client(self):
        """tritonclient's HTTP client is gevent-based: one per thread."""
        return http.InferenceServerClient(f"127.0.0.1:{self.port}")

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def post(self, path: str, body: bytes) -> tuple[int, dict]:
        request = urllib.request.Request(self.url(path), data=body, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())

    def metrics(self) -> dict[str, float]:
        with urllib.request.urlopen(self.url("/metrics"), timeout=30) as response:
            text = response.read().decode()
        values = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                key, value = line.rsplit(" ", 1)
                values[key] = float(value)
        return values

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=60)


@pytest.fixture(scope="module")
def server(dist: Path) -> Iterator[Server]:
    running = Server(dist, "--budget", "1GiB", "--max-body", "1MiB")
    yield running
    running.stop()


def _input(name: str, array: np.ndarray, binary: bool):
    tensor = http.InferInput(name, list(array.shape), "FP32")
    tensor.set_data_from_numpy(array, binary_data=binary)
    return tensor


def _expected(dist: Path, model_file: str, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(dist.parent / "models" / model_file))
    return session.run(None, {"x": x})[0]


def test_health_and_metadata(server):
    assert server.client.is_server_live() and server.client.is_server_ready()
    metadata = server.client.get_model_metadata("pair")
    assert [i["name"] for i in metadata["inputs"]] == ["a/x", "b/x"]
    assert {o["name"] for o in metadata["outputs"]} == {"a/y", "b/y"}
    model = server.client.get_model_metadata("b")
    assert model["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [1, 64]}]
    assert [o["name"] for o in model["outputs"]] == ["y"]
    assert server.client.is_model_ready("pair") and server.client.is_model_ready("a")


@pytest.mark.parametrize("binary", [False, True])
def test_infer_matches_the_source_models(server, dist, binary):
    x = np.random.default_rng(0).standard_normal((1, 64)).astype(np.float32)
    result = server.client.infer(
        "pair",
        [_input("a/x", x, binary), _input("b/x", 2 * x, binary)],
        outputs=[http.InferRequestedOutput(name, binary_data=binary) for name in ("a/y", "b/y")],
    )
    np.testing.assert_array_equal(result.as_numpy("a/y"), _expected(dist, "m0.onnx", x))
    np.testing.assert_array_equal(result.as_numpy("b/y"), _expected(dist, "m1.onnx", 2 * x))
    alone = server.client.infer("c", [_input("x", x, binary)])
    assert [o["name"] for o in alone.get_response()["outputs"]] == ["y"]
    np.testing.assert_array_equal(alone.as_numpy("y"), _expected(dist, "m2.onnx", x))


def test_repository_load_unload(server):
    server.client.load_model("other")
    index = {entry["name"]: entry for entry in server.client.get_model_repository_index()}
    assert index["other"]["state"] == "READY" and index["other"]["resident"]
    server.client.unload_model("other")
    assert not server.client.is_model_ready("other") and not server.client.is_model_ready("c")
    index = {entry["name"]: entry for entry in server.client.get_model_repository_index()}
    assert index["other"]["state"] == "UNAVAILABLE" and not index["other"]["resident"]
    server.client.load_model("other")
    assert server.client.is_model_ready("c")


def test_bad_requests_get_protocol_errors_and_the_server_keeps_serving(server):
    good = {"name": "x", "shape": [1, 64], "datatype": "FP32", "data": [0.0] * 64}
    cases = [
        ("/v2/models/nope/infer", {"inputs": [good]}, 404, "unknown model"),
        (
            "/v2/models/c/infer",
            {"inputs": [{**good, "datatype": "FP64"}]},
            400,
            "datatype FP64, the model takes FP32",
        ),
        ("/v2/models/c/infer", {"inputs": [{**good, "shape": [2, 64]}]}, 400, "does not fit"),
        ("/v2/models/c/infer", {"inputs": [{**good, "data": [1.0]}]}, 400, "does not fit shape"),
        ("/v2/models/c/infer", {"inputs": []}, 400, "missing inputs ['x']"),
        ("/v2/models/c/infer", {"inputs": [good], "outputs": [{"name": "z"}]}, 400, "unknown out"),
    ]
    for path, body, status, message in cases:
        code, reply = server.post(path, json.dumps(body).encode())
        assert code == status and message in reply["error"], (path, body, reply)
    code, reply = server.post("/v2/models/c/infer", b"{not json")
    assert code == 400 and "not JSON" in reply["error"]
    # An oversized body is refused from its Content-Length, before any of it is read.
    connection = http_client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    connection.putrequest("POST", "/v2/models/c/infer")
    connection.putheader("Content-Length", str(2 * 2**20))
    connection.endheaders()
    response = connection.getresponse()
    assert response.status == 413 and "over 1048576 bytes" in json.loads(response.read())["error"]
    connection.close()
    x = np.zeros((1, 64), np.float32)
    assert server.client.infer("c", [_input("x", x, False)]).as_numpy("y").shape == (1, 64)


def test_swaps_under_a_small_budget_with_concurrent_clients(dist, tmp_path):
    swapped = tmp_path / "dist"  # the two small bundles alone: "slow" would not fit
    for name in ("pair", "other"):
        shutil.copytree(dist / name, swapped / name)
    # One bundle's part at a time, beside the one activation arena: every switch swaps.
    budget = swapping_budget(swapped, ["a", "c"])
    server = Server(swapped, "--budget", str(budget), "--policy", "lru")
    failures: list[BaseException] = []
    x = np.ones((1, 64), np.float32)

    def client(worker: int) -> None:
        own = server.new_client()
        for i in range(12):
            name = ("a", "c")[(worker + i) % 2]
            try:
                result = own.infer(name, [_input("x", x, True)])
                assert result.as_numpy("y").shape == (1, 64)
            except BaseException as error:  # collected: the assertion below names it
                failures.append(error)

    try:
        threads = [threading.Thread(target=client, args=(w,)) for w in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        metrics = server.metrics()
    finally:
        server.stop()
    assert not failures, failures[:3]
    assert metrics['fusedinf_requests_total{model="a",outcome="success"}'] == 24
    assert metrics["fusedinf_evictions_total"] > 0
    assert metrics["fusedinf_peak_resident_bytes"] <= metrics["fusedinf_budget_bytes"] == budget


def test_sigterm_lets_the_request_in_flight_finish(dist):
    server = Server(dist, "--budget", "1GiB")
    server.client.load_model("slow")
    outcome: dict[str, object] = {}
    x = np.ones((256, 256), np.float32)

    def request() -> None:
        own = server.new_client()
        started = time.perf_counter()
        outcome["y"] = own.infer("s", [_input("x", x, True)]).as_numpy("y")
        outcome["seconds"] = time.perf_counter() - started

    thread = threading.Thread(target=request)
    thread.start()
    time.sleep(0.2)
    code = server.stop()
    thread.join(timeout=60)
    # uvicorn re-raises SIGTERM once it has shut down gracefully
    assert code in (0, -signal.SIGTERM), server.process.stderr.read()  # type: ignore[union-attr]
    np.testing.assert_array_equal(outcome["y"], x)
    assert outcome["seconds"] > 0.2  # it was still running when SIGTERM arrived


@pytest.mark.parametrize("workers", ["1", "2"])
def test_serve_without_bundles_is_one_line(tmp_path, workers):
    result = _serve_and_fail(tmp_path, "--workers", workers)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        f"error: {tmp_path}: no built bundles for ort-cpu (run `bundle build`)"
    ]


def test_a_mistake_fails_once_before_any_worker_starts(dist):
    result = _serve_and_fail(dist, "--workers", "2", "--policy", "fifo")
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        "error: unknown policy 'fifo'; choose from lru, gdsf"
    ]


def test_workers_split_the_budget_and_serve(dist):
    running = Server(dist, "--workers", "2", "--budget", "64MiB")
    try:
        x = np.ones((1, 64), np.float32)
        result = running.client.infer("c", [_input("x", x, True)])
        np.testing.assert_array_equal(result.as_numpy("y"), _expected(dist, "m2.onnx", x))
    finally:
        code = running.stop()
    assert "budget 32 MiB per worker" in running.process.stderr.read()  # type: ignore[union-attr]
    assert code in (0, -signal.SIGTERM)


def _serve_and_fail(dist: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """`serve` that should refuse to start; a timeout here means workers restarted forever."""
    return subprocess.run(
        [sys.executable, "-m", "fusedinf_cc", "serve", str(dist), "--port", "0", *extra],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (("--on", "kserve"), "--on 'kserve': use uvicorn or ray"),
        (("--replicas", "2"), "need --on ray"),
        (("--on", "ray", "--workers", "2"), "runs replicas, not workers: use --replicas"),
        (("--on", "ray", "--replicas", "3", "--max-replicas", "2"), "--max-replicas at least"),
        (("--on", "ray", "--replica-cpus", "-1"), "--replica-cpus must be >= 0"),
        (("--budget", "50%"), "--budget 50%: give a size here"),
    ],
)
def test_ray_options_are_checked_before_anything_starts(dist, extra, message):
    result = _serve_and_fail(dist, *extra)
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: ") and message in line


def test_the_former_engine_option_still_works_and_says_its_new_name(dist):
    result = _serve_and_fail(dist, "--engine", "kserve")
    assert result.returncode == 2, result.stderr
    warning, error = result.stderr.strip().splitlines()
    assert warning == "warning: --engine is now --on; --engine goes in the next release"
    assert error.startswith("error: ") and "--on 'kserve': use uvicorn or ray" in error


def test_a_dist_rebuilt_while_served_is_served_whole_at_its_new_version(tmp_path):
    """`bundle build` over a served dist, with other inputs shared: the next request finds the
    new build, registered again whole (metadata, input names, weights); the old never mixes
    with the new."""
    models = tmp_path / "models"
    models.mkdir()
    for seed in range(2):
        builders.save(builders.affine(seed, width=32), models / f"m{seed}.onnx")
    spec = tmp_path / "fusedinf.toml"
    bundle = '[bundles.pair]\nmodels = { a = "models/m0.onnx", b = "models/m1.onnx" }\n'
    spec.write_text(bundle)
    assert all(r.status == "built" for r in build_bundles(list(read_spec(spec).bundles.values()),
                                                          tmp_path / "dist"))  # fmt: skip
    running = Server(tmp_path / "dist", "--budget", "256MiB")
    try:
        before = running.client.get_model_metadata("pair")
        assert sorted(i["name"] for i in before["inputs"]) == ["a/x", "b/x"]
        x = np.ones((1, 32), np.float32)
        apart = [_input("a/x", x, False), _input("b/x", x, False)]
        assert running.client.infer("pair", apart).as_numpy("a/y") is not None
        spec.write_text(bundle + 'share_inputs = "auto"\n')
        rebuilt = build_bundles(list(read_spec(spec).bundles.values()), tmp_path / "dist")
        assert [r.status for r in rebuilt] == ["built"]
        after = running.client.get_model_metadata("pair")
        assert [i["name"] for i in after["inputs"]] == ["x"]
        result = running.client.infer("pair", [_input("x", x, False)])
        np.testing.assert_allclose(
            result.as_numpy("a/y"), _expected(tmp_path / "dist", "m0.onnx", x), rtol=1e-5
        )
        status, body = running.post("/v2/models/pair/infer", json.dumps({"inputs": [
            {"name": "a/x", "datatype": "FP32", "shape": [1, 32], "data": [1.0] * 32},
        ]}).encode())  # fmt: skip
        assert status == 400 and "x" in body["error"]  # the old input names are gone
    finally:
        assert running.stop() == 0


def test_serve_opens_each_ahead_of_time_bundle_at_start_with_nothing_read(tmp_path):
    """Each `--aot` bundle's session is opened at start, standing by with none of its weights
    read, so the first request opens nothing; a portable bundle is opened on its first
    request, as before, and `open_ahead=False` opens nothing at start."""
    from fusedinf_cc.serve.app import ServeConfig, create_app

    models = tmp_path / "models"
    models.mkdir()
    for seed in range(2):
        builders.save(builders.affine(seed, width=64), models / f"m{seed}.onnx")
    spec = tmp_path / "fusedinf.toml"
    spec.write_text(
        '[bundles.ahead]\nmodels = { a = "models/m0.onnx" }\naot = true\n'
        '[bundles.portable]\nmodels = { b = "models/m1.onnx" }\n'
    )
    results = build_bundles(list(read_spec(spec).bundles.values()), tmp_path / "dist")
    assert all(r.status == "built" for r in results), results
    config = ServeConfig(dist=tmp_path / "dist", budget_bytes=256 << 20)
    cache = create_app(config).state.cache
    try:
        assert cache.stats.opened_ahead == 1
        x = np.ones((1, 64), np.float32)
        ahead = cache.run("ahead", {"a/x": x})
        cache.run("portable", {"b/x": x})
        assert (cache.stats.sessions_reused, cache.stats.sessions_opened) == (1, 1)
        np.testing.assert_allclose(
            ahead["a/y"], _expected(tmp_path / "dist", "m0.onnx", x), rtol=1e-5
        )
    finally:
        cache.close()
    closed = create_app(dataclasses.replace(config, open_ahead=False)).state.cache
    try:
        assert closed.stats.opened_ahead == 0
    finally:
        closed.close()
