"""Load test of `fusedinf-cc serve` on 127.0.0.1: concurrent clients over several zoo bundles,
with a budget that holds about half of them, so requests force swaps.

    python scripts/load_test_serve.py [--clients 4] [--requests 40] [--json FILE]
        [--device-profile orin-nano-sd] [--memory-limit 2GiB] [--read-bandwidth 67MB/s]

Bounded: clients x requests in all, and a time limit. Reports requests/s, p50/p99 latency (swaps
included), loads and evictions, the server's peak RSS (VmHWM) and the peak accounted footprint
against the budget. With a device profile the server runs in a cgroup made for it (its memory
limit, its reads throttled on the disk that holds the bundles), and the report adds what the
kernel counted: the group's peak memory, the bytes read from storage, the out-of-memory kills.
Exits 1 if any request failed, the budget was exceeded or the kernel killed the server.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import tritonclient.http as http

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from fusedinf_cc.limits.cgroups import GROUP_ENV, RunGroup  # noqa: E402
from fusedinf_cc.limits.profiles import device_profile  # noqa: E402
from fusedinf_cc.precompile.build import build_bundles  # noqa: E402
from fusedinf_cc.precompile.spec import read_spec  # noqa: E402
from fusedinf_cc.runtime.bundle import open_bundle  # noqa: E402
from fusedinf_cc.runtime.ledger import least_budget  # noqa: E402
from fusedinf_cc.runtime.procmem import status_bytes  # noqa: E402
from model_zoo.zoo import export  # noqa: E402

SPEC = """
[bundles.heads]
models = {{ cls = "{z}/head0.onnx", seg = "{z}/head1.onnx" }}
share_inputs = "auto"
[bundles.mobile]
models = {{ mobilenet = "{z}/mobilenet_v3_small.onnx", squeeze = "{z}/squeezenet1_1.onnx" }}
share_inputs = "auto"
[bundles.big]
models = {{ resnet = "{z}/resnet18.onnx" }}
"""
TARGETS = ("cls", "seg", "mobilenet", "squeeze", "resnet")  # models asked for, round robin


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--requests", type=int, default=40, help="per client")
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--device-profile")
    parser.add_argument("--memory-limit")
    parser.add_argument("--read-bandwidth")
    parser.add_argument("--read-ahead", help="the disk's read-ahead during the run (128KiB)")
    parser.add_argument("--cpus", type=float)
    args = parser.parse_args()
    profile = device_profile(
        args.device_profile, args.memory_limit, args.read_bandwidth, args.cpus, args.read_ahead
    )
    work = Path(tempfile.mkdtemp(prefix="fusedinf-load-"))
    zoo = work / "zoo"
    for name in ("head0", "head1", "mobilenet_v3_small", "squeezenet1_1", "resnet18"):
        export(name, zoo)
    (work / "fusedinf.toml").write_text(SPEC.format(z=zoo))
    spec = read_spec(work / "fusedinf.toml")
    build_bundles(list(spec.bundles.values()), work / "dist")
    measured = {
        name: open_bundle(work / "dist" / name / f"{name}.onnx").footprint for name in spec.bundles
    }
    footprints = {name: footprint.alone_bytes for name, footprint in measured.items()}
    budget = max(
        least_budget(f.load_need for f in measured.values()), sum(footprints.values()) // 2
    )
    port = _free_port()
    group = RunGroup(profile, work) if profile is not None else contextlib.nullcontext()
    with group:
        report = _serve_and_load(work, port, budget, args, group)
    report.update({"budget_bytes": budget, "footprints": footprints})
    report["budget_held"] = report["peak_resident_bytes"] <= budget
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    killed = report.get("device", {}).get("use", {}).get("oom_kills", 0)
    if report["failures"] or not report["budget_held"] or killed:
        sys.exit(1)


def _serve_and_load(work: Path, port: int, budget: int, args, group) -> dict:
    """Start the server (in `group`, where it is one), load it, and stop it."""
    limited = isinstance(group, RunGroup)
    env = {**os.environ, GROUP_ENV: group.to_env()} if limited else None
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fusedinf_cc",
            "serve",
            str(work / "dist"),
            "--port",
            str(port),
            "--budget",
            str(budget),
            "--policy",
            "gdsf",
        ],
        stderr=subprocess.PIPE,
        env=env,
        preexec_fn=group.join if limited else None,
    )
    try:
        _wait_live(port)
        report = _load(port, args.clients, args.requests, args.timeout)
        report["server_peak_rss_bytes"] = status_bytes(Path(f"/proc/{server.pid}/status")).get(
            "VmHWM", 0
        )
        report.update(_metrics(port))
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
    if limited:
        use = group.use()
        report["device"] = {"profile": group.profile.to_record(), "use": use.to_record()}
    return report


def _load(port: int, clients: int, requests: int, limit_s: float) -> dict:
    latencies: list[float] = []
    failures: list[str] = []
    lock = threading.Lock()
    image = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    deadline = time.monotonic() + limit_s

    def client(worker: int) -> None:
        own = http.InferenceServerClient(f"127.0.0.1:{port}", network_timeout=120)
        for i in range(requests):
            if time.monotonic() > deadline:
                return
            model = TARGETS[(worker + i) % len(TARGETS)]
            tensor = http.InferInput("image", list(image.shape), "FP32")
            tensor.set_data_from_numpy(image, binary_data=True)
            started = time.perf_counter()
            try:
                own.infer(model, [tensor])
                with lock:
                    latencies.append((time.perf_counter() - started) * 1000)
            except Exception as error:  # counted and reported, not raised
                with lock:
                    failures.append(f"{model}: {error}")

    started = time.perf_counter()
    threads = [threading.Thread(target=client, args=(w,)) for w in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - started
    return {
        "clients": clients,
        "requests": len(latencies) + len(failures),
        "failures": failures,
        "seconds": seconds,
        "requests_per_s": len(latencies) / seconds,
        "p50_ms": float(np.percentile(latencies, 50)) if latencies else None,
        "p99_ms": float(np.percentile(latencies, 99)) if latencies else None,
    }


def _metrics(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as response:
        values = dict(
            line.rsplit(" ", 1)
            for line in response.read().decode().splitlines()
            if line and not line.startswith("#")
        )
    return {
        "loads": int(values["fusedinf_loads_total"]),
        "evictions": int(values["fusedinf_evictions_total"]),
        "loading_seconds": float(values["fusedinf_loading_seconds_total"]),
        "peak_resident_bytes": int(values["fusedinf_peak_resident_bytes"]),
    }


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_live(port: int) -> None:
    client = http.InferenceServerClient(f"127.0.0.1:{port}")
    for _ in range(600):
        try:
            if client.is_server_live():
                return
        except Exception:  # not listening yet
            time.sleep(0.2)
    raise RuntimeError("the server did not start")


if __name__ == "__main__":
    main()
