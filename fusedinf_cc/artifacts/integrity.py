"""The files an artifact's manifest records beside it, checked against their digests.

A model beside another build's side file, or a part left by an interrupted copy, loads and
answers wrongly; whatever maps those files checks them first, in one line.
"""

from __future__ import annotations

from pathlib import Path

from fusedinf_cc.artifacts.manifest import Artifact, PartRecord, StageRecord
from fusedinf_cc.common.errors import UserInputError
from fusedinf_cc.common.files import sha256_file


def check_side_file(path: Path, artifact: Artifact) -> None:
    """Refuse an artifact whose side file is missing or is not the one it was built with (an
    interrupted overwrite, a copy from another build): it would load and answer wrongly."""
    if not artifact.external_data_sha256:
        return
    if not artifact.external_data:
        raise UserInputError(f"{path}: its manifest records a weights file's digest but no file")
    name = artifact.external_data
    _check_built_with(path, name, artifact.external_data_sha256, f"weights file {name!r}")


def check_part_file(artifact: Path, part: PartRecord | StageRecord) -> None:
    """Refuse a part or stage file that is missing or is not the one built with the artifact."""
    if isinstance(part, StageRecord):
        what = f"stage {part.index} ({part.path!r})"
    else:
        what = f"part {part.path!r} (model {part.model!r})"
    _check_built_with(artifact, part.path, part.sha256, what)


def _check_built_with(artifact: Path, name: str, digest: str, what: str) -> None:
    path = artifact.with_name(name)
    if not path.is_file():
        raise UserInputError(f"{artifact}: its {what} is missing")
    if sha256_file(path) != digest:
        raise UserInputError(
            f"{artifact}: its {what} differs from the one it was built with (an interrupted "
            "or partial copy?); rebuild or copy the artifact again"
        )
