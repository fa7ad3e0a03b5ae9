"""The TensorRT and CUDA runtime names the code reads, checked against the real bindings.

No machine here can import TensorRT or reach a GPU, but the bindings are real PyPI wheels:
TensorRT's identifiers are read from its compiled module (`tests/support/bindings.py` says how),
cuda-python's by importing it, which needs no GPU. The code reads every binding through the
declaration in `fusedinf_cc/backends/tensorrt/names.py`; the last tests hold it to that.
Tests marked `network` fetch the wheels with pip once into `.cache/bindings`.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fusedinf_cc.backends.tensorrt.names import (
    CUDA_RUNTIME,
    NEWEST_TENSORRT_MAJOR,
    OLDEST_TENSORRT,
    TENSORRT,
    BindingNames,
    parse_version,
)
from fusedinf_cc.backends.tensorrt.options import HARDWARE_COMPATIBILITY, MEMORY_POOLS
from tests.support.bindings import WheelNames, download_wheel, installed_into, tensorrt_wheel_names
from tests.support.commands import REPO

CACHE = Path(os.environ.get("FUSEDINF_BINDINGS_CACHE", REPO / ".cache" / "bindings"))
TENSORRT_WHEELS = {
    "10.3.0": "tensorrt-cu12-bindings==10.3.0",  # the oldest supported: JetPack 6.1 and 6.2
    "10.8.0.43": "tensorrt-cu12-bindings==10.8.0.43",  # the last before SAME_COMPUTE_CAPABILITY
    "10.16.1.11": "tensorrt-cu12-bindings==10.16.1.11",  # the newest 10.x
    "11.4.0.106": "tensorrt-cu13-bindings==11.4.0.106",  # the newest 11.x
}
CUDA_BINDINGS = ("cuda-bindings==12.9.4", "cuda-bindings==13.5.0")
PACKAGE = REPO / "fusedinf_cc"


@pytest.fixture(scope="module")
def tensorrt_wheels() -> dict[str, WheelNames]:
    return {
        version: tensorrt_wheel_names(download_wheel(requirement, CACHE), version)
        for version, requirement in TENSORRT_WHEELS.items()
    }


def test_the_matrix_spans_the_supported_versions():
    versions = sorted(parse_version(version) for version in TENSORRT_WHEELS)
    assert versions[0][:2] == OLDEST_TENSORRT
    assert versions[-1][0] == NEWEST_TENSORRT_MAJOR
    assert any(version[0] == NEWEST_TENSORRT_MAJOR - 1 for version in versions)


@pytest.mark.network
@pytest.mark.parametrize("version", TENSORRT_WHEELS)
def test_every_declared_tensorrt_name_is_in_each_version_declared_to_have_it(
    tensorrt_wheels, version
):
    wheel = tensorrt_wheels[version]
    expected = [
        path
        for path, available in TENSORRT.names.items()
        if available.in_version(parse_version(version))
    ]
    missing = [path for path in expected if not all(map(wheel.may_have, path.split(".")))]
    assert not missing, f"TensorRT {version} lacks {missing}"
    # The reader can tell a name that is not there.
    assert wheel.lacks("set_flag_that_no_tensorrt_has")


@pytest.mark.network
def test_names_declared_to_come_or_go_are_absent_where_declared(tensorrt_wheels):
    """`since` and `before` are checked too, wherever the bindings can prove an absence."""
    proved = []
    for version, wheel in tensorrt_wheels.items():
        for path, available in TENSORRT.names.items():
            member = path.split(".")[-1]
            if available.in_version(parse_version(version)):
                continue
            tail_of_another = any(
                text.endswith(member) and text != member for text in wheel.compiled
            )
            if tail_of_another:  # e.g. INT8 inside UINT8: neither provable nor refutable
                continue
            assert wheel.lacks(member), f"{path} is declared absent from {version} but is there"
            proved.append((path, version))
    assert ("BuilderFlag.FP16", "11.4.0.106") in proved
    assert ("IInt8EntropyCalibrator2", "11.4.0.106") in proved
    assert ("HardwareCompatibilityLevel.SAME_COMPUTE_CAPABILITY", "10.8.0.43") in proved


CHECK_CUDA = """
import json, sys
import cuda.bindings.runtime as runtime
from fusedinf_cc.backends.tensorrt.names import CUDA_RUNTIME
missing = []
for path in CUDA_RUNTIME.names:
    value = runtime
    for part in path.split("."):
        if not hasattr(value, part):
            missing.append(path)
            break
        value = getattr(value, part)
opened = None
try:
    import torch
    gpu = torch.cuda.is_available()
except ImportError:
    gpu = False
if not gpu:
    from fusedinf_cc.backends.tensorrt.device import open_device
    try:
        open_device()
        opened = "opened"
    except Exception as error:
        opened = f"{type(error).__name__}: {error}"
print(json.dumps({"missing": missing, "opened": opened}))
"""


@pytest.mark.network
@pytest.mark.parametrize("requirement", CUDA_BINDINGS)
def test_cuda_runtime_names_exist_and_no_gpu_is_one_line(requirement):
    folder = installed_into(requirement, CACHE)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(folder), str(REPO)])}
    result = subprocess.run(
        [sys.executable, "-c", CHECK_CUDA], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["missing"] == [], f"{requirement} lacks {report['missing']}"
    if report["opened"] not in (None, "opened"):  # no GPU: what the user reads
        assert report["opened"].startswith("BackendUnavailableError: cudaSetDevice failed")
        assert "\n" not in report["opened"]


# the code reads bindings only through the declaration ------------------------------------------
ACCESSORS = {"name", "attr", "set_attr", "has", "declared"}
TABLES = {"TENSORRT": TENSORRT, "CUDA_RUNTIME": CUDA_RUNTIME}


def _modules() -> list[tuple[Path, ast.Module]]:
    return [(path, ast.parse(path.read_text())) for path in sorted(PACKAGE.rglob("*.py"))]


def _reads(tree: ast.Module) -> list[tuple[str, str | None]]:
    """(table, path) for each accessor call; path None where it is not a literal."""
    reads = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        table = node.func.value
        if not (isinstance(table, ast.Name) and table.id in TABLES):
            continue
        if node.func.attr not in ACCESSORS:
            continue
        arg = node.args[-1] if node.func.attr in ("name", "attr") else node.args[0]
        if node.func.attr == "set_attr":
            arg = node.args[1]
        literal = arg.value if isinstance(arg, ast.Constant) else None
        reads.append((table.id, literal))
    return reads


def _overrides(tree: ast.Module) -> set[str]:
    """`Owner.method` for each method of a class derived from a class read as `base`."""
    found = set()
    for function in ast.walk(tree):
        if not isinstance(function, ast.FunctionDef):
            continue
        bases: dict[str, str] = {}
        for node in function.body:
            if (
                isinstance(node, ast.Assign)
                and isinstance(node.value, ast.Call)
                and isinstance(node.value.func, ast.Attribute)
                and isinstance(node.value.func.value, ast.Name)
                and node.value.func.value.id == "TENSORRT"
                and isinstance(node.targets[0], ast.Name)
            ):
                bases[node.targets[0].id] = node.value.args[-1].value
            if isinstance(node, ast.ClassDef):
                for base in node.bases:
                    if isinstance(base, ast.Name) and base.id in bases:
                        found |= {
                            f"{bases[base.id]}.{method.name}"
                            for method in node.body
                            if isinstance(method, ast.FunctionDef) and method.name != "__init__"
                        }
    return found


def test_the_code_reads_exactly_the_declared_names():
    used: dict[str, set[str]] = {"TENSORRT": set(), "CUDA_RUNTIME": set()}
    overrides: set[str] = set()
    for _, tree in _modules():
        for table, path in _reads(tree):
            if path is not None:
                used[table].add(path)
        overrides |= _overrides(tree)
    # The option tables hold paths that the builder reads through TENSORRT.name.
    used["TENSORRT"] |= set(MEMORY_POOLS.values())
    used["TENSORRT"] |= {path for path in HARDWARE_COMPATIBILITY.values() if path}
    for table, names in TABLES.items():
        declared = {path for path, available in names.names.items() if not available.override}
        assert used[table] - declared == set(), f"read but not declared in {table}"
        assert declared - used[table] == set(), f"declared in {table} but never read"
    declared_overrides = {path for path, a in TENSORRT.names.items() if a.override}
    assert overrides == declared_overrides


def test_nothing_reads_the_tensorrt_module_directly():
    """`trt.X` would skip the declaration; only names.py reads attributes of the modules."""
    direct = [
        f"{path.relative_to(REPO)}:{node.lineno}"
        for path, tree in _modules()
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.value.id in ("trt", "tensorrt", "runtime_module", "cudart")
    ]
    assert direct == []


def test_an_undeclared_name_is_a_loud_mistake_and_a_missing_one_a_clear_line():
    table = BindingNames("tensorrt", {"Builder": TENSORRT.declared("Builder")})
    with pytest.raises(LookupError, match="not declared"):
        table.name(object(), "BuilderFlag.FP16")
    from fusedinf_cc.common.errors import BackendUnavailableError

    with pytest.raises(BackendUnavailableError, match="the installed tensorrt has no Builder"):
        table.name(object(), "Builder")
