"""`--aot`: ONNX Runtime's optimised model stored as ONNX, checked against the CPU that loads it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from fusedinf_cc.artifacts.manifest import manifest_path_for
from fusedinf_cc.backends.cpu_target import (
    IncompatibleCpuError,
    isa_class,
    this_cpu,
)
from fusedinf_cc.backends.sessions import open_session
from fusedinf_cc.compiler.build import build_fused
from tests import builders
from tests.conftest import run_cli, run_probe

NCHWC_DOMAIN = "com.microsoft.nchwc"


@pytest.fixture(scope="module")
def heads_aot(zoo, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("aot") / "heads.onnx"
    build_fused([f"cls={zoo('head0')}", f"seg={zoo('head1')}"], out, share_inputs="auto", aot=True)
    return out


def _pair(folder: Path) -> tuple[Path, Path]:
    return (
        builders.save(builders.affine(0), folder / "a.onnx"),
        builders.save(builders.affine(1), folder / "b.onnx"),
    )


def _rewrite_device(artifact: Path, **changes: str) -> None:
    sidecar = manifest_path_for(artifact)
    data = json.loads(sidecar.read_text())
    data["device"].update(changes)
    sidecar.write_text(json.dumps(data))


def test_aot_stores_the_optimised_graph_and_matches_the_sources(heads_aot):
    model = onnx.load(str(heads_aot), load_external_data=False)
    # The convolutions were rewritten into ONNX Runtime's blocked layout before saving.
    assert NCHWC_DOMAIN in {opset.domain for opset in model.opset_import}
    assert any(node.domain == NCHWC_DOMAIN for node in model.graph.node)
    assert (heads_aot.parent / "heads.onnx.data").stat().st_size > 2 << 20
    manifest = json.loads(manifest_path_for(heads_aot).read_text())
    assert manifest["build_options"]["aot"] is True
    here = this_cpu(manifest["device"]["onnxruntime"])
    assert manifest["device"]["kind"] == "cpu"
    assert (manifest["device"]["machine"], manifest["device"]["isa"]) == (here.machine, here.isa)
    result = run_cli("verify", heads_aot)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "all 2 outputs match" in result.stdout
    described = run_cli("inspect", heads_aot)
    assert f"optimised ahead of time for {here.machine} ({here.isa})" in described.stdout


_ANON_GROWTH = """
import sys
from pathlib import Path
import numpy as np
from fusedinf_cc.runtime.procmem import status_bytes
from fusedinf_cc.backends.sessions import open_session
before = status_bytes()["RssAnon"]
session = open_session(Path(sys.argv[1]))
session.run({spec.name: np.ones([d or 1 for d in spec.shape], spec.dtype)
             for spec in session.inputs})
print(status_bytes()["RssAnon"] - before)
"""


def _anon_growth(artifact: Path) -> int:
    return run_probe(_ANON_GROWTH, artifact)


@pytest.mark.slow
def test_aot_weights_stay_in_the_memory_mapped_file(zoo, tmp_path):
    """A portable model's convolution weights are reordered into private memory at load; an
    ahead-of-time one's are read where they lie in the mapped side file, shareable between
    processes."""
    source = zoo("resnet18")
    portable, aot = tmp_path / "portable.onnx", tmp_path / "aot.onnx"
    build_fused([f"r={source}"], portable)
    build_fused([f"r={source}"], aot, aot=True)
    weights = (tmp_path / "aot.onnx.data").stat().st_size
    portable_growth, aot_growth = _anon_growth(portable), _anon_growth(aot)
    assert portable_growth > 0.8 * weights, (portable_growth, weights)
    assert aot_growth < 0.5 * weights, (aot_growth, weights)


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"isa": "sse"}, "the CPU classes differ"),
        ({"machine": "aarch64", "isa": "neon"}, "the CPU classes differ"),
        ({"onnxruntime": "0.9.0"}, "the ONNX Runtime versions differ"),
    ],
)
def test_loading_refuses_an_artifact_optimised_for_another_cpu(tmp_path, change, says):
    a, b = _pair(tmp_path)
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
    a, b = _pair(tmp_path)
    out = tmp_path / "fused.onnx"
    build_fused([f"a={a}", f"b={b}"], out, aot=True)
    built = json.loads(manifest_path_for(out).read_text())["device"]["onnxruntime"]
    major, minor, *_ = built.split(".")
    _rewrite_device(out, cpu="Some Other CPU @ 1.00GHz", onnxruntime=f"{major}.{minor}.99")
    session = open_session(out)
    x = np.ones((1, 8), np.float32)
    assert set(session.run({"a/x": x, "b/x": x})) == {"a/y", "b/y"}


def test_an_aot_artifact_is_for_the_cpu_provider_only(tmp_path):
    a, b = _pair(tmp_path)
    out = tmp_path / "fused.onnx"
    build_fused([f"a={a}", f"b={b}"], out, aot=True)
    with pytest.raises(IncompatibleCpuError, match="CPU provider; --backend ort-cuda"):
        open_session(out, "ort-cuda")


@pytest.mark.parametrize(
    ("output", "extra", "says"),
    [
        ("fused.ort", [], "--aot applies to .onnx outputs"),
        ("fused.engine", [], "--aot applies to .onnx outputs"),
        ("fused.onnx", ["--single-file"], "drop --single-file"),
    ],
)
def test_aot_where_it_means_nothing_is_refused(tmp_path, output, extra, says):
    a, b = _pair(tmp_path)
    result = run_cli("fuse", a, b, "--aot", *extra, "-o", tmp_path / output)
    assert result.returncode == 2 and says in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / output).exists()


def test_portable_artifacts_record_no_cpu(tmp_path):
    a, b = _pair(tmp_path)
    out = tmp_path / "fused.onnx"
    build_fused([f"a={a}", f"b={b}"], out)
    assert json.loads(manifest_path_for(out).read_text())["device"] == {}


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


def test_sharing_weights_lowers_only_a_portable_artifacts_load(heads_aot, tmp_path):
    """`share_weights` loads a portable artifact at basic optimisation without prepacking, so
    its weights stay in the mapped file; an ahead-of-time artifact already loads with no graph
    work at all, and sharing must not raise that to basic."""
    import onnxruntime as ort

    a, b = _pair(tmp_path)
    portable = tmp_path / "portable.onnx"
    build_fused([f"a={a}", f"b={b}"], portable)
    spin_off = {"config": {"session.intra_op.allow_spinning": "0"}}

    def loaded_with(path: Path, **kwargs) -> tuple[object, str, str]:
        options = open_session(path, **kwargs)._session.get_session_options()
        return (
            options.graph_optimization_level,
            options.get_session_config_entry("session.disable_prepacking"),
            options.get_session_config_entry("session.intra_op.allow_spinning"),
        )

    level = ort.GraphOptimizationLevel
    assert loaded_with(heads_aot, share_weights=True, options=spin_off) == (
        level.ORT_DISABLE_ALL,
        "1",
        "0",
    )
    assert loaded_with(portable, share_weights=True, options=spin_off) == (
        level.ORT_ENABLE_BASIC,
        "1",
        "0",
    )
    default = open_session(portable, options=spin_off)._session.get_session_options()
    assert default.graph_optimization_level == level.ORT_ENABLE_ALL
