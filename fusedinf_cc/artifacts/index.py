"""A dist folder's index: `<bundle>/bundle.json` names every file of a built bundle and its sha256.

`bundle build` writes it; `bundle verify`, `bundle unpack`, `serve` and `export` read it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fusedinf_cc.artifacts.manifest import read_manifest
from fusedinf_cc.common.errors import UserInputError
from fusedinf_cc.common.files import sha256_file

DIST_FORMAT = "fusedinf-dist/1"
INDEX = "bundle.json"
# A bundle's representative inputs (its spec's `inputs`), for footprints measured where it runs.
SHIPPED_INPUTS = "inputs.npz"


def index_path(bundle_dir: Path, name: object) -> Path:
    """A file named by `bundle.json`: a plain name inside `bundle_dir`, never a path that is
    absolute or climbs out of it (a hand-edited index must not serve another file)."""
    if not isinstance(name, str) or not name or Path(name).name != name or name in (".", ".."):
        raise UserInputError(
            f"{bundle_dir / INDEX}: {name!r} is not a file of this bundle (a plain file name "
            "inside its folder)"
        )
    return bundle_dir / name


def shipped_inputs(artifact: Path) -> Path | None:
    """The representative inputs the bundle folder of `artifact` ships, if its index names any."""
    index = read_index(artifact.parent)
    if index is None or "inputs" not in index:
        return None
    return index_path(artifact.parent, index["inputs"])


def read_index(bundle_dir: Path) -> dict[str, Any] | None:
    path = bundle_dir / INDEX
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("format") != DIST_FORMAT:
        return None
    return data


def verify_bundle_dir(bundle_dir: Path) -> list[str]:
    """What is wrong with one built bundle: missing or changed files, artifacts that do not match
    their manifests. Empty when it is intact."""
    index = read_index(bundle_dir)
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
