"""Deployments: the same models as real bundles, laid out unfused, fused or grouped.

Unfused, every model is its own bundle; fused, every function is one; grouped, a bundle per
group of a layout (and per called model in none). Every bundle is built the same way, a model
alone too (as a bundle of one, as `bundle build` builds it), so that deployments differ only in
their layout. Bundles are built once per set of models and reused until a source changes.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from fusedinf_cc.artifacts.manifest import cached_manifest
from fusedinf_cc.common.errors import UserInputError
from fusedinf_cc.common.files import make_output_folder, sha256_file
from fusedinf_cc.compiler.build import build_fused
from fusedinf_cc.runtime.budget import held_at_once
from fusedinf_cc.runtime.bundle import Bundle, open_bundle
from fusedinf_cc.runtime.footprint import Footprint
from fusedinf_cc.workload.layout import Functions, Layout, check_groups, used_models
from fusedinf_cc.workload.routing import Call, Routes, route


@dataclass(frozen=True)
class Deployment:
    """Bundles to register, and per function what one of its requests runs."""

    name: str
    bundles: dict[str, Bundle]  # opened once: footprints measured once
    calls: Routes

    @property
    def layout(self) -> Layout:
        return Layout({name: bundle.members for name, bundle in self.bundles.items()})

    @property
    def footprints(self) -> list[Footprint]:
        return [bundle.footprint for bundle in self.bundles.values()]

    def renamed(self, name: str) -> Deployment:
        return Deployment(name, self.bundles, self.calls)


def total_footprint(deployment: Deployment) -> int:
    """Every bundle of `deployment` resident at once, each with its parts (`held_at_once`)."""
    return held_at_once(deployment.footprints)


def deployments(
    models: Mapping[str, Path],
    functions: Functions,
    work_dir: Path,
    groups: Mapping[str, Iterable[str]] | None = None,
    aot: bool = False,
    stack: bool = False,
) -> list[Deployment]:
    """The unfused deployment (a bundle per model), the fused one (a bundle per function) and,
    given `groups`, the grouped one (a bundle per group of models). With `aot`, every bundle of
    every deployment is built ahead of time for this CPU (`fuse --aot`); `stack` builds the
    fused and grouped bundles with `fuse --stack`."""
    unknown = set(used_models(functions)) - set(models)
    if unknown:
        raise UserInputError(f"functions use unknown models: {sorted(unknown)}")
    make_output_folder(work_dir, "--work-dir")
    built = [
        Deployment(
            "unfused",
            {m: group_bundle(models, [m], m, work_dir, aot) for m in used_models(functions)},
            {f: [Call(m) for m in used] for f, used in functions.items()},
        ),
        Deployment(
            "fused",
            {
                f: open_bundle(_built(models, used, work_dir / f, aot, stack), name=f)
                for f, used in functions.items()
            },
            {f: [Call(f)] for f in functions},
        ),
    ]
    if groups is not None:
        built.append(grouped_deployment(models, functions, groups, work_dir, aot, stack))
    return built


def grouped_deployment(
    models: Mapping[str, Path],
    functions: Functions,
    groups: Mapping[str, Iterable[str]],
    work_dir: Path,
    aot: bool = False,
    stack: bool = False,
) -> Deployment:
    """A bundle per group (fused; a model may sit in several groups) and per called model in
    none; a request runs what `route` picks."""
    check_groups(groups, models)
    layout = Layout(groups).completed(functions)
    bundles = {
        name: group_bundle(models, sorted(members), name, work_dir, aot, stack)
        for name, members in layout.items()
    }
    return Deployment("grouped", bundles, route(functions, layout))


def group_bundle(
    models: Mapping[str, Path],
    members: Sequence[str],
    name: str,
    work_dir: Path,
    aot: bool = False,
    stack: bool = False,
) -> Bundle:
    """The bundle of `members` under `name`: one model as the unfused deployment opens it, more
    fused (built once per set of models and reused)."""
    if len(members) == 1:
        return open_bundle(_single(models, members[0], work_dir, aot), name=name)
    key = hashlib.sha256(",".join(sorted(members)).encode()).hexdigest()[:12]
    return open_bundle(_built(models, members, work_dir / f"group-{key}", aot, stack), name=name)


def _built(
    models: Mapping[str, Path],
    members: Sequence[str],
    stem: Path,
    aot: bool,
    stack: bool = False,
) -> Path:
    """The fused bundle of `members` at `stem`.onnx (`stem`.stack.aot.onnx with both options),
    built once and reused until a source model changes."""
    suffix = (".stack" if stack else "") + (".aot.onnx" if aot else ".onnx")
    out = stem.with_name(stem.name + suffix)
    if not _built_from(out, {m: models[m] for m in members}):
        specs = [f"{m}={models[m]}" for m in members]
        build_fused(specs, out, share_inputs="auto", aot=aot, stack=stack)
    return out


def _built_from(artifact: Path, sources: Mapping[str, Path]) -> bool:
    """Whether `artifact` exists and was built from exactly these files (by sha256)."""
    manifest = cached_manifest(artifact)
    if manifest is None:
        return False
    built = {entry.name: entry.sha256 for entry in manifest.models}
    return built == {name: _sha256_of(path) for name, path in sources.items()}


def _sha256_of(path: Path) -> str:
    """A source's sha256, hashed once per version of the file: one model sits in several
    bundles of a deployment, and in every deployment."""
    stat = path.stat()
    return _cached_sha256(path.resolve(), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=1024)
def _cached_sha256(path: Path, mtime_ns: int, size: int) -> str:
    return sha256_file(path)


def _single(models: Mapping[str, Path], model: str, work_dir: Path, aot: bool) -> Path:
    """An unfused model's bundle: built as a bundle of one, as `bundle build` builds a model
    alone. The file as exported holds its weights inline: opened as given, a portable resnet18
    took 144 MiB against 90 MiB built, which a replay would count against not fusing."""
    return _built(models, [model], work_dir / f"model-{model}", aot)
