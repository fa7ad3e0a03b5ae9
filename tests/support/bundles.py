"""Bundles built for tests: two affine models fused, portable or ahead of time."""

from __future__ import annotations

from pathlib import Path

from fusedinf_cc.compiler.build import build_fused
from tests.support import builders
from tests.support.commands import fuse_files


def fused_pair_bundle(
    folder: Path, name: str, seed: int, width: int = 256, *, aot: bool = False
) -> Path:
    """A fused bundle of two affine models `<name>_a`, `<name>_b` with separate inputs; `aot`
    builds it ahead of time (weights in a mapped side file, pooled by the loader)."""
    folder.mkdir(parents=True, exist_ok=True)
    a = builders.save(builders.affine(seed, width=width), folder / f"{name}_a.onnx")
    b = builders.save(builders.affine(seed + 100, width=width), folder / f"{name}_b.onnx")
    out = folder / f"{name}.onnx"
    if aot:
        build_fused([f"{name}_a={a}", f"{name}_b={b}"], out, aot=True)
    else:
        fuse_files([(f"{name}_a", a), (f"{name}_b", b)], out)
    return out
