"""Fixtures: zoo models (exported once, cached), and helpers to fuse and to run the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from fusedinf_cc.artifacts.manifest import Manifest
from fusedinf_cc.compiler.pipeline import fuse, write_fused
from fusedinf_cc.onnx_io.model_io import load_sources
from fusedinf_cc.passes.base import FusionOptions

REPO = Path(__file__).resolve().parent.parent
ZOO_CACHE = Path(os.environ.get("FUSEDINF_ZOO_CACHE", REPO / ".cache" / "zoo"))


@pytest.fixture(scope="session", autouse=True)
def footprint_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Footprints measured by the tests (and the commands they start) go to a cache of the
    session's own, not the user's."""
    folder = tmp_path_factory.mktemp("footprints")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FUSEDINF_CACHE_DIR", str(folder))
        yield folder


@pytest.fixture(scope="module")
def small_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Four small distinct models (m0..m3) for replays: fast to build, load and run."""
    from tests import builders

    folder = tmp_path_factory.mktemp("small-models")
    return {
        f"m{i}": builders.save(builders.affine(i, width=128), folder / f"m{i}.onnx")
        for i in range(4)
    }


@pytest.fixture(scope="session")
def zoo() -> Callable[..., Path]:
    """`zoo("resnet18", opset=11)` -> path of that export, made once per cache."""
    pytest.importorskip("torch", reason="the model zoo needs torch (pip install torch==2.13.0)")
    from model_zoo.zoo import export

    def get(name: str, *, opset: int = 17, dynamic_batch: bool = False) -> Path:
        folder = ZOO_CACHE / f"opset{opset}{'-dynamic' if dynamic_batch else ''}"
        return export(name, folder, opset=opset, dynamic_batch=dynamic_batch)

    return get


def fuse_files(
    specs: Sequence[tuple[str, Path]], out: Path, options: FusionOptions | None = None
) -> Manifest:
    """The library path the CLI takes: load, fuse, write."""
    return write_fused(fuse(load_sources(specs), options), out)


def build_dist(root: Path, spec: str) -> Path:
    """Write `spec` as `root/fusedinf.toml` (paths relative to `root`), build every bundle of it
    into `root/dist` as `bundle build` does, and return that folder."""
    from fusedinf_cc.precompile.build import build_bundles
    from fusedinf_cc.precompile.spec import read_spec

    (root / "fusedinf.toml").write_text(spec)
    bundles = list(read_spec(root / "fusedinf.toml").bundles.values())
    results = build_bundles(bundles, root / "dist")
    assert {r.status for r in results} == {"built"}, results
    return root / "dist"


def run_cli(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run the real command in a fresh process, as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "fusedinf_cc", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, "COLUMNS": "200"},
        check=False,
    )


def run_probe(script: str, *args: str | Path) -> Any:
    """Run `script` in a fresh Python process, so that the memory it measures is its own, and
    return the JSON value of the last line it prints."""
    result = subprocess.run(
        [sys.executable, "-c", script, *map(str, args)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(result.stdout.strip().splitlines()[-1])
