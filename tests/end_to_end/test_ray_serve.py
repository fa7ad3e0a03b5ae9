"""`serve --on ray`: a real local Ray cluster and Ray Serve, spoken to over HTTP.

The cluster is the CLI's own: its traffic stays on 127.0.0.1
(RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0), usage stats are off, and its files live in a folder of the
test's. Requests are bounded in number and time; the CLI is stopped by its PID, and every
process it started must be gone after.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from tests.support import builders
from tests.support.commands import run_cli
from tests.support.serving import free_port, swapping_budget, wait_until_ready

pytest.importorskip("ray.serve", reason="needs Ray Serve (the ray extra)")
ort = pytest.importorskip("onnxruntime", reason="runs the sources for the expected outputs")
pytestmark = pytest.mark.slow

WIDTH = 256
REQUESTS = 48


def _dist(tmp_path: Path) -> Path:
    models = tmp_path / "models"
    models.mkdir()
    for seed, name in enumerate("abcd"):
        builders.save(builders.affine(seed, width=WIDTH, batch="n"), models / f"{name}.onnx")
    (tmp_path / "fusedinf.toml").write_text(
        "[bundles.ab]\n"
        'models = { a = "models/a.onnx", b = "models/b.onnx" }\n'
        'share_inputs = "auto"\n'
        "[bundles.cd]\n"
        'models = { c = "models/c.onnx", d = "models/d.onnx" }\n'
        'share_inputs = "auto"\n'
    )
    built = run_cli("bundle", "build", "fusedinf.toml", "--out", "dist", cwd=tmp_path)
    assert built.returncode == 0, built.stderr
    return tmp_path / "dist"


def _descendants(pid: int) -> dict[int, str]:
    """Every live process under `pid`, with its start time (a reused PID has another)."""
    children: dict[int, list[int]] = {}
    started: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.name))
        started[int(entry.name)] = fields[19]
    found, todo = {}, [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found[child] = started[child]
            todo.append(child)
    return found


def _alive(processes: dict[int, str]) -> list[int]:
    alive = []
    for pid, start in processes.items():
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[19] == start and fields[0] != "Z":
            alive.append(pid)
    return alive


def _post(url: str, model: str, x: np.ndarray) -> tuple[np.ndarray, str]:
    body = {"inputs": [{"name": "x", "shape": list(x.shape), "datatype": "FP32",
                        "data": x.ravel().tolist()}]}  # fmt: skip
    request = urllib.request.Request(
        f"{url}/v2/models/{model}/infer", data=json.dumps(body).encode(), method="POST"
    )
    try:
        reply = urllib.request.urlopen(request, timeout=60)
    except urllib.error.HTTPError as error:
        raise AssertionError(f"{model} {x.shape}: {error.code} {error.read()[:300]!r}") from None
    with reply:
        output = json.loads(reply.read())["outputs"][0]
        replica = reply.headers["fusedinf-replica"]
    return np.array(output["data"], np.float32).reshape(output["shape"]), replica


RAY_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}


@contextlib.contextmanager
def _running(command: list[str], log: Path, url: str) -> Iterator[subprocess.Popen]:
    """`command` (which starts a Ray cluster of its own) until ready, then stopped by SIGTERM
    to its PID alone; every process it started must be gone within 30 s after."""
    ray_dir = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths have a limit
    env = {**os.environ, **RAY_ENV, "RAY_TMPDIR": ray_dir}
    with log.open("w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
        started: dict[int, str] = {}
        try:
            wait_until_ready(url, process, log.read_text, timeout_s=180)
            yield process
            started = _descendants(process.pid)
            assert started, "Ray's processes run under the command"
        finally:
            process.send_signal(signal.SIGTERM)  # it stops Serve, then the cluster it started
            process.wait(timeout=90)
    deadline = time.monotonic() + 30
    while _alive(started) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _alive(started) == [], "a process of the Ray cluster outlived its command"
    shutil.rmtree(ray_dir, ignore_errors=True)


def test_ray_serve_replicas_answer_within_their_budgets_and_stop_cleanly(tmp_path):
    dist = _dist(tmp_path)
    budget = swapping_budget(dist, ["ab", "cd"])  # each bundle with its parts, not both
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "fusedinf_cc", "serve", str(dist), "--on", "ray"]
    command += ["--replicas", "2", "--replica-cpus", "0.5", "--budget", str(budget)]
    command += ["--port", str(port)]
    log = tmp_path / "serve.log"
    with _running(command, log, url) as process:
        references = {
            name: ort.InferenceSession(str(tmp_path / "models" / f"{name}.onnx")) for name in "abcd"
        }
        rng = np.random.default_rng(0)
        asks = [("abcd"[i % 4], rng.standard_normal((1 + i % 3, WIDTH)).astype(np.float32))
                for i in range(REQUESTS)]  # fmt: skip
        with ThreadPoolExecutor(max_workers=4) as pool:
            answers = list(pool.map(lambda ask: _post(url, *ask), asks))
        for (model, x), (got, _) in zip(asks, answers, strict=True):
            expected = references[model].run(None, {"x": x})[0]
            np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
        replicas = _replica_metrics(url, {replica for _, replica in answers})
        assert len(replicas) == 2, "both replicas should have answered"
        for replica, metrics in replicas.items():
            assert metrics["fusedinf_budget_bytes"] == budget, replica
            assert 0 < metrics["fusedinf_peak_resident_bytes"] <= budget, replica
        assert sum(m["fusedinf_evictions_total"] for m in replicas.values()) > 0  # it swapped
    assert process.returncode == 0, log.read_text()[-3000:]


SERVE_CONFIG = """\
http_options:
  host: 127.0.0.1
  port: {port}
applications:
  - name: fusedinf
    route_prefix: /
    import_path: fusedinf_cc.serve.ray_replicas:app_builder
    args:
      dist: {dist}
      budget: 3MiB
      policy: lru
    deployments:
      - name: fusedinf
        num_replicas: 1
        max_ongoing_requests: 8
        ray_actor_options:
          num_cpus: 0.5
"""


def test_rays_own_serve_run_deploys_the_app_builder_with_the_config_files_options(tmp_path):
    """The cluster path of docs/ray.md: Ray's `serve run` on a config file deploys the app
    builder's application, with the file's arguments (its budget) on the replica."""
    dist = _dist(tmp_path)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    config = tmp_path / "serve_config.yaml"
    config.write_text(SERVE_CONFIG.format(port=port, dist=dist))
    command = [str(Path(sys.executable).with_name("serve")), "run", str(config)]
    with _running(command, tmp_path / "serve.log", url):
        x = np.ones((2, WIDTH), np.float32)
        got, _ = _post(url, "c", x)
        reference = ort.InferenceSession(str(tmp_path / "models" / "c.onnx"))
        np.testing.assert_allclose(got, reference.run(None, {"x": x})[0], rtol=1e-5, atol=1e-5)
        metrics = next(iter(_replica_metrics(url, set()).values()))
        assert metrics["fusedinf_budget_bytes"] == 3 * 2**20


def _replica_metrics(url: str, replicas: set[str]) -> dict[str, dict[str, float]]:
    """Each replica's own /metrics (Ray routes each scrape to one of them; the response header
    says which), scraped until every replica that answered has been seen."""
    seen: dict[str, dict[str, float]] = {}
    for _ in range(60):
        with urllib.request.urlopen(f"{url}/metrics", timeout=30) as reply:
            text = reply.read().decode()
            replica = reply.headers["fusedinf-replica"]
        seen[replica] = {
            name: float(value)
            for name, value in re.findall(r"^(fusedinf_[a-z_]+) ([0-9.e+]+)$", text, re.M)
        }
        if replicas <= set(seen):
            break
    return seen


def test_an_app_builder_without_a_dist_says_what_it_needs():
    from fusedinf_cc.common.errors import UserInputError
    from fusedinf_cc.serve.ray_replicas import app_builder

    with pytest.raises(UserInputError, match="args need dist"):
        app_builder({"budget": "1GiB"})


def test_config_files_naming_the_former_module_still_deploy():
    """`fusedinf_cc.serve.ray_engine:app_builder`, in config files written before the rename,
    still names the app builder, with a warning of the new name."""
    import importlib

    from fusedinf_cc.serve.ray_replicas import app_builder

    sys.modules.pop("fusedinf_cc.serve.ray_engine", None)
    with pytest.warns(DeprecationWarning, match="now fusedinf_cc.serve.ray_replicas"):
        former = importlib.import_module("fusedinf_cc.serve.ray_engine")
    assert former.app_builder is app_builder
