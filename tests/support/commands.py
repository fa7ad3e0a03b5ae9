"""Run the tool as a user does, or its library as the CLI does: in this process or a fresh one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fusedinf_cc.artifacts.manifest import Manifest
from fusedinf_cc.compiler.pipeline import fuse, write_fused
from fusedinf_cc.onnx_io.model_io import load_sources
from fusedinf_cc.passes.base import FusionOptions

REPO = Path(__file__).resolve().parents[2]
ZOO_CACHE = Path(os.environ.get("FUSEDINF_ZOO_CACHE", REPO / ".cache" / "zoo"))


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


def build_pair_dist(root: Path, *, width: int = 64, aot: bool = False) -> Path:
    """A dist folder under `root` of one built bundle, `pair`: two affine models `a` and `b`
    (`models/m0.onnx` and `models/m1.onnx`, `width` wide), ahead of time where `aot`."""
    from tests.support import builders

    (root / "models").mkdir(parents=True, exist_ok=True)
    for seed in range(2):
        builders.save(builders.affine(seed, width=width), root / "models" / f"m{seed}.onnx")
    spec = '[bundles.pair]\nmodels = { a = "models/m0.onnx", b = "models/m1.onnx" }\n'
    return build_dist(root, spec + ("aot = true\n" if aot else ""))


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


def fuse_pair(folder: Path, *extra: str) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """`fuse` two affine models (`a`, and `second`) into `folder`/fused.onnx, as a user would."""
    from tests.support import builders

    a = builders.save(builders.affine(0), folder / "a.onnx")
    b = builders.save(builders.affine(1), folder / "b.onnx")
    out = folder / "fused.onnx"
    result = run_cli("fuse", a, f"second={b}", "-o", out, *extra)
    assert result.returncode == 0, result.stderr
    return out, result


def assert_clean_failure(
    result: subprocess.CompletedProcess[str], out: Path, *, mentions: str
) -> None:
    """A user mistake: exit 2, one line on stderr that `mentions` it, no traceback, and
    nothing written at `out` (no temporary files beside it either)."""
    lines = result.stderr.rstrip("\n").splitlines()  # a blank line before it counts too
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1, f"expected one line on stderr, got: {result.stderr!r}"
    assert lines[0].startswith("error: ")
    assert mentions in lines[0], lines[0]
    assert "Traceback" not in result.stderr + result.stdout
    assert not out.exists()
    if out.parent.is_dir():
        leftovers = [p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}")]
        assert not leftovers, f"temporary files left behind: {leftovers}"
