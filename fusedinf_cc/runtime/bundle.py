"""A bundle: an artifact the loader can run, checked against its manifest, with its footprint.

A bundle of several models holds up to one session for its whole graph and one per model's
part (`compiler/parts.py`). Sessions are keyed by `WHOLE` or by the model's name
(`SessionKey`); `session_bytes` says what each counts in a memory budget (`ledger.py`): the whole
at its measured footprint, a part at what it was measured to add beside the whole plus the
pooled weights it maps. A bundle built with stages (`compiler/stages.py`) that is larger than
the budget runs its whole one stage at a time, each stage's session keyed by `StageKey`.
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Final, Literal, NamedTuple

import numpy as np

from fusedinf_cc.artifacts.integrity import check_side_file
from fusedinf_cc.artifacts.manifest import (
    Manifest,
    ModelEntry,
    PartRecord,
    StageRecord,
    manifest_path_for,
    read_manifest,
)
from fusedinf_cc.artifacts.weight_records import WeightRecord
from fusedinf_cc.backends.sessions import is_engine
from fusedinf_cc.backends.weight_pool import artifact_weights, shared_bytes_by_digest
from fusedinf_cc.common.errors import UserInputError
from fusedinf_cc.common.files import sha256_file
from fusedinf_cc.runtime.footprint import Footprint, FootprintCache
from fusedinf_cc.runtime.ledger import SessionBytes
from fusedinf_cc.runtime.pagecache import artifact_files, whole_files


class _Whole(enum.Enum):
    WHOLE = "whole"

    def __repr__(self) -> str:
        return "WHOLE"


# The session that runs a bundle's whole graph; any other session is a model's part, keyed by
# the model's name.
WHOLE: Final = _Whole.WHOLE


class StageKey(NamedTuple):
    """The session of one stage of a bundle that runs stage by stage."""

    index: int


SessionKey = str | Literal[_Whole.WHOLE] | StageKey


@dataclass
class Bundle:
    """A runnable artifact: a fused model with its manifest, or one plain model."""

    name: str
    artifact: Path
    manifest: Manifest | None
    footprint: Footprint
    _counted: dict[tuple[SessionKey, bool], SessionBytes] = field(
        default_factory=dict, repr=False, compare=False
    )
    # The files checked when it was opened, by path: their digests, and the identity (device,
    # inode, size, mtime) they had then, so a load can tell cheaply that they are unchanged.
    checked: dict[Path, tuple[str, tuple[int, ...]]] = field(
        default_factory=dict, repr=False, compare=False
    )

    def check_unchanged(self) -> None:
        """Before a session opens: the files are those checked when the bundle was opened, or
        one line refuses them: a running server never loads weights it did not check."""
        changed = self.changed_file()
        if changed is not None:
            raise UserInputError(
                f"{self.artifact}: {changed.name} changed since the bundle was registered (a "
                "new build or an interrupted copy); it is not loaded: register it again to "
                "load the new build (serve does)"
            )

    def files_moved(self) -> bool:
        """Whether any file's identity moved since it was checked (a stat each, no hashing):
        what `changed_file` then looks at."""
        for path, (_, identity) in self.checked.items():
            try:
                if file_identity(path) != identity:
                    return True
            except OSError:
                return True
        return False

    def changed_file(self) -> Path | None:
        """The first file whose bytes differ from those checked when the bundle was opened. A
        file whose identity moved (replaced, rewritten, copied over) is hashed again; one that
        is gone is refused in one line."""
        for path, (digest, identity) in self.checked.items():
            try:
                now = file_identity(path)
            except OSError:
                raise UserInputError(
                    f"{self.artifact}: {path.name} is gone since the bundle was registered; "
                    "copy it again, or restart what serves it"
                ) from None
            if now == identity:
                continue
            if sha256_file(path) != digest:
                return path
            self.checked[path] = (digest, now)
        return None

    def models(self) -> dict[str, ModelEntry]:
        return {entry.name: entry for entry in self.manifest.models} if self.manifest else {}

    @property
    def members(self) -> frozenset[str]:
        """The models it holds (a plain model: itself)."""
        return frozenset(self.models()) or frozenset({self.name})

    @property
    def is_solo(self) -> bool:
        """A bundle of one model that carries the model's name: requests use the model's names."""
        return list(self.models()) == [self.name]

    @functools.cached_property
    def parts(self) -> dict[str, PartRecord]:
        """Each model's part of the artifact, by model name (none for an engine)."""
        if self.manifest is None or is_engine(self.artifact):
            return {}
        return {part.model: part for part in self.manifest.parts}

    @functools.cached_property
    def files(self) -> tuple[Path, ...]:
        """The files its sessions read: the artifact, its weights file and its parts."""
        return artifact_files(self.artifact)

    def session_key(self, model: str | None) -> SessionKey:
        """The session a request for `model` (None: the bundle itself) opens: that model's
        part where the bundle has one, else the whole."""
        return model if model is not None and model in self.parts else WHOLE

    @functools.cached_property
    def shared_weights(self) -> dict[str, int]:
        """Bytes of each distinct weight this bundle maps from the process's weight pool, by
        digest (ahead-of-time bundles only): bundles holding the same weight hold one copy."""
        if self.manifest is None:
            return {}
        return shared_bytes_by_digest(self.manifest.weights)

    def session_bytes(self, key: SessionKey, pooled: bool) -> SessionBytes:
        """What the session for `key` counts: the whole, whose footprint was measured (with
        its load's transient), or a model's part, which maps its share of the whole's weights
        and adds what was measured beside the whole. A part never measured (a footprint from
        elsewhere) is counted as the whole. `pooled`: ahead-of-time weights come from the
        process's pool, each counted once. Weighed on every swap, so worked out once."""
        if (key, pooled) not in self._counted:
            self._counted[key, pooled] = self._session_bytes(key, pooled)
        return self._counted[key, pooled]

    def _session_bytes(self, key: SessionKey, pooled: bool) -> SessionBytes:
        if isinstance(key, StageKey):
            return self._stage_bytes(key.index, pooled)
        shared = self.shared_weights if pooled else {}
        whole = SessionBytes(
            private_bytes=max(0, self.footprint.measured_bytes - sum(shared.values())),
            weights=tuple(sorted(shared.items())),
            loading_bytes=self.footprint.loading_bytes,
        )
        added = self.footprint.parts.get(key) if key is not WHOLE else None
        if added is None:
            return whole
        weights = self._part_weights[key]  # type: ignore[index]
        mapped = sum(weights.values())
        if added + mapped > self.footprint.loading_peak_bytes:
            return whole  # a part runs a subset of the whole: it holds no more (noise aside)
        if pooled:
            return SessionBytes(added, tuple(sorted(weights.items())))
        return SessionBytes(added + mapped)

    def read_bytes(self, key: SessionKey) -> int:
        """What opening the session for `key` reads from storage when none of it is in memory:
        the whole's artifact and weights file, or a part's or stage's own file and the weights
        it maps from the side file. What a load costs on a device, where reads are slow."""
        record = self.session_record(key)
        if record is None:
            return sum(path.stat().st_size for path in whole_files(self.artifact))
        return record.size_bytes + sum(self._weights_read(record.weights).values())

    def session_record(self, key: SessionKey) -> PartRecord | StageRecord | None:
        """The part or stage the session for `key` opens (None: the whole)."""
        if key is WHOLE:
            return None
        if isinstance(key, StageKey):
            return self.stages[key.index]
        return self.parts[key]

    def weight_records(self, key: SessionKey) -> tuple[Path, list[WeightRecord]] | None:
        """The side file and the records of the weights the session for `key` maps, in file
        order (the order the graph first uses them); None for a bundle whose weights are not
        mapped (portable, engines). What a loading policy reads, before or beside the
        session's opening."""
        if self.manifest is None or not self.manifest.weights or is_engine(self.artifact):
            return None
        records = self.manifest.weights
        record = self.session_record(key)
        if record is not None:
            reads = set(record.weights)
            records = [r for r in records if r.name in reads]
        data_file, _ = artifact_weights(self.artifact)
        return data_file, sorted(records, key=lambda r: (r.offset, r.length))

    @functools.cached_property
    def stages(self) -> list[StageRecord]:
        """The stages its whole can run in, in order (none unless built with --stages)."""
        if self.manifest is None or is_engine(self.artifact):
            return []
        return list(self.manifest.stages)

    def streamed_bytes(self, pooled: bool, *, ahead: bool) -> int:
        """The most its whole holds run stage by stage: the largest stage, or with `ahead`
        (the next stage read while one runs) the largest two consecutive stages together."""
        sessions = [self.session_bytes(StageKey(i), pooled) for i in range(len(self.stages))]
        window = 2 if ahead else 1
        most = 0
        for index in range(len(sessions)):
            together = sessions[index : index + window]
            weights = dict(pair for session in together for pair in session.weights)
            private = sum(session.private_bytes for session in together)
            most = max(most, private + sum(weights.values()))
        return most

    def _stage_bytes(self, index: int, pooled: bool) -> SessionBytes:
        """A stage maps its share of the weights and holds what was measured of it beyond
        them (its structures and buffers); where stages were not measured one by one, at most
        what the whole holds beside all of its weights."""
        weights = self._weights_read(self.stages[index].weights)
        measured = self.footprint.stages
        if len(measured) == len(self.stages):
            own = max(0, measured[index] - sum(weights.values()))
        else:
            own = max(0, self.footprint.measured_bytes - sum(self.shared_weights.values()))
        if pooled:
            return SessionBytes(own, tuple(sorted(weights.items())))
        return SessionBytes(own + sum(weights.values()))

    @functools.cached_property
    def _part_weights(self) -> dict[str, dict[str, int]]:
        """Each part's share of the whole's side-file weights, by digest."""
        return {model: self._weights_read(part.weights) for model, part in self.parts.items()}

    def _weights_read(self, names: Iterable[str]) -> dict[str, int]:
        """The side-file weights a part or stage reads, by name: bytes by digest."""
        reads = set(names)
        records = self.manifest.weights if self.manifest else []
        return shared_bytes_by_digest(r for r in records if r.name in reads)


def open_bundle(
    path: Path,
    *,
    name: str | None = None,
    footprints: FootprintCache | None = None,
    feeds: Mapping[str, np.ndarray] | None = None,
) -> Bundle:
    """Open an artifact, check it against its manifest, and know its footprint.

    An engine's footprint is what TensorRT reported when it built the engine (its manifest
    says). Any other artifact's is measured once per machine, in a fresh process (on `feeds`,
    the whole bundle's, where given), and kept in `footprints` (the user's cache folder by
    default): nothing is written beside the artifact.
    """
    if not path.is_file():
        raise UserInputError(f"{path}: no such bundle artifact")
    sidecar = manifest_path_for(path)
    manifest = read_manifest(sidecar) if sidecar.is_file() else None
    digest = sha256_file(path)
    if manifest is not None and manifest.artifact and manifest.artifact.sha256 != digest:
        raise UserInputError(
            f"{path}: sha256 differs from its manifest; the artifact was changed after it "
            "was built, rebuild it"
        )
    if manifest is not None and manifest.artifact:
        check_side_file(path, manifest.artifact)
    known = manifest.footprint if manifest else {}
    if is_engine(path) and known.get("device_memory_bytes") is not None:
        # An engine's budget is GPU memory, which TensorRT reported when it built the engine:
        # its weights (the plan) and the activation memory one context needs.
        engine = _byte_count(known, "engine_bytes", sidecar) + _byte_count(
            known, "device_memory_bytes", sidecar
        )
        footprint = Footprint(measured_bytes=engine, loading_bytes=0, load_seconds=0.0)
    else:
        footprint = (footprints or FootprintCache()).footprint(
            path,
            digest,
            feeds,
            floor_bytes=_least_footprint(path, manifest),
            by_stages=bool(manifest and manifest.stages),
        )
    if manifest is not None and manifest.weights:
        # A request may touch few pages of a large table (an embedding's rows), so what one was
        # measured to hold can be less than the weights it maps; more requests touch more. The
        # budget counts mapped weights whole, so the footprint does too: registering a bundle
        # and making room for it then weigh the same bytes.
        mapped = sum(shared_bytes_by_digest(manifest.weights).values())
        if footprint.measured_bytes < mapped:
            footprint = replace(footprint, measured_bytes=mapped)
    bundle = Bundle(name=name or path.stem, artifact=path, manifest=manifest, footprint=footprint)
    bundle.checked[path] = (digest, file_identity(path))
    record = manifest.artifact if manifest is not None else None
    if record is not None and record.external_data and record.external_data_sha256:
        side = path.with_name(record.external_data)
        bundle.checked[side] = (record.external_data_sha256, file_identity(side))
    return bundle


# What measuring a footprint can miss by: pages the allocator reuses, the runtime's own
# growth. A tiny model's footprint is that noise; a quarter of its size is no floor for it.
_MEASURING_NOISE_BYTES = 256 * 2**10


def _least_footprint(path: Path, manifest: Manifest | None) -> int:
    """Less than any real footprint of the artifact can be: a quarter of its files' bytes (a
    load may leave most of a large embedding table unread, never nearly all its weights),
    less what measuring can miss."""
    record = manifest.artifact if manifest is not None else None
    side = path.with_name(record.external_data) if record and record.external_data else None
    size = path.stat().st_size + (side.stat().st_size if side and side.is_file() else 0)
    return max(0, size // 4 - _MEASURING_NOISE_BYTES)


def file_identity(path: Path) -> tuple[int, ...]:
    """What changes when a file is replaced or rewritten: device, inode, size, mtime."""
    status = path.stat()
    return (status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns)


def _byte_count(record: Mapping[str, object], key: str, where: Path) -> int:
    """A size read from a file: a whole number of bytes, not negative, not absurd."""
    value = record.get(key, 0)
    if type(value) is not int or not 0 <= value < 2**62:
        raise UserInputError(f"{where}: footprint.{key} is {value!r}, not a number of bytes")
    return value
