"""The manifest: which fused inputs and outputs belong to which source model, and how it was built.

It travels beside the artifact as `<artifact>.manifest.json` and, for ONNX artifacts, inside the
model's `metadata_props` too. Its JSON has a format version; readers refuse unknown formats.
"""

from __future__ import annotations

import functools
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from fusedinf_cc.artifacts.weight_records import WeightRecord
from fusedinf_cc.common.errors import UserInputError

FORMAT = "fusedinf-bundle/1"
METADATA_KEY = "fusedinf.manifest"
MANIFEST_SUFFIX = ".manifest.json"


@dataclass
class ModelEntry:
    """One source model and the map from its own I/O names to the fused graph's names."""

    name: str
    source: str
    sha256: str
    inputs: dict[str, str]
    outputs: dict[str, str]


@dataclass
class SharedInput:
    """A fused input that several models read; `members` are `model.input` references."""

    name: str
    members: list[str]


@dataclass
class PassRecord:
    """What one pass did. Counts are over the whole model set; `seconds` is wall time."""

    name: str
    changed: bool
    detail: str
    nodes_before: int
    nodes_after: int
    initializers_before: int
    initializers_after: int
    weight_bytes_before: int
    weight_bytes_after: int
    seconds: float = 0.0


@dataclass
class Artifact:
    """The built file a backend runs."""

    path: str
    sha256: str
    size_bytes: int
    backend: str
    external_data: str | None = None
    # The side file's sha256: a reader checks every file it maps, not only the model, since a
    # model beside another build's side file runs and gives wrong numbers.
    external_data_sha256: str | None = None


@dataclass
class Manifest:
    """Everything a reader needs to run, verify or swap a fused artifact."""

    models: list[ModelEntry]
    shared_inputs: list[SharedInput] = field(default_factory=list)
    passes: list[PassRecord] = field(default_factory=list)
    opset: int = 0
    ir_version: int = 0
    artifact: Artifact | None = None
    build_options: dict[str, Any] = field(default_factory=dict)
    tools: dict[str, str] = field(default_factory=dict)
    footprint: dict[str, int] = field(default_factory=dict)
    # What an engine was built for (TensorRT version, GPU, compute capability); empty for ONNX.
    device: dict[str, Any] = field(default_factory=dict)
    # Ahead-of-time artifacts: where each weight lies in the side file and what it is, so that
    # bundles holding the same weights share them. Parsed with the manifest, which a loader
    # reads once per version of the file: a swap does not parse them again.
    weights: list[WeightRecord] = field(default_factory=list)
    format: str = FORMAT

    def model(self, name: str) -> ModelEntry:
        for entry in self.models:
            if entry.name == name:
                return entry
        known = ", ".join(entry.name for entry in self.models)
        raise UserInputError(f"no model {name!r} in this bundle (it has: {known})")

    def to_dict(self, *, reproducible: bool = False) -> dict[str, Any]:
        """A JSON-ready dict. `reproducible` drops what differs run to run (timings, artifact,
        tool versions), so that the copy embedded in the model keeps the model byte-identical."""
        data = asdict(self)
        if reproducible:
            for record in data["passes"]:
                record.pop("seconds")
            for volatile in ("artifact", "tools", "footprint", "device", "weights"):
                data.pop(volatile)
        return data

    def to_json(self, *, reproducible: bool = False) -> str:
        return json.dumps(self.to_dict(reproducible=reproducible), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        if data.get("format") != FORMAT:
            raise UserInputError(
                f"manifest format {data.get('format')!r} is not {FORMAT!r}; rebuild the bundle "
                "with this version of fusedinf-cc"
            )
        try:
            artifact = data.get("artifact")
            return cls(
                models=[ModelEntry(**entry) for entry in data["models"]],
                shared_inputs=[SharedInput(**entry) for entry in data.get("shared_inputs", [])],
                passes=[PassRecord(**entry) for entry in data.get("passes", [])],
                opset=data.get("opset", 0),
                ir_version=data.get("ir_version", 0),
                artifact=_artifact(artifact) if artifact else None,
                build_options=data.get("build_options", {}),
                tools=data.get("tools", {}),
                footprint=data.get("footprint", {}),
                device=data.get("device", {}),
                weights=[WeightRecord.from_manifest(r) for r in data.get("weights", [])],
                format=data["format"],
            )
        except (KeyError, TypeError, ValueError) as error:
            raise UserInputError(f"manifest is malformed ({error})") from None


def _artifact(record: dict[str, Any]) -> Artifact:
    """The artifact record; the files it names are plain names beside the manifest, never a
    path that climbs out of its folder or is absolute (a reader maps what they name)."""
    artifact = Artifact(**record)
    for name in (artifact.path, artifact.external_data):
        if name is not None and (not isinstance(name, str) or Path(name).name != name):
            raise ValueError(f"artifact file {name!r} is not a plain file name")
    return artifact


def manifest_path_for(artifact_path: Path) -> Path:
    return artifact_path.with_name(artifact_path.name + MANIFEST_SUFFIX)


def read_manifest(path: Path) -> Manifest:
    """Read a manifest file; a one-line error for a missing or malformed one."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserInputError(f"{path}: no such manifest") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise UserInputError(f"{path}: not a JSON manifest ({error})") from None
    if not isinstance(data, dict):
        raise UserInputError(f"{path}: not a JSON manifest")
    return Manifest.from_dict(data)


def manifest_for_artifact(artifact_path: Path) -> Manifest:
    """The manifest beside an artifact: `x.onnx` -> `x.onnx.manifest.json`."""
    sidecar = manifest_path_for(artifact_path)
    if not sidecar.is_file():
        raise UserInputError(
            f"{artifact_path}: no manifest beside it ({sidecar.name}); was it written by "
            "`fusedinf-cc fuse`?"
        )
    return read_manifest(sidecar)


def cached_manifest(artifact_path: Path) -> Manifest | None:
    """The manifest beside `artifact_path`, or None; parsed once per version of the file.
    Loading a bundle asks for it on every swap, and parsing costs milliseconds a swap need not
    pay. Treat the result as read-only: callers share it."""
    sidecar = manifest_path_for(artifact_path)
    try:
        stat = sidecar.stat()
    except FileNotFoundError:
        return None
    return _parsed_manifest(sidecar, stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=256)
def _parsed_manifest(sidecar: Path, mtime_ns: int, size: int) -> Manifest:
    return read_manifest(sidecar)
