"""`serve` under careless and hostile clients: every client mistake is a 4xx in the protocol's
JSON, bodies and heads are bounded in size and time, and a flood of slow connections does not
stop health checks. Servers bind 127.0.0.1 only; every loop here is bounded."""

from __future__ import annotations

import http.client as http_client
import json
import resource
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper

from fusedinf_cc.serve.app import InflightMemory
from tests.support import builders
from tests.support.commands import build_dist
from tests.support.serving import free_port

pytest.importorskip("starlette", reason="needs the serve extra")
pytest.importorskip("onnxruntime", reason="needs ONNX Runtime")


def _strict_json(text: bytes) -> object:
    """JSON as the standard has it: NaN or Infinity literals are an error."""

    def refuse(constant: str) -> None:
        raise ValueError(f"{constant} is not JSON")

    return json.loads(text, parse_constant=refuse)


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("hostile")
    (root / "models").mkdir()
    builders.save(builders.affine(0, width=4), root / "models" / "m.onnx")
    # log(x): NaN for negative x, -inf at 0.
    log = builders.make_model(
        [helper.make_node("Log", ["x"], ["y"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])],
        [],
    )
    builders.save(log, root / "models" / "log.onnx")
    cast = builders.make_model(
        [helper.make_node("Cast", ["x"], ["y"], to=TensorProto.FLOAT)],
        [helper.make_tensor_value_info("x", TensorProto.INT64, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        [],
    )
    builders.save(cast, root / "models" / "cast.onnx")
    return build_dist(
        root,
        '[bundles.mb]\nmodels = { m = "models/m.onnx" }\n'
        '[bundles.logb]\nmodels = { log = "models/log.onnx" }\n'
        '[bundles.castb]\nmodels = { cast = "models/cast.onnx" }\n',
    )


class Served:
    def __init__(self, dist: Path, *extra: str, fd_limit: int | None = None):
        self.port = free_port()

        def limit_fds() -> None:
            if fd_limit is not None:
                resource.setrlimit(resource.RLIMIT_NOFILE, (fd_limit, fd_limit))

        self.log = open(dist.parent / f"serve-{self.port}.log", "w+")  # noqa: SIM115
        self.process = subprocess.Popen(
            [sys.executable, "-m", "fusedinf_cc", "serve", str(dist), "--port", str(self.port),
             *extra],
            stdout=subprocess.DEVNULL,
            stderr=self.log,
            preexec_fn=limit_fds,
        )  # fmt: skip
        deadline = time.monotonic() + 120
        while self.get("/v2/health/ready")[0] != 200:
            assert self.process.poll() is None, self.stderr()
            assert time.monotonic() < deadline, "serve did not become ready"
            time.sleep(0.2)

    def request(self, method: str, path: str, body: bytes | None = None, headers=None):
        connection = http_client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            connection.request(method, path, body=body, headers=headers or {})
            reply = connection.getresponse()
            return reply.status, reply.read()
        except OSError:
            return 0, b""
        finally:
            connection.close()

    def get(self, path: str):
        return self.request("GET", path)

    def infer(self, model: str, document: object) -> tuple[int, object]:
        status, body = self.request(
            "POST", f"/v2/models/{model}/infer", json.dumps(document).encode()
        )
        return status, _strict_json(body)

    def stderr(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read()

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=60)
        self.log.close()


@pytest.fixture(scope="module")
def server(dist: Path) -> Iterator[Served]:
    running = Served(dist, "--max-json-body", "64KiB", "--body-timeout", "1")
    yield running
    running.stop()


def _tensor(**change: object) -> dict:
    return {"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1.0] * 4, **change}


@pytest.mark.parametrize(
    ("document", "says"),
    [
        ({"inputs": [_tensor(shape=[2**70, 3])]}, "shape must be a list of integers"),
        ({"inputs": [_tensor(shape=[2**31 - 1, 2**31 - 1])]}, "more than 2**40 elements"),
        ({"inputs": [_tensor(shape=[True, 4])]}, "shape must be a list of integers"),
        ({"inputs": [_tensor(parameters=[1, 2])]}, '"parameters" must be an object'),
        ({"inputs": [_tensor()], "parameters": "binary"}, '"parameters" must be an object'),
        ({"inputs": [_tensor()], "id": {"a": 1}}, '"id" must be a string'),
        ({"inputs": [_tensor(data=[[1.0], 2.0, 3.0, 4.0])]}, "data does not fit"),
        (
            {"inputs": [_tensor(parameters={"binary_data_size": "16"})]},
            "binary_data_size",
        ),
        ({"inputs": [_tensor(data=["nan", 1.0, 2.0, 3.0])]}, 'data holds "nan", not a value'),
        ({"inputs": [_tensor(data=[True, 1.0, 2.0, 3.0])]}, "data holds true, not a value"),
        ({"inputs": [_tensor(data=[None, 1.0, 2.0, 3.0])]}, "data holds null, not a value"),
        ({"inputs": [_tensor(), _tensor()]}, "input 'x' is given twice"),
        (
            {"inputs": [_tensor()], "parameters": {"binary_data_output": "false"}},
            '"binary_data_output" must be true or false, not "false"',
        ),
        ({"inputs": [_tensor()], "outputs": []}, '"outputs" names no output'),
    ],
)
def test_client_mistakes_are_4xx_in_json(server, document, says):
    status, reply = server.infer("m", document)
    assert status == 400 and says in reply["error"], reply


def test_a_fraction_for_an_integer_input_is_a_400_not_cut(server):
    tensor = {"name": "x", "shape": [1, 4], "datatype": "INT64", "data": [16000.7, 1, 2, 3]}
    status, reply = server.infer("cast", {"inputs": [tensor]})
    assert status == 400 and "data holds 16000.7, not a value of datatype INT64" in reply["error"]


def test_an_integer_too_large_for_its_datatype_is_a_400(server):
    tensor = {"name": "x", "shape": [1, 4], "datatype": "INT64", "data": [2**70] * 4}
    status, reply = server.infer("cast", {"inputs": [tensor]})
    assert status == 400 and "data does not fit" in reply["error"], reply


def test_json_nested_deeply_is_a_400(server):
    deep = b'{"inputs": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    status, body = server.request("POST", "/v2/models/m/infer", deep)
    assert status in (400, 413) and "error" in _strict_json(body)
    data = "[" * 5000 + "1.0" + "]" * 5000
    text = '{"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": ' + data + "}]}"
    status, body = server.request("POST", "/v2/models/m/infer", text.encode())
    assert status == 400 and "error" in _strict_json(body)


def test_unknown_routes_and_methods_answer_in_json(server):
    status, body = server.get("/v2/nothing/here")
    assert status == 404 and "error" in _strict_json(body)
    status, body = server.get("/v2/models/m/infer")
    assert status == 405 and "error" in _strict_json(body)


def test_non_finite_outputs_are_valid_json(server):
    status, reply = server.infer(
        "log",
        {"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [-1.0, 0.0, 1.0]}]},
    )
    assert status == 200, reply
    data = reply["outputs"][0]["data"]  # type: ignore[index]
    assert data == ["NaN", "-Infinity", 0.0]
    values = np.array(data, dtype=np.float32)  # what tritonclient's as_numpy does
    assert np.isnan(values[0]) and values[1] == -np.inf and values[2] == 0.0


def test_a_json_body_over_its_own_limit_is_refused_before_it_is_read(server):
    big = {"inputs": [_tensor(shape=[1, 4], data=[1.0] * 4)], "id": "x" * (80 * 1024)}
    status, reply = server.infer("m", big)
    assert status == 413 and "binary data extension" in reply["error"]
    # The same tensor as binary data is not JSON, and passes.
    raw = np.ones((1, 4), np.float32).tobytes()
    header = json.dumps(
        {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32",
                     "parameters": {"binary_data_size": len(raw)}}]}
    ).encode()  # fmt: skip
    status, _ = server.request(
        "POST",
        "/v2/models/m/infer",
        header + raw,
        {"Inference-Header-Content-Length": str(len(header))},
    )
    assert status == 200


def test_a_chunked_json_body_is_refused_as_it_passes_the_json_limit(server):
    """No Content-Length to refuse up front: the body is read only up to the JSON limit
    (64 KiB here) and refused there, while the client is still sending, not read whole
    (here it would never end: the last chunk is never sent)."""
    piece = b"x" * (100 * 1024)
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(
            b"POST /v2/models/m/infer HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            + f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
        )  # fmt: skip
        reply = b""
        for _ in range(20):
            chunk = sock.recv(4096)
            reply += chunk
            if not chunk or b"}" in reply:
                break
    assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
    assert b"JSON body over 65536 bytes" in reply
    tensor = json.dumps(_tensor()).encode()
    connection = http_client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        body = iter([b'{"inputs": [', tensor, b"]}"])
        connection.request("POST", "/v2/models/m/infer", body=body, encode_chunked=True)
        assert connection.getresponse().status == 200  # a chunked body within it is served
    finally:
        connection.close()


def test_a_stalled_body_is_dropped_with_a_408(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(
            b'POST /v2/models/m/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"in'
        )
        reply = b""
        for _ in range(10):  # the head and the body may come in separate reads
            chunk = sock.recv(4096)
            reply += chunk
            if not chunk or b"stopped arriving" in reply:
                break
    assert reply.startswith(b"HTTP/1.1 408") and b"stopped arriving" in reply


def test_requests_in_flight_are_held_to_their_memory_limit():
    inflight = InflightMemory(limit=100)
    assert inflight.reserve(InflightMemory.estimate(4, 4))  # 64: JSON counts 16 times
    assert not inflight.reserve(64)  # over the limit while the first is held
    inflight.release(64)
    assert inflight.reserve(1000)  # alone, one request of any size may go


def test_slow_connections_do_not_stop_health_checks(dist):
    """200 clients that never finish their request head, against a process that may open 128
    files: health stays answered, stale heads are dropped, the log stays small."""
    served = Served(dist, "--header-timeout", "2", fd_limit=128)
    attackers: list[socket.socket] = []
    try:
        for _ in range(200):
            sock = socket.socket()
            sock.settimeout(5)
            try:
                sock.connect(("127.0.0.1", served.port))
                sock.sendall(b"POST /v2/models/m/infer HTTP/1.1\r\nHost: x\r\n")
            except OSError:
                sock.close()
                continue
            attackers.append(sock)
        answered = []
        for _ in range(10):
            answered.append(served.get("/v2/health/ready")[0])
            time.sleep(0.3)
        assert answered == [200] * 10
        time.sleep(2.5)  # past the head timeout: the attackers' connections are closed
        closed = 0
        for sock in attackers:
            try:
                closed += sock.recv(1) == b""
            except OSError:
                closed += 1
        assert closed == len(attackers)
        assert len(served.stderr()) < 10_000, served.stderr()[-2000:]
    finally:
        for sock in attackers:
            sock.close()
        served.stop()


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--port", "99999"], "--port 99999: use a port from 0"),
        (["--port", "-1"], "--port -1: use a port from 0"),
        (["--host", "999.1.1.1"], "--host 999.1.1.1: not an address here"),
    ],
)
def test_an_address_that_cannot_be_listened_on_is_one_line(dist, args, says):
    result = subprocess.run(
        [sys.executable, "-m", "fusedinf_cc", "serve", str(dist), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and says in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_port_in_use_is_one_line(dist):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "fusedinf_cc", "serve", str(dist), "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 2 and "cannot listen on" in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("length", [b"abc", b"-5", b"1, 2"])
def test_a_malformed_content_length_is_a_400_in_json(server, length):
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(
            b"POST /v2/models/m/infer HTTP/1.1\r\nHost: x\r\nContent-Length: "
            + length
            + b"\r\n\r\n"
        )
        reply = b""
        while chunk := sock.recv(4096):
            reply += chunk
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400") and b"content-type: application/json" in head.lower()
    assert json.loads(body)["error"].startswith("malformed HTTP request")
    assert server.get("/v2/health/live")[0] == 200  # and the server keeps serving


def test_a_request_whose_activations_cannot_fit_is_a_400_before_it_runs(tmp_path):
    """A 2048x2048 image to a convolution measured at one pixel needs about 0.5 GiB of
    activations: under a 64 MiB budget it is refused in JSON, naming what it needs, before it
    runs; a 64x64 image is served, and so is the next request."""
    (tmp_path / "models").mkdir()
    builders.save(builders.dynamic_conv(), tmp_path / "models" / "conv.onnx")
    dist = build_dist(tmp_path, '[bundles.convb]\nmodels = { conv = "models/conv.onnx" }\n')
    served = Served(dist, "--budget", "64MiB")
    try:

        def infer(side: int) -> tuple[int, bytes]:
            raw = np.ones((1, 3, side, side), np.float32).tobytes()
            header = json.dumps(
                {"inputs": [{"name": "x", "shape": [1, 3, side, side], "datatype": "FP32",
                             "parameters": {"binary_data_size": len(raw)}}]}
            ).encode()  # fmt: skip
            return served.request(
                "POST",
                "/v2/models/conv/infer",
                header + raw,
                {"Inference-Header-Content-Length": str(len(header))},
            )

        status, body = infer(2048)
        assert status == 400, body[:300]
        error = _strict_json(body)["error"]
        assert "needs about" in error and "of activations" in error and "budget" in error
        assert infer(64)[0] == 200
        assert infer(64)[0] == 200
    finally:
        served.stop()
