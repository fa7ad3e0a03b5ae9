"""`bundle build`: every bundle of a spec, fused, built for its targets, verified, and written to
`dist/<bundle>/` atomically; an unchanged bundle (same cache key) is skipped.

`dist/<bundle>/bundle.json` lists the bundle's files with their sha256 and the cache key: the
sha256 of the source models, the bundle's options and the versions of the tools that built it.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from fusedinf_cc.artifacts.index import (
    DIST_FORMAT,
    INDEX,
    SHIPPED_INPUTS,
    IndexedArtifact,
    read_index,
    verify_bundle_dir,
)
from fusedinf_cc.artifacts.manifest import manifest_path_for
from fusedinf_cc.common.errors import FusedInfError, UserInputError
from fusedinf_cc.common.files import sha256_file, staging_dir
from fusedinf_cc.common.versions import tool_versions
from fusedinf_cc.precompile.spec import TARGETS, BundleSpec, Spec

Status = Literal["built", "cached", "failed", "error"]


@dataclass
class BundleResult:
    name: str
    status: Status
    cache_key: str
    seconds: float = 0.0
    artifacts: list[IndexedArtifact] = field(default_factory=list)
    verify: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None


def cache_key(bundle: BundleSpec) -> str:
    """What decides a bundle's bytes: its sources, its options and the tools' versions."""
    versions = tool_versions()
    tools = {k: v for k, v in versions.items() if k not in ("cpu", "machine")}
    if "ort" in bundle.targets or bundle.aot:  # ONNX Runtime optimised it for this CPU
        tools["cpu"], tools["machine"] = versions["cpu"], versions["machine"]
    material = {
        "format": DIST_FORMAT,
        "sources": {name: sha256_file(path) for name, path in sorted(bundle.models.items())},
        "options": bundle.options_record(),
        "tools": tools,
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()


def select(spec: Spec, only: Sequence[str] = (), targets: Sequence[str] = ()) -> list[BundleSpec]:
    """The bundles to build: `only` by name, each limited to `targets` (all when empty)."""
    unknown = set(only) - set(spec.bundles)
    if unknown:
        raise UserInputError(
            f"--only names unknown bundles {sorted(unknown)} (the spec has: "
            f"{', '.join(spec.bundles)})"
        )
    bad_targets = set(targets) - set(TARGETS)
    if bad_targets:
        raise UserInputError(f"--targets {sorted(bad_targets)}: use {', '.join(TARGETS)}")
    chosen = []
    for name, bundle in spec.bundles.items():
        if only and name not in only:
            continue
        kept = tuple(t for t in bundle.targets if not targets or t in targets)
        if kept:
            chosen.append(replace(bundle, targets=kept, aot=bundle.aot and "onnx" in kept))
    if not chosen:
        raise UserInputError("nothing to build: no bundle has the targets asked for")
    return chosen


def check_backends(bundles: Iterable[BundleSpec]) -> None:
    """Fail before any build when a target's backend is not installed here."""
    from fusedinf_cc.compiler.targets import target_for_output

    for bundle in bundles:
        for target in bundle.targets:
            try:
                target_for_output(Path(f"{bundle.name}{TARGETS[target]}"))
            except FusedInfError as error:
                raise type(error)(
                    f"bundle {bundle.name!r}, target {target}: {error}; build the other targets "
                    "here with --targets"
                ) from None


def build_bundles(
    bundles: Sequence[BundleSpec],
    out_dir: Path,
    *,
    jobs: int = 1,
    on_done: Callable[[BundleResult], None] | None = None,
) -> list[BundleResult]:
    """Build (or skip, when cached) every bundle into `out_dir/<bundle>/`."""
    if not out_dir.is_dir():
        try:
            out_dir.mkdir(parents=True)
        except OSError as error:
            raise UserInputError(f"--out {out_dir}: cannot create it ({error.strerror})") from None
    check_backends(bundles)
    results: list[BundleResult] = []
    if jobs <= 1 or len(bundles) == 1:
        for bundle in bundles:
            results.append(build_bundle(bundle, out_dir))
            if on_done:
                on_done(results[-1])
        return results
    context = multiprocessing.get_context("spawn")  # no forked copies of loaded models
    with ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
        futures = [pool.submit(build_bundle, bundle, out_dir) for bundle in bundles]
        for future in futures:
            results.append(future.result())
            if on_done:
                on_done(results[-1])
    return results


def build_bundle(bundle: BundleSpec, out_dir: Path) -> BundleResult:
    """One bundle: skip it when its cache key and files match, else build, verify, swap in."""
    started = time.perf_counter()
    key = cache_key(bundle)
    target_dir = out_dir / bundle.name
    cached = _cached(target_dir, key)
    if cached is not None:
        return cached
    try:
        with staging_dir(target_dir) as staging:
            result = _build_into(bundle, staging, key)
            if result.status == "built":
                _swap_in(staging, target_dir)
    except FusedInfError as error:
        return BundleResult(bundle.name, "error", key, error=str(error))
    result.seconds = time.perf_counter() - started
    return result


def _build_into(bundle: BundleSpec, folder: Path, key: str) -> BundleResult:
    from fusedinf_cc.backends.tensorrt.options import parse_engine_options
    from fusedinf_cc.compiler.build import build_fused_all
    from fusedinf_cc.measure.verify import verify_artifact

    result = BundleResult(bundle.name, "built", key)
    artifacts = [folder / f"{bundle.name}{TARGETS[target]}" for target in bundle.targets]
    manifests = build_fused_all(
        [f"{name}={path}" for name, path in bundle.models.items()],
        artifacts,
        share_input=bundle.share_input,
        share_inputs=bundle.share_inputs,
        dedup=bundle.dedup,
        cse=bundle.cse,
        stack=bundle.stack,
        aot=bundle.aot,
        parts=bundle.parts,
        opset=bundle.opset,
        engine=(
            parse_engine_options(**bundle.engine)
            if "engine" in bundle.targets and bundle.engine
            else None
        ),
    )
    for target, artifact, manifest in zip(bundle.targets, artifacts, manifests, strict=True):
        assert manifest.artifact is not None
        result.artifacts.append(
            IndexedArtifact(
                target=target,
                path=artifact.name,
                manifest=manifest_path_for(artifact).name,
                size_bytes=manifest.artifact.size_bytes,
                sha256=manifest.artifact.sha256,
            )
        )
        report = verify_artifact(
            artifact,
            feeds_path=bundle.inputs,
            rtol=bundle.rtol,
            atol=bundle.atol,
            shapes=_verify_shapes(bundle),
        )
        result.verify.append(
            {
                "artifact": artifact.name,
                "ok": report.ok,
                "max_abs": max((c.max_abs for c in report.comparisons), default=0.0),
                "failures": [f"{c.model}.{c.output}" for c in report.failures],
            }
        )
        if not report.ok:
            result.status = "failed"
            result.error = f"{artifact.name} differs from its sources: " + ", ".join(
                result.verify[-1]["failures"]
            )
            return result
    if bundle.inputs is not None:
        shutil.copyfile(bundle.inputs, folder / SHIPPED_INPUTS)
    index = {
        "format": DIST_FORMAT,
        "name": bundle.name,
        "cache_key": key,
        "artifacts": [asdict(a) for a in result.artifacts],
        # Manifests included: nothing writes into a built bundle, so every file is hashed.
        "files": {
            path.name: sha256_file(path) for path in sorted(folder.iterdir()) if path.is_file()
        },
        # What unpack checks each member against before and while writing it.
        "sizes": {
            path.name: path.stat().st_size for path in sorted(folder.iterdir()) if path.is_file()
        },
        "verify": result.verify,
        **({"inputs": SHIPPED_INPUTS} if bundle.inputs is not None else {}),
    }
    (folder / INDEX).write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    return result


def _verify_shapes(bundle: BundleSpec) -> dict[str, tuple[int, ...]]:
    from fusedinf_cc.common.shapes import parse_shapes

    return parse_shapes(bundle.engine.get("shapes")) if bundle.engine.get("shapes") else {}


def _swap_in(staging: Path, target_dir: Path) -> None:
    """Replace `target_dir` by the finished `staging` folder with renames only."""
    old = None
    if target_dir.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{target_dir.name}.old.", dir=target_dir.parent))
        os.replace(target_dir, old / target_dir.name)
    os.chmod(staging, 0o755)  # mkdtemp's 0700 is wrong for a folder meant to be shipped
    os.replace(staging, target_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _cached(target_dir: Path, key: str) -> BundleResult | None:
    index = read_index(target_dir)
    if index is None or index.get("cache_key") != key or verify_bundle_dir(target_dir):
        return None
    return BundleResult(
        name=index["name"],
        status="cached",
        cache_key=key,
        artifacts=[IndexedArtifact(**a) for a in index["artifacts"]],
        verify=index.get("verify", []),
    )


def results_json(results: Sequence[BundleResult], extra: dict[str, Any]) -> str:
    return (
        json.dumps(
            {
                **extra,
                "ok": all(r.status in ("built", "cached") for r in results),
                "bundles": [asdict(r) for r in results],
            },
            indent=2,
        )
        + "\n"
    )
