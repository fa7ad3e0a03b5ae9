"""The ONNX Runtime targets: `--aot` stores ONNX Runtime's optimised graph as ONNX with its weights
mapped in place, for the CPU it was built on."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest

from fusedinf_cc.artifacts.manifest import manifest_path_for
from fusedinf_cc.backends.cpu_target import (
    IncompatibleCpuError,
    this_cpu,
)
from fusedinf_cc.backends.sessions import open_session
from fusedinf_cc.compiler.build import build_fused
from tests.support import builders
from tests.support.commands import run_cli, run_probe

NCHWC_DOMAIN = "com.microsoft.nchwc"


@pytest.fixture(scope="module")
def heads_aot(zoo, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("aot") / "heads.onnx"
    build_fused([f"cls={zoo('head0')}", f"seg={zoo('head1')}"], out, share_inputs="auto", aot=True)
    return out


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


def test_an_aot_artifact_is_for_the_cpu_provider_only(tmp_path):
    a, b = builders.affine_pair(tmp_path)
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
    a, b = builders.affine_pair(tmp_path)
    result = run_cli("fuse", a, b, "--aot", *extra, "-o", tmp_path / output)
    assert result.returncode == 2 and says in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / output).exists()


def test_portable_artifacts_record_no_cpu(tmp_path):
    a, b = builders.affine_pair(tmp_path)
    out = tmp_path / "fused.onnx"
    build_fused([f"a={a}", f"b={b}"], out)
    assert json.loads(manifest_path_for(out).read_text())["device"] == {}


def test_sharing_weights_lowers_only_a_portable_artifacts_load(heads_aot, tmp_path):
    """`share_weights` loads a portable artifact at basic optimisation without prepacking, so
    its weights stay in the mapped file; an ahead-of-time artifact already loads with no graph
    work at all, and sharing must not raise that to basic."""
    import onnxruntime as ort

    a, b = builders.affine_pair(tmp_path)
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
