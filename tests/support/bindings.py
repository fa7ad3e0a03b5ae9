"""The identifiers real binding wheels define, read without importing them.

TensorRT's compiled bindings (`tensorrt_bindings/tensorrt.so`) cannot be imported without
TensorRT's libraries, which PyPI does not carry. pybind11 keeps every name it registers (classes,
methods, properties, enum members) as a NUL-terminated string in the module, so those strings,
with the names its `__init__.py` defines, are the identifiers the module can export. The linker
may store a name as the tail of a longer string (`INT8` inside `UINT8`), so a name counts as
present when it ends an identifier string; a name is provably absent only when it ends none.
"""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

PIP = (sys.executable, "-m", "pip", "--quiet", "--disable-pip-version-check")
PIP_RUN: dict = {"check": True, "timeout": 300, "capture_output": True}
IDENTIFIER_STRING = re.compile(rb"(?<![\x21-\x7e])([A-Za-z_][A-Za-z0-9_]*)\x00")


@dataclass(frozen=True)
class WheelNames:
    """What one bindings wheel defines."""

    version: str
    compiled: frozenset[str]  # identifier strings in the compiled module
    python: frozenset[str]  # names its __init__.py defines

    def may_have(self, name: str) -> bool:
        if name in self.python or name in self.compiled:
            return True
        return any(text.endswith(name) for text in self.compiled)

    def lacks(self, name: str) -> bool:
        return not self.may_have(name)


def download_wheel(requirement: str, cache: Path) -> Path:
    """The cp311 x86_64 wheel of `requirement` ("pkg==1.2"), fetched by pip once into `cache`."""
    package, version = requirement.split("==")
    stem = f"{package.replace('-', '_')}-{version}-"
    cached = sorted(cache.glob(stem + "*.whl"))
    if cached:
        return cached[0]
    cache.mkdir(parents=True, exist_ok=True)
    command = [*PIP, "download", "--no-deps", "--only-binary=:all:", "--python-version", "3.11"]
    for platform in ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64"):
        command += ["--platform", platform]
    subprocess.run([*command, "--dest", str(cache), requirement], **PIP_RUN)
    return sorted(cache.glob(stem + "*.whl"))[0]


def installed_into(requirement: str, cache: Path) -> Path:
    """A folder holding `requirement` and what it needs, installed by pip once, for PYTHONPATH."""
    folder = cache / requirement.replace("==", "-")
    if folder.is_dir():
        return folder
    staging = folder.with_name(folder.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    subprocess.run([*PIP, "install", "--target", str(staging), requirement], **PIP_RUN)
    staging.rename(folder)
    return folder


def tensorrt_wheel_names(wheel: Path, version: str) -> WheelNames:
    with zipfile.ZipFile(wheel) as archive:
        compiled = archive.read("tensorrt_bindings/tensorrt.so")
        init = archive.read("tensorrt_bindings/__init__.py").decode()
    strings = frozenset(match.decode() for match in IDENTIFIER_STRING.findall(compiled))
    return WheelNames(version=version, compiled=strings, python=frozenset(python_names(init)))


def python_names(source: str) -> set[str]:
    """Top-level functions, classes and assigned names, and attributes assigned to (`X.a = 1`)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    names.add(target.id)
                elif isinstance(target, ast.Attribute):
                    names.add(target.attr)
    return names
