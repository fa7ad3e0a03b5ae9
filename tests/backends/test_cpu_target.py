"""The CPU an ahead-of-time artifact was built for, checked against the CPU that loads it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fusedinf_cc.artifacts.manifest import manifest_path_for
from fusedinf_cc.backends.cpu_target import (
    IncompatibleCpuError,
    isa_class,
)
from fusedinf_cc.backends.sessions import open_session
from fusedinf_cc.compiler.build import build_fused
from tests.support import builders
from tests.support.commands import run_cli


def _rewrite_device(artifact: Path, **changes: str) -> None:
    sidecar = manifest_path_for(artifact)
    data = json.loads(sidecar.read_text())
    data["device"].update(changes)
    sidecar.write_text(json.dumps(data))


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"isa": "sse"}, "the CPU classes differ"),
        ({"machine": "aarch64", "isa": "neon"}, "the CPU classes differ"),
        ({"onnxruntime": "0.9.0"}, "the ONNX Runtime versions differ"),
    ],
)
def test_loading_refuses_an_artifact_optimised_for_another_cpu(tmp_path, change, says):
    a, b = builders.affine_pair(tmp_path)
    out = tmp_path / "fused.onnx"
    build_fused([f"a={a}", f"b={b}"], out, aot=True)
    _rewrite_device(out, **change)
    with pytest.raises(IncompatibleCpuError) as caught:
        open_session(out)
    message = str(caught.value)
    assert says in message and "\n" not in message
    assert "rebuild it here" in message
    result = run_cli("run", out)
    assert result.returncode == 2 and says in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


def test_another_cpu_of_the_same_class_and_a_patch_release_load(tmp_path):
    a, b = builders.affine_pair(tmp_path)
    out = tmp_path / "fused.onnx"
    build_fused([f"a={a}", f"b={b}"], out, aot=True)
    built = json.loads(manifest_path_for(out).read_text())["device"]["onnxruntime"]
    major, minor, *_ = built.split(".")
    _rewrite_device(out, cpu="Some Other CPU @ 1.00GHz", onnxruntime=f"{major}.{minor}.99")
    session = open_session(out)
    x = np.ones((1, 8), np.float32)
    assert set(session.run({"a/x": x, "b/x": x})) == {"a/y", "b/y"}


@pytest.mark.parametrize(
    ("machine", "flags", "isa"),
    [
        ("x86_64", {"sse4_2", "avx", "avx2", "avx512f", "avx512bw"}, "avx512"),
        ("x86_64", {"sse4_2", "avx", "avx2", "fma"}, "avx2"),
        ("AMD64", {"sse4_2"}, "sse"),
        ("aarch64", {"fp", "asimd"}, "neon"),
        ("aarch64", {"fp", "asimd", "sve"}, "sve"),
        ("riscv64", set(), "riscv64"),
    ],
)
def test_isa_class(machine, flags, isa):
    assert isa_class(machine, flags) == isa
