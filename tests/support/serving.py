"""Start a real `serve` process for one request, the way a client would meet it."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO


def swapping_budget(dist: Path, turns: Sequence[str]) -> int:
    """A budget under which `serve DIST` holds what each turn's models need (a turn: the models
    one client asks for, e.g. "ab"), but not every turn's at once, so alternating between turns
    must swap. Worked out by the loader itself on the footprints the server will read (measured
    now into the tests' footprint cache): halfway between the two, where measurement noise
    cannot move either past it. What a turn needs includes its load's transient and the arena
    the server checks each bundle against when it registers them (`ledger.least_budget`)."""
    from fusedinf_cc.backends.runtimes import DEFAULT_RUNTIME
    from fusedinf_cc.runtime.loader import BundleCache
    from fusedinf_cc.serve.app import register_dist

    cache = BundleCache(2**40)
    register_dist(cache, dist, DEFAULT_RUNTIME)
    needs = [cache.least_budget_bytes]
    for turn in turns:
        for model in turn:
            cache.load(model)
        needs.append(cache.accounted_bytes)
        cache.close()
    for model in "".join(turns):
        cache.load(model)
    together = cache.accounted_bytes
    cache.close()
    assert max(needs) < together, (needs, together)
    return (max(needs) + together) // 2


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve_one_request(
    dist: Path,
    env: dict[str, str],
    *,
    model: str = "b",
    width: int = 32,
    python_flags: Sequence[str] = (),
    wrap: Callable[[list[str]], list[str]] = lambda command: command,
) -> tuple[list[float], str]:
    """Start `serve DIST` on 127.0.0.1, send one JSON request of ones to `model` (input `x`,
    1 x width), stop the server by its PID; return the first output's data and its stderr."""
    port = free_port()
    command = [
        sys.executable, *python_flags, "-m", "fusedinf_cc", "serve", str(dist), "--port", str(port)
    ]  # fmt: skip
    # stderr goes to a file: a pipe nobody reads while the server runs could fill and block it.
    with tempfile.TemporaryFile(mode="w+") as log:
        process = subprocess.Popen(
            wrap(command), stdout=subprocess.DEVNULL, stderr=log, text=True, env=env
        )
        try:
            outputs = _ask(f"http://127.0.0.1:{port}", process, log, model, width)
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=60)
        log.seek(0)
        return outputs, log.read()


def wait_until_ready(
    url: str, process: subprocess.Popen, log: Callable[[], str], timeout_s: float = 120
) -> None:
    """Poll `url`'s KServe readiness until it answers 200; fail with the server's log if it
    exits or takes longer than `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        if process.poll() is not None:
            raise AssertionError(f"the server exited: {log()[-3000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"the server was not ready in {timeout_s:.0f} s: {log()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/v2/health/ready", timeout=5) as reply:
                if reply.status == 200:
                    return
        except OSError:
            time.sleep(0.2)


def _ask(url: str, process: subprocess.Popen, log: IO[str], model: str, width: int) -> list:
    def text() -> str:
        log.seek(0)
        return log.read()

    wait_until_ready(url, process, text)
    tensor = {"name": "x", "shape": [1, width], "datatype": "FP32", "data": [1.0] * width}
    request = urllib.request.Request(
        f"{url}/v2/models/{model}/infer",
        data=json.dumps({"inputs": [tensor]}).encode(),
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=60) as reply:
        return json.loads(reply.read())["outputs"][0]["data"]
