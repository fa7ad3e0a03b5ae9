"""A dist folder's index: `<bundle>/bundle.json` names every file of a built bundle and its sha256.

`bundle build` writes it; `bundle verify`, `bundle unpack`, `serve` and `export` read it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from fusedinf_cc.artifacts.manifest import check_integers, read_json, read_manifest
from fusedinf_cc.common.errors import UserInputError
from fusedinf_cc.common.files import sha256_file

DIST_FORMAT = "fusedinf-dist/1"
INDEX = "bundle.json"
# A bundle's representative inputs (its spec's `inputs`), for footprints measured where it runs.
SHIPPED_INPUTS = "inputs.npz"
MAX_INDEX_BYTES = 16 * 2**20


def index_path(bundle_dir: Path, name: object) -> Path:
    """A file named by `bundle.json`: a plain name inside `bundle_dir`, never a path that is
    absolute or climbs out of it (a hand-edited index must not serve another file)."""
    if not isinstance(name, str) or not name or Path(name).name != name or name in (".", ".."):
        raise UserInputError(
            f"{bundle_dir / INDEX}: {name!r} is not a file of this bundle (a plain file name "
            "inside its folder)"
        )
    return bundle_dir / name


@dataclass
class IndexedArtifact:
    """One built artifact of a bundle, as `bundle.json` lists it."""

    target: str
    path: str
    manifest: str
    size_bytes: int
    sha256: str


@dataclass
class BundleIndex:
    """`bundle.json`'s schema: what every reader may rely on."""

    format: str
    name: str
    cache_key: str
    artifacts: list[IndexedArtifact]
    files: dict[str, str]
    sizes: dict[str, int] = field(default_factory=dict)
    verify: list[dict[str, Any]] = field(default_factory=list)
    inputs: str | None = None


def check_index(data: Any, where: str) -> dict[str, Any]:
    """`data` (a parsed bundle.json) if it fits the schema; one line naming the field if not."""
    check_integers(data, where)
    try:
        index = msgspec.convert(data, BundleIndex, strict=True)
    except msgspec.ValidationError as error:
        raise UserInputError(f"{where}: not a bundle index ({error})") from None
    if any(size < 0 for size in index.sizes.values()):
        raise UserInputError(f"{where}: not a bundle index (a negative size)")
    return data


def shipped_inputs(artifact: Path) -> Path | None:
    """The representative inputs the bundle folder of `artifact` ships, if its index names any."""
    index = read_index(artifact.parent)
    if index is None or "inputs" not in index:
        return None
    return index_path(artifact.parent, index["inputs"])


def read_index(bundle_dir: Path) -> dict[str, Any] | None:
    """The bundle's index, checked against its schema; None where the folder has none (or one
    of another format). A damaged one is a one-line error naming the field."""
    path = bundle_dir / INDEX
    if not path.is_file():
        return None
    data = read_json(path, "bundle index", MAX_INDEX_BYTES)
    if not isinstance(data, dict) or data.get("format") != DIST_FORMAT:
        return None
    return check_index(data, str(path))


def verify_bundle_dir(bundle_dir: Path) -> list[str]:
    """What is wrong with one built bundle: missing or changed files, artifacts that do not match
    their manifests. Empty when it is intact."""
    try:
        index = read_index(bundle_dir)
    except UserInputError as error:
        return [str(error)]
    if index is None:
        return [f"{bundle_dir.name}: no readable {INDEX}"]
    problems = []
    for name, digest in sorted(index.get("files", {}).items()):
        try:
            path = index_path(bundle_dir, name)
        except UserInputError as error:
            problems.append(str(error))
            continue
        if not path.is_file():
            problems.append(f"{bundle_dir.name}/{name}: missing")
        elif sha256_file(path) != digest:
            problems.append(f"{bundle_dir.name}/{name}: sha256 differs from {INDEX}")
    for artifact in index.get("artifacts", []):
        try:
            manifest_path = index_path(bundle_dir, artifact["manifest"])
            artifact_path = index_path(bundle_dir, artifact["path"])
            manifest = read_manifest(manifest_path)
        except UserInputError as error:
            problems.append(f"{bundle_dir.name}/{artifact.get('manifest')}: {error}")
            continue
        if manifest.artifact is None or not artifact_path.is_file():
            continue  # reported above as missing
        if sha256_file(artifact_path) != manifest.artifact.sha256:
            problems.append(
                f"{bundle_dir.name}/{artifact['path']}: sha256 differs from its manifest"
            )
    return problems


def verify_dist(dist: Path) -> tuple[list[str], list[str]]:
    """(bundles checked, problems) for every `<bundle>/bundle.json` under `dist`."""
    if not dist.is_dir():
        raise UserInputError(f"{dist}: no such folder")
    bundles = sorted(p for p in dist.iterdir() if p.is_dir() and (p / INDEX).is_file())
    if not bundles:
        raise UserInputError(f"{dist}: no bundles in it (no */{INDEX})")
    problems = [problem for bundle in bundles for problem in verify_bundle_dir(bundle)]
    return [b.name for b in bundles], problems
