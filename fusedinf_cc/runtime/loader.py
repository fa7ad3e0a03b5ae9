"""EngineCache: swap fused bundles in and out of memory under a budget.

Requests name a bundle, or a model inside one; the cache loads what is missing, evicting idle
bundles chosen by its policy until the newcomer fits. What it budgets with is each bundle's
measured footprint (`footprint.py`), so the accounting is about real memory. A bundle serving a
request is pinned and never evicted; concurrent requests for a bundle that is loading wait for
that one load; a bundle larger than the whole budget is refused when registered.

A request for one model of a bundle runs that model's part (`compiler/parts.py`), not the whole
graph: each bundle holds up to one session for the whole and one per model asked for, each
opened when first needed and all closed together when the bundle is evicted. The budget counts
the sessions a bundle holds: the whole at its measured footprint, a part at what it was measured
to add beside the whole plus the pooled weights it maps.
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from fusedinf_cc.artifacts.index import shipped_inputs
from fusedinf_cc.artifacts.integrity import check_side_file
from fusedinf_cc.artifacts.manifest import (
    Manifest,
    ModelEntry,
    PartRecord,
    manifest_path_for,
    read_manifest,
)
from fusedinf_cc.backends.base import Session, TensorSpec
from fusedinf_cc.backends.onnxruntime import NO_SPINNING_OPTIONS
from fusedinf_cc.backends.sessions import (
    DEFAULT_RUNTIME,
    check_runtime,
    check_weight_streaming,
    is_engine,
    open_session,
)
from fusedinf_cc.backends.weight_pool import DEFAULT_POOL, shared_bytes_by_digest
from fusedinf_cc.common.errors import UserInputError
from fusedinf_cc.common.files import sha256_file
from fusedinf_cc.common.sizes import format_bytes
from fusedinf_cc.runtime.feeds import (
    check_feeds,
    load_feeds,
    random_feeds,
    read_feeds,
    resolve_shape,
)
from fusedinf_cc.runtime.footprint import Footprint, FootprintCache, arena_bytes
from fusedinf_cc.runtime.policies import POLICIES, CachePolicy
from fusedinf_cc.runtime.procmem import release_freed_memory


@dataclass
class Bundle:
    """A runnable artifact: a fused model with its manifest, or one plain model."""

    name: str
    artifact: Path
    manifest: Manifest | None
    footprint: Footprint
    _costs: dict[tuple[str | None, bool], tuple[int, dict[str, int]]] = field(
        default_factory=dict, repr=False, compare=False
    )

    def models(self) -> dict[str, ModelEntry]:
        return {entry.name: entry for entry in self.manifest.models} if self.manifest else {}

    @functools.cached_property
    def parts(self) -> dict[str, PartRecord]:
        """Each model's part of the artifact, by model name (none for an engine)."""
        if self.manifest is None or is_engine(self.artifact):
            return {}
        return {part.model: part for part in self.manifest.parts}

    def session_key(self, model: str | None) -> str | None:
        """The session a request for `model` (None: the whole) opens: that model's part where
        the bundle has one, else the whole (None)."""
        return model if model in self.parts else None

    @functools.cached_property
    def shared_weights(self) -> dict[str, int]:
        """Bytes of each distinct weight this bundle maps from the process's weight pool, by
        digest (ahead-of-time bundles only): bundles holding the same weight hold one copy."""
        if self.manifest is None:
            return {}
        return shared_bytes_by_digest(self.manifest.weights)

    def session_cost(self, key: str | None, pooled: bool) -> tuple[int, dict[str, int]]:
        """(private bytes, pooled weights by digest) of the session for `key`: the whole
        (None), whose footprint was measured, or a model's part, which maps its share of the
        whole's weights and adds what was measured beside the whole. A part never measured
        (a footprint from elsewhere) is counted as the whole. Weighed on every swap, so
        worked out once per session."""
        if (key, pooled) not in self._costs:
            self._costs[key, pooled] = self._session_cost(key, pooled)
        return self._costs[key, pooled]

    def _session_cost(self, key: str | None, pooled: bool) -> tuple[int, dict[str, int]]:
        shared = self.shared_weights if pooled else {}
        whole = max(0, self.footprint.measured_bytes - sum(shared.values())), shared
        added = self.footprint.parts.get(key) if key is not None else None
        if added is None:
            return whole
        weights = self._part_weights[key]  # type: ignore[index]
        mapped = sum(weights.values())
        if added + mapped > self.footprint.loading_peak_bytes:
            return whole  # a part runs a subset of the whole: it holds no more (noise aside)
        return (added, weights) if pooled else (added + mapped, {})

    @functools.cached_property
    def _part_weights(self) -> dict[str, dict[str, int]]:
        """Each part's share of the whole's side-file weights, by digest."""
        records = self.manifest.weights if self.manifest else []
        shares = {}
        for model, part in self.parts.items():
            reads = set(part.weights)
            shares[model] = shared_bytes_by_digest(r for r in records if r.name in reads)
        return shares


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
        footprint = (footprints or FootprintCache()).footprint(path, digest, feeds)
    return Bundle(name=name or path.stem, artifact=path, manifest=manifest, footprint=footprint)


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    evictions: int = 0
    bytes_loaded: int = 0
    seconds_loading: float = 0.0
    peak_accounted_bytes: int = 0
    loads_by_bundle: dict[str, int] = field(default_factory=dict)
    sessions_opened: int = 0  # a bundle's first session, and each further part or whole
    models_opened: int = 0  # the models those sessions serve: a whole all of its, a part one


@dataclass
class _Entry:
    bundle: Bundle
    # What it runs: None for the whole bundle, a model's name for that model's part.
    sessions: dict[str | None, Session] = field(default_factory=dict)
    # The sessions counted in the budget: those open, and those being opened.
    keys: set[str | None] = field(default_factory=set)
    pins: int = 0
    opening: threading.Lock = field(default_factory=threading.Lock)
    frequency: int = 0
    priority: float = 0.0
    base: float = 0.0
    cost_seconds: float = 0.0
    pooled: bool = True  # its ahead-of-time weights come from the process's pool
    activation: int = 0  # what one request needs from the activation arena
    freeable: int | None = None  # what evicting it frees now; set before a victim is chosen

    @property
    def name(self) -> str:
        return self.bundle.name

    @property
    def size(self) -> int:
        """What the policy weighs: the bytes its eviction would free, or its footprint."""
        return self.bundle.footprint.measured_bytes if self.freeable is None else self.freeable

    def cost(self, keys: set[str | None]) -> tuple[int, dict[str, int]]:
        """(private bytes, pooled weights by digest) of these sessions of the bundle."""
        private, shared = 0, {}
        for key in keys:
            own, weights = self.bundle.session_cost(key, self.pooled)
            private += own
            shared.update(weights)
        return private, shared

    @property
    def held(self) -> bool:
        return bool(self.keys)

    @property
    def idle(self) -> bool:
        return self.held and self.pins == 0


class EngineCache:
    """Bundles loaded on demand and evicted by `policy` so their footprints fit `budget_bytes`."""

    def __init__(
        self,
        budget_bytes: int,
        policy: str | Callable[[], CachePolicy] = "lru",
        *,
        share_weights: bool = False,
        pool_weights: bool = True,
        share_arena: bool = True,
        runtime: str = DEFAULT_RUNTIME,
        session_factory: Callable[..., Session] | None = None,
    ):
        """`policy`: a name from `POLICIES`, or what makes a policy (e.g. a clairvoyant one
        for a replay). `share_weights`: keep weights in the memory-mapped external data file,
        shared by every process that serves the same bundle (`open_session`).
        `pool_weights`: ahead-of-time bundles that hold the same weights map them once
        (`weight_pool`), and the budget counts them once while any resident bundle holds them.
        `share_arena`: activations come from one arena for the process, which the budget counts
        once, at the most one request has needed; requests then run one at a time (on a CPU
        one inference already uses every core). Without it, every resident bundle keeps its
        own activation memory, is counted with it, and requests run concurrently.
        `session_factory(artifact, part=...)`: what opens a bundle's whole (part None) or
        one model's part (`open_session`'s `part`)."""
        if isinstance(budget_bytes, bool) or not isinstance(budget_bytes, int) or budget_bytes <= 0:
            raise UserInputError(
                f"the memory budget must be a positive number of bytes, not {budget_bytes!r}"
            )
        if isinstance(policy, str) and policy not in POLICIES:
            raise UserInputError(f"unknown policy {policy!r}; choose from {', '.join(POLICIES)}")
        self.budget_bytes = budget_bytes
        self._new_policy = POLICIES[policy] if isinstance(policy, str) else policy
        self.policy: CachePolicy = self._new_policy()
        self.stats = CacheStats()
        self.evictions: list[str] = []  # bundle names, in eviction order
        self._session_factory = session_factory or functools.partial(
            open_session,
            runtime=check_runtime(runtime),
            options=NO_SPINNING_OPTIONS,  # idle sessions' threads must not take the cores
            share_weights=share_weights,
            weight_pool=DEFAULT_POOL if pool_weights else None,
            shared_arena=share_arena,
        )
        self._pool_weights = pool_weights
        self._share_arena = share_arena
        self._arena_bytes = 0  # the shared arena as accounted: it grows and never shrinks
        self._run_lock = threading.Lock() if share_arena else contextlib.nullcontext()
        self._entries: dict[str, _Entry] = {}
        self._model_index: dict[str, list[str]] = {}  # model name -> bundles holding it
        self._condition = threading.Condition()

    # registration -------------------------------------------------------------------------
    def register(
        self,
        bundle: Bundle | str | os.PathLike[str],
        name: str | None = None,
        feeds_path: Path | None = None,
    ) -> Bundle:
        """Register a bundle (opened, or an artifact's path); its models become addressable.
        `feeds_path`: representative inputs (.npz by fused names) its footprint is measured on,
        if it must be measured, for a model that refuses random inputs."""
        if not isinstance(bundle, Bundle):
            bundle = open_bundle(Path(bundle), name=name, feeds=_whole_feeds(feeds_path))
        with self._condition:
            self._check_fits(bundle)
            # Bundle names are unique and never another bundle's model; one model may sit in
            # several bundles (a model shared by several functions), which only makes it
            # ambiguous. A bundle of one model may carry that model's name: both mean the model,
            # and a request for it runs that bundle, the model alone, however many hold it.
            solos = {name for name, entry in self._entries.items() if _is_solo(entry.bundle)}
            if _is_solo(bundle):
                clashes = {bundle.name} & set(self._entries)
            else:
                clashes = ({bundle.name} & (set(self._entries) | set(self._model_index))) | (
                    set(bundle.models()) & ((set(self._entries) - solos) | {bundle.name})
                )
            if clashes:
                raise UserInputError(f"names already registered: {', '.join(sorted(clashes))}")
            # GDSF's cost starts as the load time measured with the footprint.
            self._entries[bundle.name] = _Entry(
                bundle,
                cost_seconds=bundle.footprint.load_seconds,
                pooled=self._pool_weights,
                activation=bundle.footprint.activation_bytes,
            )
            for model in bundle.models():
                self._model_index.setdefault(model, []).append(bundle.name)
        return bundle

    def _check_fits(self, bundle: Bundle) -> None:
        """Refuse a bundle that could never load: larger than the budget on its own or, with
        the shared arena (which never shrinks), beside the largest arena another bundle needs."""
        needs = bundle.footprint.alone_bytes
        if self._share_arena:
            registered = [entry.bundle.footprint for entry in self._entries.values()]
            needs = least_budget([*registered, bundle.footprint])
        if needs > self.budget_bytes:
            raise UserInputError(
                f"bundle {bundle.name!r} needs {format_bytes(needs)} of memory (with the "
                "activations of the largest request), more than the whole budget "
                f"({format_bytes(self.budget_bytes)})"
            )

    # requests -----------------------------------------------------------------------------
    def run(
        self,
        name: str,
        feeds: Mapping[str, np.ndarray],
        outputs: Sequence[str] | None = None,
        *,
        bundle: str | None = None,
    ) -> dict[str, np.ndarray]:
        """Run bundle `name` (feeds by fused names) or model `name` (feeds by its own names);
        a model's request runs its part of the bundle where the bundle has one. `bundle`:
        the bundle whose copy of model `name` runs, for a model that sits in several (`name`
        equal to `bundle`: that bundle)."""
        bundle_name, model = self._resolve(name, bundle)
        entry, session = self._acquire(bundle_name, model)
        try:
            if model is None:
                check_feeds(feeds, session.inputs, f"request for {name!r}")
                unknown = sorted(set(outputs or ()) - {spec.name for spec in session.outputs})
                if unknown:
                    raise UserInputError(f"bundle {name!r} has no outputs {unknown}")
                with self._run_lock:
                    return session.run(feeds, outputs)
            wanted = outputs if outputs is not None else list(model.outputs)
            unknown = [output for output in wanted if output not in model.outputs]
            if unknown:
                raise UserInputError(f"model {model.name!r} has no outputs {unknown}")
            fused_feeds = _model_feeds(session, model, feeds, f"request for {name!r}")
            fused_names = [model.outputs[output] for output in wanted]
            with self._run_lock:
                results = session.run(fused_feeds, fused_names)
            return {output: results[model.outputs[output]] for output in wanted}
        finally:
            self._release(entry)

    def input_specs(self, name: str, *, bundle: str | None = None) -> list[TensorSpec]:
        """The inputs a request for `name` takes, named as the caller names them."""
        return self.specs(name, bundle=bundle)[0]

    def specs(
        self, name: str, *, bundle: str | None = None
    ) -> tuple[list[TensorSpec], list[TensorSpec]]:
        """(inputs, outputs) of bundle or model `name` (of `bundle`, where given), named as
        the caller names them (loading what a request for it runs, if it is not resident)."""
        bundle_name, model = self._resolve(name, bundle)
        entry, session = self._acquire(bundle_name, model)
        try:
            inputs, outputs = list(session.inputs), list(session.outputs)
        finally:
            self._release(entry)
        if model is None:
            return inputs, outputs
        own_inputs = {fused: own for own, fused in model.inputs.items()}
        own_outputs = {fused: own for own, fused in model.outputs.items()}
        return (
            [replace(s, name=own_inputs[s.name]) for s in inputs if s.name in own_inputs],
            [replace(s, name=own_outputs[s.name]) for s in outputs if s.name in own_outputs],
        )

    def load(self, name: str, *, bundle: str | None = None) -> None:
        """Make what a request for `name` runs resident now (a bundle, or a model's part of
        one), evicting as needed."""
        bundle_name, model = self._resolve(name, bundle)
        self._release(self._acquire(bundle_name, model)[0])

    def unload(self, name: str) -> bool:
        """Evict bundle `name` (or its model's bundle) once no request holds it, and hand the
        memory it held back to the system; False when it was not resident."""
        bundle_name = self._resolve(name)[0]
        with self._condition:
            entry = self._entries[bundle_name]
            while entry.pins > 0:
                self._condition.wait()
            if not entry.held:
                return False
            self._evict(entry)
            self._condition.notify_all()
        release_freed_memory()
        return True

    def bundle_of(self, name: str) -> str:
        return self._resolve(name)[0]

    def names(self) -> dict[str, list[str]]:
        """Every registered bundle and the models inside it."""
        with self._condition:
            return {name: list(e.bundle.models()) for name, e in self._entries.items()}

    def sessions(self, bundle_name: str) -> list[str]:
        """What bundle `bundle_name` has open: its own name for the whole graph, a model's name
        for that model's part."""
        with self._condition:
            return [key or bundle_name for key in self._entries[bundle_name].sessions]

    def _resolve(self, name: str, bundle: str | None = None) -> tuple[str, ModelEntry | None]:
        """(bundle, model or None for the whole) that a request for `name` runs."""
        with self._condition:
            if bundle is not None and name != bundle:  # a model of that bundle
                entry = self._entries.get(bundle)
                if entry is None or name not in entry.bundle.models():
                    raise UserInputError(f"bundle {bundle!r} has no model named {name!r}")
                return bundle, entry.bundle.models()[name]
            if name in self._entries:
                bundle = self._entries[name].bundle
                return name, (bundle.models()[name] if _is_solo(bundle) else None)
            holders = self._model_index.get(name, [])
            if len(holders) > 1:
                raise UserInputError(
                    f"model {name!r} is in bundles {', '.join(holders)}: run one of those bundles"
                )
            if holders:
                return holders[0], self._entries[holders[0]].bundle.models()[name]
        known = ", ".join(sorted(set(self._entries) | set(self._model_index)))
        raise UserInputError(f"no bundle or model named {name!r} (known: {known})")

    def _acquire(self, bundle_name: str, model: ModelEntry | None) -> tuple[_Entry, Session]:
        """Pin the bundle (making it resident, evicting as needed) and return what a request
        for `model` (None: the whole bundle) runs on it, opened now if it is not yet."""
        with self._condition:
            entry = self._entries[bundle_name]
            key = entry.bundle.session_key(model.name if model is not None else None)
            while True:
                resident = entry.held
                if self._make_room(entry, key):  # a hit may need a part or more arena
                    break
                if not any(e.pins for e in self._entries.values()):
                    # Nothing in flight can free room: waiting would never end.
                    raise UserInputError(
                        f"bundle {bundle_name!r} does not fit the budget "
                        f"({format_bytes(self.budget_bytes)}) even with every other bundle "
                        "evicted"
                    )
                self._condition.wait()  # pins hold the room
            entry.pins += 1
            if resident:
                self.stats.hits += 1
                self.policy.touch(entry)
            else:
                self.stats.misses += 1
                loads = self.stats.loads_by_bundle
                loads[entry.bundle.name] = loads.get(entry.bundle.name, 0) + 1
            self.stats.peak_accounted_bytes = max(
                self.stats.peak_accounted_bytes, self._bytes_held()
            )
        try:
            return entry, self._session_for(entry, key)
        except BaseException:
            with self._condition:
                if key not in entry.sessions:
                    entry.keys.discard(key)  # nothing of a failed open stays counted
            self._release(entry)
            raise

    def _session_for(self, entry: _Entry, key: str | None) -> Session:
        """The pinned entry's session for `key`, opened once however many requests ask at once
        (they wait for the one that opens it)."""
        with entry.opening:
            session = entry.sessions.get(key)
            if session is not None:
                return session
            part = entry.bundle.parts[key] if key is not None else None
            started = time.perf_counter()
            session = self._session_factory(entry.bundle.artifact, part=part)
            seconds = time.perf_counter() - started
            with self._condition:
                entry.sessions[key] = session
                entry.keys.add(key)  # counted (again, if a failed open beside it uncounted it)
                self.stats.sessions_opened += 1
                serves = 1 if key is not None else len(entry.bundle.models())
                self.stats.models_opened += max(1, serves)
                self.stats.seconds_loading += seconds
                private, shared = entry.bundle.session_cost(key, entry.pooled)
                self.stats.bytes_loaded += private + sum(shared.values())
                if len(entry.sessions) == 1:  # the bundle has just become resident
                    entry.cost_seconds = seconds
                    self.policy.touch(entry)
                if key is None and entry.bundle.footprint.loading_bytes:
                    self._condition.notify_all()  # its transient is no longer counted
        if key is None and not entry.bundle.shared_weights:
            # A portable load freed the weights it copied: hand them back, as its footprint
            # was measured, so that what stays counted is what stays resident.
            release_freed_memory()
        return session

    def _make_room(self, newcomer: _Entry, key: str | None) -> bool:
        """Evict idle bundles until `newcomer` (resident or not), with its session for `key`,
        fits with the arena its request needs, and count that session; False (evicting
        nothing) when pinned bundles leave no room even with every idle one gone."""
        arena = max(self._arena_bytes, newcomer.activation) if self._share_arena else 0
        if key in newcomer.keys and arena == self._arena_bytes:
            return True  # a hit that needs no more memory: nothing to account
        wanted = newcomer.keys | {key}
        held = [e for e in self._entries.values() if e.held and e is not newcomer]
        idle = [e for e in held if e.idle]
        busy = [e for e in held if not e.idle]
        if self._bytes_of([*busy, newcomer], arena, newcomer, wanted) > self.budget_bytes:
            if newcomer.pins or wanted == {key}:
                return False
            # Its own idle sessions may be what leaves no room: keep only the one asked for.
            self._close_sessions(newcomer, [k for k in newcomer.keys if k != key])
            wanted = newcomer.keys | {key}
            if self._bytes_of([*busy, newcomer], arena, newcomer, wanted) > self.budget_bytes:
                return False
        # Freed memory is handed back (malloc_trim) only where a victim's weights lay in the
        # heap. An ahead-of-time bundle maps its weights and holds 2-3.5 MiB of its own, which
        # the next load reuses: trimming that cost a request 1 ms an eviction, up to 5, and
        # lowered no peak. A portable bundle's freed weights would leave holes the allocator
        # keeps: without a trim the process grew 46% past its budget.
        freed_heap = False
        while self._bytes_of([*held, newcomer], arena, newcomer, wanted) > self.budget_bytes:
            _weigh_freeable(idle, [*held, newcomer])
            victim = self.policy.victim(idle)
            idle.remove(victim)
            held.remove(victim)
            self._evict(victim)
            freed_heap = freed_heap or not victim.bundle.shared_weights
        if freed_heap:
            release_freed_memory()
        newcomer.keys = wanted
        self._arena_bytes = arena
        return True

    def _bytes_of(
        self,
        entries: Sequence[_Entry],
        arena: int,
        newcomer: _Entry | None = None,
        wanted: set[str | None] | None = None,
    ) -> int:
        """Memory `entries` hold together (`newcomer` with the sessions `wanted`, the rest
        with those they count): each session's own bytes, each pooled weight once, the
        transient of each whole still loading, and the activations: the shared arena once, or
        each session's own."""
        weights: dict[str, int] = {}
        own = activations = 0
        for entry in entries:
            keys = wanted if entry is newcomer and wanted is not None else entry.keys
            private, shared = entry.cost(keys)
            own += private
            if None in keys and None not in entry.sessions:  # counted, not yet open
                own += entry.bundle.footprint.loading_bytes
            weights.update(shared)
            activations += entry.activation * len(keys)
        own += sum(weights.values())
        return own + (arena if self._share_arena else activations)

    def _bytes_held(self) -> int:
        held = [e for e in self._entries.values() if e.held]
        return self._bytes_of(held, self._arena_bytes)

    def _close_sessions(self, entry: _Entry, keys: Sequence[str | None]) -> None:
        """Close some sessions of an idle bundle, which stays resident with the rest."""
        for key in keys:
            session = entry.sessions.pop(key, None)
            if session is not None:
                session.close()
            entry.keys.discard(key)
        release_freed_memory()

    def _evict(self, entry: _Entry) -> None:
        """Close every session the bundle holds, the whole's and its parts'."""
        self.evictions.append(entry.bundle.name)
        for session in entry.sessions.values():
            session.close()
        entry.sessions.clear()
        entry.keys.clear()
        self.stats.evictions += 1
        self.policy.evicted(entry)

    def _release(self, entry: _Entry) -> None:
        with self._condition:
            entry.pins -= 1
            if entry.pins == 0 and not entry.sessions:
                entry.keys.clear()  # its load failed: nothing of it stays counted
            self._condition.notify_all()

    def reset_stats(self) -> None:
        """Start counting (and the policy's history) afresh, e.g. after a warm-up."""
        with self._condition:
            self.stats = CacheStats(peak_accounted_bytes=self._bytes_held())
            self.evictions.clear()
            self.policy = self._new_policy()
            for entry in self._entries.values():
                entry.frequency, entry.priority, entry.base = 0, 0.0, 0.0

    # inspection ---------------------------------------------------------------------------
    @property
    def accounted_bytes(self) -> int:
        with self._condition:
            return self._bytes_held()

    def resident(self) -> list[str]:
        with self._condition:
            return [name for name, e in self._entries.items() if e.sessions]

    def close(self) -> None:
        """Evict every idle bundle and hand the memory they held back to the system."""
        with self._condition:
            for entry in self._entries.values():
                if entry.idle:
                    self._evict(entry)
        release_freed_memory()


def _weigh_freeable(idle: Sequence[_Entry], staying: Sequence[_Entry]) -> None:
    """Set what evicting each idle entry would free: its sessions' own bytes and the pooled
    weights no other entry of `staying` (which includes it) holds."""
    costs = {id(entry): entry.cost(entry.keys) for entry in staying}
    holders: dict[str, int] = {}
    for _, shared in costs.values():
        for digest in shared:
            holders[digest] = holders.get(digest, 0) + 1
    for entry in idle:
        private, shared = costs[id(entry)]
        alone = sum(size for digest, size in shared.items() if holders[digest] == 1)
        entry.freeable = private + alone


def least_budget(footprints: Sequence[Footprint]) -> int:
    """The least budget under which each of these bundles can load with a shared arena: the
    largest bundle as it loads beside the largest arena (which the loader never shrinks)."""
    largest = max((f.loading_peak_bytes for f in footprints), default=0)
    return largest + arena_bytes(footprints)


def run_once(
    artifact: Path,
    *,
    model: str | None = None,
    feeds_path: Path | None = None,
    runtime: str = DEFAULT_RUNTIME,
    weight_streaming_budget: int | None = None,
) -> dict[str, np.ndarray]:
    """One request through a cache holding just this bundle: what `fusedinf-cc run` does."""
    check_weight_streaming(artifact, weight_streaming_budget)  # before measuring a footprint
    # The user's feeds for the whole bundle are what its footprint is measured on, too; else
    # the representative inputs its dist folder ships, if any.
    given = _whole_feeds(feeds_path if model is None else None)
    bundle = open_bundle(artifact, feeds=given or _whole_feeds(shipped_inputs(artifact)))
    factory = functools.partial(
        open_session,
        runtime=check_runtime(runtime),
        weight_streaming_budget=weight_streaming_budget,
    )
    cache = EngineCache(max(bundle.footprint.alone_bytes, 1), session_factory=factory)
    cache.register(bundle)
    name = model or bundle.name
    try:
        specs = cache.input_specs(name)
        feeds = load_feeds(feeds_path, specs) if feeds_path else random_feeds(specs)
        return cache.run(name, feeds)
    finally:
        cache.close()


def _whole_feeds(path: Path | None) -> dict[str, np.ndarray] | None:
    """A bundle's feeds by fused names from an `.npz`, to measure its footprint on (None for
    no file, or a bare `.npy`, which names no input)."""
    feeds = read_feeds(path) if path is not None else None
    return feeds if isinstance(feeds, dict) else None


def _model_feeds(
    session: Session, model: ModelEntry, feeds: Mapping[str, np.ndarray], source: str
) -> dict[str, np.ndarray]:
    """Feeds for `session` (the model's part, or the whole bundle where it has none) from the
    model's own. Every input of the model that the session reads must be there; one its
    outputs do not depend on may be given and is dropped. Inputs of other models that the
    session reads get zeros: a bundle without parts (an engine, `.ort`, a single file) runs
    their branches too."""
    fused_specs = {spec.name: spec for spec in session.inputs}
    read = {own: fused for own, fused in model.inputs.items() if fused in fused_specs}
    own_specs = [
        TensorSpec(own, fused_specs[fused].dtype, fused_specs[fused].shape)
        for own, fused in read.items()
    ]
    unread = set(model.inputs) - set(read)
    given = {name: value for name, value in feeds.items() if name not in unread}
    check_feeds(given, own_specs, source)
    fused = {read[name]: value for name, value in given.items()}
    for spec in session.inputs:
        if spec.name not in fused:
            fused[spec.name] = np.zeros(resolve_shape(spec, {}), dtype=spec.dtype)
    return fused


def _byte_count(record: Mapping[str, object], key: str, where: Path) -> int:
    """A size read from a file: a whole number of bytes, not negative, not absurd."""
    value = record.get(key, 0)
    if type(value) is not int or not 0 <= value < 2**62:
        raise UserInputError(f"{where}: footprint.{key} is {value!r}, not a number of bytes")
    return value


def _is_solo(bundle: Bundle) -> bool:
    """A bundle of one model that carries the model's name: requests use the model's names."""
    return list(bundle.models()) == [bundle.name]
