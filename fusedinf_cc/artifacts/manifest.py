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

import msgspec

from fusedinf_cc.artifacts.weight_records import WeightRecord
from fusedinf_cc.common.errors import UserInputError
from fusedinf_cc.common.files import read_small_file

# A manifest lists every weight of a bundle; 10,000 weights take about 3 MiB.
MAX_MANIFEST_BYTES = 64 * 2**20
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
class PartRecord:
    """One model's cone of the fused graph, as its own small model file beside the artifact: a
    request for that model runs only what its outputs need. Its weights are the artifact's
    (the same side file; `weights` names them), so a part costs no weight byte on disk."""

    model: str
    path: str
    sha256: str
    size_bytes: int
    inputs: list[str]  # the fused inputs it reads (a stacked layer may read other models')
    weights: list[str]  # initializers it reads from the artifact's side file
    nodes: int
    nodes_of_whole: int


@dataclass
class StageRecord:
    """A span of the artifact's graph, in the order it runs, as its own small model file beside
    it: a bundle larger than memory runs stage by stage. Like a part, its weights are the
    artifact's (`weights` names them in the side file)."""

    index: int
    path: str
    sha256: str
    size_bytes: int
    inputs: list[str]  # what it reads: the bundle's inputs and earlier stages' outputs
    outputs: list[str]  # what it computes that later stages or the bundle's outputs read
    weights: list[str]  # initializers it reads from the artifact's side file
    weight_bytes: int
    nodes: int


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
    footprint: dict[str, int | float] = field(default_factory=dict)
    # What an engine was built for (TensorRT version, GPU, compute capability); empty for ONNX.
    device: dict[str, Any] = field(default_factory=dict)
    # Ahead-of-time artifacts: where each weight lies in the side file and what it is, so that
    # bundles holding the same weights share them. Parsed with the manifest, which a loader
    # reads once per version of the file: a swap does not parse them again.
    weights: list[WeightRecord] = field(default_factory=list)
    # Per-model parts (`compiler/targets/parts.py`); none for engines, `.ort` and single files.
    parts: list[PartRecord] = field(default_factory=list)
    # Stages (`compiler/stages.py`), in the order they run; none unless built with --stages.
    stages: list[StageRecord] = field(default_factory=list)
    # Integer inputs that index a table, by fused name: random inputs stay below its rows
    # (`onnx_io/index_bounds.py`).
    input_bounds: dict[str, int] = field(default_factory=dict)
    format: str = FORMAT

    def part(self, model: str) -> PartRecord | None:
        return next((part for part in self.parts if part.model == model), None)

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
            for key in ("artifact", "tools", "footprint", "device", "weights", "parts", "stages"):
                data.pop(key)
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
            manifest = msgspec.convert(data, cls, strict=True)
        except msgspec.ValidationError as error:
            raise UserInputError(f"manifest is malformed ({error})") from None
        try:
            _check_names(manifest.artifact)
            _check_parts(manifest)
            _check_stages(manifest)
            for record in manifest.weights:
                record.check()
        except ValueError as error:
            raise UserInputError(f"manifest is malformed ({error})") from None
        return manifest


def _check_names(artifact: Artifact | None) -> None:
    """The files an artifact record names are plain names beside the manifest, never a path
    that climbs out of its folder or is absolute (a reader maps what they name)."""
    for name in (artifact.path, artifact.external_data) if artifact else ():
        if name is not None and (name in ("", ".", "..") or Path(name).name != name):
            raise ValueError(f"artifact file {name!r} is not a plain file name")


def _check_parts(manifest: Manifest) -> None:
    """Each part serves a model of the bundle, once, from a plain file name."""
    models = {entry.name for entry in manifest.models}
    seen: set[str] = set()
    for part in manifest.parts:
        if part.model not in models or part.model in seen:
            raise ValueError(f"part for {part.model!r} names no model of the bundle, or repeats")
        if part.path in ("", ".", "..") or Path(part.path).name != part.path:
            raise ValueError(f"part file {part.path!r} is not a plain file name")
        seen.add(part.model)


def _check_stages(manifest: Manifest) -> None:
    """Stages are numbered in the order they run, each from a plain file name."""
    for index, stage in enumerate(manifest.stages):
        if stage.index != index:
            raise ValueError(f"stage {stage.index} is listed as stage {index}")
        if stage.path in ("", ".", "..") or Path(stage.path).name != stage.path:
            raise ValueError(f"stage file {stage.path!r} is not a plain file name")


def read_json(path: Path, what: str, max_bytes: int) -> Any:
    """A JSON file of ours, parsed strictly (no NaN, no integers past 64 bits) after its size is
    checked, with nesting too deep for the parser refused in one line."""
    data = read_small_file(path, what, max_bytes)
    try:
        return msgspec.json.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as error:
        raise UserInputError(f"{path}: not a JSON {what} ({error})") from None
    except RecursionError:
        raise UserInputError(f"{path}: not a JSON {what} (nested too deeply)") from None


def manifest_path_for(artifact_path: Path) -> Path:
    return artifact_path.with_name(artifact_path.name + MANIFEST_SUFFIX)


def read_manifest(path: Path) -> Manifest:
    """Read a manifest file through its schema; a one-line error, naming the file and the
    field, for a missing, oversized, malformed or wrongly typed one."""
    data = read_json(path, "manifest", MAX_MANIFEST_BYTES)
    if not isinstance(data, dict):
        raise UserInputError(f"{path}: not a JSON manifest")
    check_integers(data, path)
    try:
        return Manifest.from_dict(data)
    except UserInputError as error:
        raise UserInputError(f"{path}: {error}") from None


def check_integers(node: Any, where: Path | str) -> None:
    """Every integer in one of our files fits 64 bits: a longer one is damage, not a value."""
    pending = [node]
    while pending:
        item = pending.pop()
        if isinstance(item, dict):
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
        elif isinstance(item, int) and not -(2**63) <= item < 2**64:
            raise UserInputError(f"{where}: an integer of {len(str(abs(item)))} digits")


def manifest_for_artifact(artifact_path: Path) -> Manifest:
    """The manifest beside an artifact: `x.onnx` -> `x.onnx.manifest.json`."""
    sidecar = manifest_path_for(artifact_path)
    if not artifact_path.exists():
        raise UserInputError(f"{artifact_path}: no such file")
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
