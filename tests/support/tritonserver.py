"""A real tritonserver on 127.0.0.1, from PyPI's `nvidia-pytriton` wheel, for the Triton tests.

The wheel carries tritonserver with its libraries and the python backend only. Its backend stub
runs the Python found first on PATH, and needs numpy 1.x there (with numpy 2 every request fails
with "output tensor shape does not match size of output"), so Triton gets a virtual environment
of its own, made once and cached: nvidia-pytriton, numpy<2 and onnxruntime for the stand-in
backend (`tests/support/triton_stand_in_backend.py`). The stub also needs libpython's folder and the
wheel's library folder on LD_LIBRARY_PATH, or a model load hangs.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tests.support.serving import free_port

PYTRITON = "nvidia-pytriton==0.7.0"
STAND_IN = Path(__file__).with_name("triton_stand_in_backend.py")
PYTHON_VERSION = f"{sys.version_info.major}.{sys.version_info.minor}"


@dataclass(frozen=True)
class TritonInstall:
    venv: Path

    @property
    def site_packages(self) -> Path:
        return self.venv / "lib" / f"python{PYTHON_VERSION}" / "site-packages"

    @property
    def server_folder(self) -> Path:
        return self.site_packages / "pytriton" / "tritonserver"


def triton_install(cache: Path) -> TritonInstall:
    """The cached environment, made by pip on first use (about a minute, 450 MB)."""
    venv = cache / f"venv-py{PYTHON_VERSION}-{PYTRITON.replace('==', '-')}"
    if not venv.is_dir():
        staging = venv.with_name(venv.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(staging)], check=True, timeout=120)
        pip = [
            str(staging / "bin" / "python"),
            "-m",
            "pip",
            "--quiet",
            "--disable-pip-version-check",
        ]
        subprocess.run(
            [*pip, "install", PYTRITON, "numpy<2", "onnxruntime"],
            check=True,
            timeout=900,
            capture_output=True,
        )
        # A venv's scripts name its folder; moving it keeps the interpreter, which is all the
        # stub runs (python -m pip is not needed again).
        staging.rename(venv)
    return TritonInstall(venv)


def backend_folder(install: TritonInstall, root: Path) -> Path:
    """`root/backends`: the wheel's python backend with the stub for this Python, and the
    stand-in as the `onnxruntime` backend."""
    backends = root / "backends"
    python = backends / "python"
    python.mkdir(parents=True)
    for item in ("libtriton_python.so", "triton_python_backend_utils.py"):
        shutil.copy2(install.server_folder / "backends" / "python" / item, python / item)
    stubs = install.server_folder / "python_backend_stubs" / PYTHON_VERSION
    shutil.copy2(stubs / "triton_python_backend_stub", python / "triton_python_backend_stub")
    (backends / "onnxruntime").mkdir()
    shutil.copy2(STAND_IN, backends / "onnxruntime" / "model.py")
    return backends


class TritonServer:
    """tritonserver in explicit model control, HTTP on a free loopback port, stopped by PID."""

    def __init__(self, install: TritonInstall, repository: Path, backends: Path, log: Path):
        self.port = free_port()
        self.url = f"127.0.0.1:{self.port}"
        libraries = [
            str(sysconfig.get_config_var("LIBDIR")),
            str(install.site_packages / "nvidia_pytriton.libs"),
        ]
        env = {
            **os.environ,
            "PATH": f"{install.venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
            "LD_LIBRARY_PATH": os.pathsep.join(libraries),
        }
        env.pop("PYTHONPATH", None)
        command = [
            str(install.server_folder / "bin" / "tritonserver"),
            f"--model-repository={repository}",
            f"--backend-directory={backends}",
            "--model-control-mode=explicit",
            "--http-address=127.0.0.1",
            f"--http-port={self.port}",
            "--allow-grpc=false",
            "--allow-metrics=false",
            "--exit-timeout-secs=10",
        ]
        self._log = log.open("w")
        # Its own process group: the backend stubs it starts are stopped with it.
        self.process = subprocess.Popen(
            command, stdout=self._log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        self._wait_ready(log)

    def _wait_ready(self, log: Path) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"tritonserver exited: {log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"http://{self.url}/v2/health/live", timeout=2):
                    return
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise AssertionError(f"tritonserver was not live in 60 s: {log.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        self._log.close()
