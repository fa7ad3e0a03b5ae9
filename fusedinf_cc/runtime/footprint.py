"""Measure what loading an artifact costs in memory and time, in a fresh process.

The numbers the loader budgets with are what the artifact adds to a warm serving process,
measured rather than guessed from file size: the RSS it keeps once loaded and run, with what its
load freed handed back (`measured_bytes`), and what its load needs beyond that while it loads
(`loading_bytes`: a portable session reorders its weights into new copies before it frees the
originals, which for a resnet18 doubles its memory for the moment of its load). The runtime is
started and the artifact loaded, run and dropped once before the baseline, so first-use costs
are not charged to it. Activations come from the process's shared arena, as in the loader, and what
that arena kept is recorded apart (`activation_bytes`): the loader counts it once, not per bundle.

A footprint is measured once per artifact and machine and kept in a cache outside the model
folder (`FootprintCache`), so that opening a bundle never writes into it: a dist folder on a
read-only mount, in a container image or on a Jetson's read-only root serves as it is.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fusedinf_cc.backends.cpu_target import this_cpu
from fusedinf_cc.backends.onnxruntime import RUN_REFUSED, import_onnxruntime
from fusedinf_cc.common.errors import UserInputError
from fusedinf_cc.common.files import read_small_file, write_text_atomic
from fusedinf_cc.runtime.activations import ActivationCurve
from fusedinf_cc.runtime.ledger import LoadNeed
from fusedinf_cc.runtime.worker import BenchConfig, ProbeJob, run_in_fresh_process

_MEASURE_CONFIG = BenchConfig("bundle", spinning=False, execution="sequential")
# Recorded with every footprint; raised whenever what a loaded session holds changes (warm
# process and shared arena: 1; ahead-of-time sessions without packed copies: 2; shared-arena
# sessions without a memory pattern: 3; what each model's part adds beside the whole: 4; held
# apart from the load's transient: 5; with what larger requests add: 6; a staged bundle's
# stage by stage: 7), so that a footprint measured the older way is measured again.
FOOTPRINT_METHOD = 7


@dataclass(frozen=True)
class Footprint:
    measured_bytes: int  # RSS it holds once loaded, freed memory handed back: what stays counted
    loading_bytes: int  # what its load needs beyond that, counted only while it loads
    load_seconds: float  # file to first result
    activation_bytes: int = 0  # what its requests need from the shared activation arena
    # What each model's part adds beside the loaded whole, by model (peak RSS, its load
    # included): its own structures, and the weight copies a portable or `.ort` part holds.
    parts: dict[str, int] = field(default_factory=dict)
    # What a request with larger dynamic dims than the measured one adds to the arena.
    activation_curve: ActivationCurve = field(default_factory=ActivationCurve)
    # A bundle built with stages, measured stage by stage (its whole never loaded): the peak
    # RSS each stage adds while it is open and runs, its mapped weights included. Its whole
    # is then counted as all of them together (`measured_bytes`), which holds more than it.
    stages: list[int] = field(default_factory=list)

    @property
    def loading_peak_bytes(self) -> int:
        """What the whole needs at the moment it loads: itself and its load's transient."""
        return self.measured_bytes + self.loading_bytes

    @property
    def alone_bytes(self) -> int:
        """What the bundle needs with nothing else loaded: its load and one request's arena."""
        return self.loading_peak_bytes + self.activation_bytes

    @property
    def load_need(self) -> LoadNeed:
        """What registering the bundle checks against a budget (`ledger.least_budget`)."""
        return LoadNeed(self.loading_peak_bytes, self.activation_bytes)

    def to_record(self) -> dict[str, int | float]:
        return {
            "measured_bytes": self.measured_bytes,
            "loading_bytes": self.loading_bytes,
            "load_seconds": self.load_seconds,
            "activation_bytes": self.activation_bytes,
            "parts": dict(self.parts),
            "activation_curve": self.activation_curve.to_record(),
            "stages": list(self.stages),
            "method": FOOTPRINT_METHOD,
        }

    @classmethod
    def from_record(cls, record: Any) -> Footprint | None:
        """A footprint read back from a cache file, or None where the record is not one this
        version measured: a wrong type, a negative or non-finite number, an older method."""
        if not isinstance(record, dict) or record.get("method") != FOOTPRINT_METHOD:
            return None
        sizes = [record.get(key) for key in ("measured_bytes", "loading_bytes", "activation_bytes")]
        seconds = record.get("load_seconds")
        if not all(type(size) is int and 0 <= size < 2**62 for size in sizes):
            return None
        if not isinstance(seconds, int | float) or not math.isfinite(seconds) or seconds < 0:
            return None
        parts = record.get("parts", {})
        if not isinstance(parts, dict) or not all(
            isinstance(model, str) and type(size) is int and 0 <= size < 2**62
            for model, size in parts.items()
        ):
            return None
        curve = ActivationCurve.from_record(record.get("activation_curve", []))
        stages = record.get("stages", [])
        if curve is None or not isinstance(stages, list):
            return None
        if not all(type(size) is int and 0 <= size < 2**62 for size in stages):
            return None
        measured, loading, activation = sizes
        return cls(measured, loading, float(seconds), activation, dict(parts), curve, stages)  # type: ignore[arg-type]


def default_cache_dir() -> Path:
    """`$FUSEDINF_CACHE_DIR`, else `$XDG_CACHE_HOME/fusedinf-cc`, else `~/.cache/fusedinf-cc`."""
    if os.environ.get("FUSEDINF_CACHE_DIR"):
        return Path(os.environ["FUSEDINF_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "fusedinf-cc"


@functools.cache
def machine_key() -> str:
    """What a footprint depends on besides the artifact's bytes: the CPU class, the ONNX Runtime
    version and how footprints are measured. A footprint measured on another machine class (a
    CI runner, for a bundle served on a Jetson) is not this machine's."""
    record = this_cpu(import_onnxruntime().__version__).to_record() | {"method": FOOTPRINT_METHOD}
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()[:16]


# A footprint record is a few hundred bytes; one far larger is not ours.
_MAX_RECORD_BYTES = 1 << 20
# No bundle this loader runs holds a tebibyte: a record past it was not measured.
_MOST_BYTES = 1 << 40


class FootprintCache:
    """Footprints by artifact sha256 and machine, one small JSON file each, outside any model
    folder. A cache that cannot be written (no home, a read-only file system) only means the
    next process measures again; it never fails a request."""

    def __init__(self, folder: Path | None = None):
        self.folder = folder if folder is not None else default_cache_dir()

    def _path(self, digest: str) -> Path:
        return self.folder / "footprints" / f"{digest}-{machine_key()}.json"

    def get(self, digest: str, floor_bytes: int = 0) -> Footprint | None:
        """The footprint kept for these bytes on this machine, or None (measure it again) for
        anything in doubt: not a small regular file (a link to a device, a pipe), a record of
        other bytes or another machine, or a footprint no load of them could have (below
        `floor_bytes`, what their weights alone take at the least, or past any machine)."""
        try:
            data = read_small_file(self._path(digest), "footprint record", _MAX_RECORD_BYTES)
            record = json.loads(data.decode("utf-8"))
        except (UserInputError, ValueError, RecursionError):
            return None
        if not isinstance(record, dict) or record.get("artifact_sha256") != digest:
            return None
        if record.get("machine") != machine_key():
            return None
        footprint = Footprint.from_record(record)
        if footprint is None or footprint.measured_bytes < floor_bytes:
            return None
        if footprint.alone_bytes + sum(footprint.parts.values()) >= _MOST_BYTES:
            return None
        return footprint

    def put(self, digest: str, footprint: Footprint) -> None:
        path = self._path(digest)
        bound = {"artifact_sha256": digest, "machine": machine_key()}
        record = json.dumps(footprint.to_record() | bound, sort_keys=True) + "\n"
        with contextlib.suppress(OSError, ValueError, UserInputError):
            path.parent.mkdir(parents=True, exist_ok=True)
            write_text_atomic(path, record)

    def footprint(
        self,
        artifact: Path,
        digest: str,
        feeds: Mapping[str, np.ndarray] | None = None,
        *,
        floor_bytes: int = 0,
        by_stages: bool = False,
    ) -> Footprint:
        """The cached footprint of these bytes on this machine, or one measured now (and kept),
        on `feeds` where given: a model that refuses random inputs (a sample rate, an index)
        is measured on the inputs it accepts. `floor_bytes`: the least a real footprint of
        them holds (`get`). `by_stages`: measured stage by stage (`measure_footprint`)."""
        known = self.get(digest, floor_bytes)
        if known is None or (by_stages and not known.stages):
            try:
                known = measure_footprint(artifact, feeds, by_stages=by_stages)
            except UserInputError as error:
                if feeds is not None or RUN_REFUSED not in str(error):
                    raise
                raise UserInputError(
                    f"{artifact}: its memory footprint is measured on random inputs, which it "
                    f"refuses ({error}); measure it once on inputs it accepts: fusedinf-cc run "
                    f"{artifact} --inputs FEEDS.npz (kept for this machine)"
                ) from None
            self.put(digest, known)
        return known


def arena_bytes(footprints: Iterable[Footprint]) -> int:
    """The shared activation arena these bundles need: the most one of their requests needs
    (the loader's arena grows to that and never shrinks)."""
    return max((footprint.activation_bytes for footprint in footprints), default=0)


def measure_footprint(
    artifact: Path,
    feeds: Mapping[str, np.ndarray] | None = None,
    *,
    with_parts: bool = True,
    by_stages: bool = False,
) -> Footprint:
    """Load `artifact` and run one request in a new interpreter (on `feeds`, else on random
    inputs); report what it cost. `with_parts`: then what each model's part adds beside it.
    `by_stages`: a bundle built with stages, run stage by stage and never whole, so that one
    larger than this machine's memory is measured where it runs: what each stage adds, and
    its whole counted as all of them."""
    job = ProbeJob(
        models=[(artifact.stem, artifact)],
        feeds=None if feeds is None else [dict(feeds)],
        runs=1,
        warmup=0,
        warm_runtime=True,
        warm_load=True,
        shared_arena=True,
        with_parts=with_parts and not by_stages,
        activation_curve=not by_stages,
        by_stages=by_stages,
    )
    result = run_in_fresh_process(job, _MEASURE_CONFIG)
    if by_stages:
        return Footprint(
            measured_bytes=sum(result.stage_bytes),
            loading_bytes=0,
            load_seconds=result.load_s,
            activation_bytes=result.activation_bytes,
            stages=result.stage_bytes,
        )
    kept = max(0, result.resident_rss_bytes - result.baseline_rss_bytes)
    held = min(result.footprint_bytes, kept)
    return Footprint(
        measured_bytes=held,
        loading_bytes=result.footprint_bytes - held,
        load_seconds=result.load_s,
        activation_bytes=result.activation_bytes,
        parts=result.part_bytes,
        activation_curve=result.activation_curve or ActivationCurve(),
    )
