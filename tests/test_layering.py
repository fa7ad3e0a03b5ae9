"""What a command runs is all it imports: `--help`, `run` and `serve` never load the compiler.

The static side (imports only go down the package's layers, no cycles, the runtime never imports
onnx or onnx-ir, even in a function) is import-linter's, run by scripts/test.sh. These tests
watch real processes: `python -X importtime` names every module a process imported.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.commands import build_pair_dist
from tests.support.serving import serve_one_request

COMPILER = ("onnx", "onnx_ir", "fusedinf_cc.compiler", "fusedinf_cc.passes", "fusedinf_cc.onnx_io")


def imported(stderr: str) -> set[str]:
    """Top-level and package names of the modules an `-X importtime` run imported."""
    names = set()
    for line in stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            name = line.rsplit("|", 1)[1].strip()
            if name != "imported package":
                names.add(name)
    return names


def within(names: set[str], packages: tuple[str, ...]) -> set[str]:
    return {n for n in names if any(n == p or n.startswith(p + ".") for p in packages)}


def compiler_modules(names: set[str]) -> set[str]:
    return within(names, COMPILER)


def _cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "fusedinf_cc", *map(str, args)],
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_pair_dist(tmp_path_factory.mktemp("layering"), width=32)


def test_help_imports_neither_numpy_nor_the_compiler():
    result = _cli("--help")
    assert result.returncode == 0 and "fuse" in result.stdout
    names = imported(result.stderr)
    assert "typer" in names  # the check sees imports at all
    assert compiler_modules(names) == set() and "numpy" not in names


def test_run_imports_the_runtime_only(dist):
    result = _cli("run", dist / "pair" / "pair.onnx", "--model", "a")
    assert result.returncode == 0, result.stderr
    names = imported(result.stderr)
    assert "fusedinf_cc.runtime.loader" in names and within(names, ("onnxruntime",))
    assert compiler_modules(names) == set()


def test_serve_imports_the_runtime_only(dist):
    pytest.importorskip("starlette", reason="needs the serve extra")
    outputs, stderr = serve_one_request(dist, dict(os.environ), python_flags=["-X", "importtime"])
    assert len(outputs) == 32
    names = imported(stderr)
    assert {"uvicorn", "fusedinf_cc.serve.app"} <= names and within(names, ("onnxruntime",))
    assert compiler_modules(names) == set()


def test_the_bench_worker_imports_the_runtime_only(dist):
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import fusedinf_cc.runtime.worker"],
        capture_output=True,
        text=True,
        check=True,
    )
    names = imported(result.stderr)
    assert "fusedinf_cc.runtime.worker" in names and compiler_modules(names) == set()
