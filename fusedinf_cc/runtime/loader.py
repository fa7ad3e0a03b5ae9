"""BundleCache: swap bundles in and out of memory under a budget.

Requests name a bundle, or a model inside one; the cache loads what is missing, evicting idle
bundles chosen by its policy until the newcomer fits. What it budgets with is each bundle's
measured footprint (`footprint.py`), counted session by session in a memory ledger
(`ledger.py`, the one place that rule is written), so the accounting is about real memory. A
bundle serving a request is pinned and never evicted; concurrent requests for a bundle that is
loading wait for that one load; a bundle that could never load under the budget is refused when
registered.

A request for one model of a bundle runs that model's part (`compiler/parts.py`), not the whole
graph: each bundle holds up to one session for the whole and one per model asked for, each
opened when first needed and all closed together when the bundle is evicted.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import threading
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TypeVar

import numpy as np

from fusedinf_cc.artifacts.index import shipped_inputs
from fusedinf_cc.artifacts.manifest import ModelEntry
from fusedinf_cc.backends.base import Session, TensorSpec
from fusedinf_cc.backends.onnxruntime import NO_SPINNING_OPTIONS
from fusedinf_cc.backends.sessions import (
    DEFAULT_RUNTIME,
    check_runtime,
    check_weight_streaming,
    open_session,
)
from fusedinf_cc.backends.weight_pool import DEFAULT_POOL
from fusedinf_cc.common.errors import UserInputError
from fusedinf_cc.common.files import as_path
from fusedinf_cc.common.sizes import format_bytes
from fusedinf_cc.runtime.activations import RESOLUTION_BYTES, growth_of
from fusedinf_cc.runtime.bundle import WHOLE, Bundle, SessionKey, StageKey, open_bundle
from fusedinf_cc.runtime.feeds import (
    check_feeds,
    load_feeds,
    random_feeds,
    read_feeds,
    resolve_shape,
    with_bounds,
)
from fusedinf_cc.runtime.ledger import Evictable, LoadNeed, MemoryLedger
from fusedinf_cc.runtime.loading import (
    ReadingSession,
    check_loading,
    reading,
    start_reading,
    start_reading_weights,
)
from fusedinf_cc.runtime.pagecache import drop_file_pages
from fusedinf_cc.runtime.policies import POLICIES, CachePolicy, MissCost
from fusedinf_cc.runtime.prefetch import Prefetcher, Successors
from fusedinf_cc.runtime.procmem import release_freed_memory
from fusedinf_cc.runtime.run_queue import RunQueue

_T = TypeVar("_T")


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
    sessions_reused: int = 0  # misses served by a session that stood by: nothing opened
    opened_ahead: int = 0  # sessions opened before their first request, standing by
    models_opened: int = 0  # the models those sessions serve: a whole all of its, a part one
    streamed_runs: int = 0  # requests for a bundle larger than the budget, run stage by stage
    arenas_given_back: int = 0  # requests larger than their bundle was measured on
    prefetches: int = 0  # bundles read ahead into the page cache (`prefetch=True`)
    prefetches_used: int = 0  # of those, the bundle the next request asked for
    waits_for_activations: int = 0  # larger requests that let go to wait for room in flight


@dataclass(eq=False)  # one per registered bundle: compared by identity
class _Entry:
    """A registered bundle: its open sessions, pins, and what its policy weighs."""

    bundle: Bundle
    sessions: dict[SessionKey, Session] = field(default_factory=dict)
    standby: dict[SessionKey, Session] = field(default_factory=dict)  # evicted, kept open
    pins: int = 0
    opening: threading.Lock = field(default_factory=threading.Lock)
    frequency: int = 0
    priority: float = 0.0
    base: float = 0.0
    miss: MissCost = field(default_factory=MissCost)  # what its miss costs: GDSF's weight
    run_seconds: dict[SessionKey, float] = field(default_factory=dict)  # each key's last run
    streams: bool = False  # larger than the budget: its whole runs stage by stage
    feeds_path: Path | None = None  # the inputs its footprint is measured on, if given
    measured_sizes: dict[str, int] | None = None  # their elements by input, once read
    stage_specs: tuple[list[TensorSpec], list[TensorSpec]] | None = None
    freeable: int | None = None  # what evicting it frees now; set before a victim is chosen

    @property
    def name(self) -> str:
        return self.bundle.name

    @property
    def cost_seconds(self) -> float:
        return self.miss.seconds

    @property
    def size(self) -> int:
        """What the policy weighs: the bytes its eviction would free, or its footprint."""
        return self.bundle.footprint.measured_bytes if self.freeable is None else self.freeable


class BundleCache:
    """Bundles loaded on demand and evicted by `policy` so their footprints fit `budget_bytes`."""

    def __init__(
        self,
        budget_bytes: int,
        policy: str | Callable[[], CachePolicy] = "lru",
        *,
        share_weights: bool = False,
        pool_weights: bool = True,
        share_arena: bool = True,
        keep_page_cache: bool = False,
        loading: str | None = None,
        prefetch: bool = False,
        standby: bool = True,
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
        `keep_page_cache`: leave an evicted bundle's files in the page cache, so that a reload
        reads memory (a box with memory to spare); by default their pages that no session maps
        are dropped, so that a reload reads storage, as where memory is the limit.
        `loading`: when a newly opened session's mapped weights are read (`loading.py`:
        bulk, linear, interleaved; None: the default).
        `prefetch`: while a request computes, read the bundle that has usually followed its
        bundle into the page cache, where that one is not resident (`prefetch.py`).
        `standby`: an evicted session that maps its weights stays open with its weights'
        pages given back, counted at its own bytes, so the bundle's next miss only reads
        (`ledger.py`); False closes every evicted session.
        `session_factory(artifact, part=...)`: what opens a bundle's whole (part None) or
        one model's part (`open_session`'s `part`)."""
        if isinstance(budget_bytes, bool) or not isinstance(budget_bytes, int) or budget_bytes <= 0:
            raise UserInputError(
                f"the memory budget must be a positive number of bytes, not {budget_bytes!r}"
            )
        if (isinstance(policy, str) and policy not in POLICIES) or not (
            isinstance(policy, str) or callable(policy)
        ):
            raise UserInputError(f"unknown policy {policy!r}; choose from {', '.join(POLICIES)}")
        self._new_policy = POLICIES[policy] if isinstance(policy, str) else policy
        self.policy: CachePolicy = self._new_policy()
        self.stats = CacheStats()
        self.evictions: list[str] = []  # bundle names, in eviction order
        # Where sessions map their weights from, and so what a miss's read goes through.
        self._weight_pool = DEFAULT_POOL if pool_weights else None
        self._session_factory = session_factory or functools.partial(
            open_session,
            runtime=check_runtime(runtime),
            options=NO_SPINNING_OPTIONS,  # idle sessions' threads must not take the cores
            share_weights=share_weights,
            weight_pool=self._weight_pool,
            shared_arena=share_arena,
        )
        self._pool_weights = pool_weights
        self._keep_page_cache = keep_page_cache
        self._loading = check_loading(loading)
        self._ledger = MemoryLedger(budget_bytes, shared_arena=share_arena, standby=standby)
        # Inference one at a time, in the order requests are ready to compute (`run_queue.py`).
        self._run_lock = RunQueue() if share_arena else contextlib.nullcontext()
        self._successors = Successors() if prefetch else None
        self._prefetcher = Prefetcher() if prefetch else None
        self._prefetched: str | None = None  # the bundle last read ahead, until the next request
        self._entries: dict[str, _Entry] = {}
        self._model_index: dict[str, list[str]] = {}  # model name -> bundles holding it
        self._condition = threading.Condition()
        self._refreshing = threading.Lock()  # one rebuilt bundle registered again at a time

    @property
    def budget_bytes(self) -> int:
        return self._ledger.budget_bytes

    @budget_bytes.setter
    def budget_bytes(self, budget_bytes: int) -> None:
        """A new budget for what loads from now on; what is resident stays until evicted."""
        with self._condition:
            self._ledger.budget_bytes = budget_bytes
            self._condition.notify_all()

    # registration -------------------------------------------------------------------------
    def register(
        self,
        bundle: Bundle | str | os.PathLike[str],
        name: str | None = None,
        feeds_path: Path | None = None,
    ) -> Bundle:
        """Register a bundle (opened, or an artifact's path); its models become addressable.
        `feeds_path`: representative inputs (.npz by fused names) its footprint is measured on,
        if it must be measured, for a model that refuses random inputs. A bundle that could
        never load under the budget (`MemoryLedger.register`) is refused."""
        if not isinstance(bundle, Bundle):
            bundle = open_bundle(
                as_path(bundle, "bundle"), name=name, feeds=_whole_feeds(feeds_path)
            )
        with self._condition:
            # Bundle names are unique and never another bundle's model; one model may sit in
            # several bundles (a model shared by several functions), which only makes it
            # ambiguous. A bundle of one model may carry that model's name: both mean the model,
            # and a request for it runs that bundle, the model alone, however many hold it.
            solos = {name for name, entry in self._entries.items() if entry.bundle.is_solo}
            if bundle.is_solo:
                clashes = {bundle.name} & set(self._entries)
            else:
                clashes = ({bundle.name} & (set(self._entries) | set(self._model_index))) | (
                    set(bundle.models()) & ((set(self._entries) - solos) | {bundle.name})
                )
            if clashes:
                raise UserInputError(f"names already registered: {', '.join(sorted(clashes))}")
            streams = self._register_need(bundle)
            # GDSF's cost starts as the load time measured with the footprint.
            self._entries[bundle.name] = _Entry(
                bundle,
                miss=MissCost(bundle.footprint.load_seconds),
                streams=streams,
                feeds_path=feeds_path,
            )
            for model in bundle.models():
                self._model_index.setdefault(model, []).append(bundle.name)
        return bundle

    def refresh(self, name: str) -> bool:
        """Register bundle `name` again where its files changed since it was registered (a
        dist rebuilt in place): the new build is opened (its manifest, inputs, models and
        footprint), then once no request holds the old one, the old one's sessions close and
        the new one takes its place. Requests that ran meanwhile ran the version they found.
        False where nothing changed; a new build that cannot be registered is refused in one
        line and the old one stays registered."""
        bundle_name = self._resolve(name)[0]
        old = self._entries[bundle_name]
        if old.bundle.changed_file() is None:
            return False
        with self._refreshing:  # one request opens the new build; the others find it done
            if self._entries.get(bundle_name) is not old:
                return True
            feeds = _whole_feeds(old.feeds_path)
            self._replace(old, open_bundle(old.bundle.artifact, name=bundle_name, feeds=feeds))
        return True

    def files_moved(self, name: str) -> bool:
        """Whether bundle `name`'s files may have changed since it was registered (their
        identities moved): cheap enough for every request; `refresh` then decides."""
        return self._entries[self._resolve(name)[0]].bundle.files_moved()

    def _replace(self, old: _Entry, new: Bundle) -> None:
        """Put the `new` build in the place of `old` once no request holds it; where the new
        one cannot be registered, the old one stays."""
        with self._condition:
            while old.pins > 0:
                self._condition.wait()
            if self._ledger.holds(old.name):
                self._evict(old)
            self._dismiss_all(old)  # opened on the files that changed
            self._forget(old)
            try:
                self.register(new, feeds_path=old.feeds_path)
            except UserInputError:
                self.register(old.bundle, feeds_path=old.feeds_path)  # it was registered
                raise
            self._condition.notify_all()

    def _forget(self, entry: _Entry) -> None:
        """Unregister a bundle that holds nothing: its name, its models' index, its need."""
        del self._entries[entry.name]
        for model in entry.bundle.models():
            holders = self._model_index.get(model, [])
            if entry.name in holders:
                holders.remove(entry.name)
            if not holders:
                self._model_index.pop(model, None)
        self._ledger.unregister(entry.name)

    def _register_need(self, bundle: Bundle) -> bool:
        """Register what `bundle` needs with the ledger: its whole, or where the whole cannot
        fit the budget and it has stages, its stages one (or, read ahead, two) at a time.
        True where it will run stage by stage."""
        try:
            self._ledger.register(bundle.name, bundle.footprint.load_need)
            return False
        except UserInputError as whole_refused:
            if not bundle.stages:
                hint = " (`fuse --aot --stages auto` builds it to run stage by stage)"
                hint = hint if bundle.shared_weights else ""
                raise UserInputError(f"{whole_refused}{hint}") from None
        ahead = self._loading == "interleaved"
        need = bundle.streamed_bytes(self._pool_weights, ahead=ahead)
        try:
            self._ledger.register(bundle.name, LoadNeed(need, bundle.footprint.activation_bytes))
        except UserInputError as refused:
            raise UserInputError(f"{refused}, even stage by stage") from None
        return True

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
        if outputs is not None and (isinstance(outputs, str) or not list(outputs)):
            raise UserInputError(
                f"request for {name!r}: name the outputs as a list of one or more, or none for all"
            )
        if not isinstance(feeds, Mapping):
            raise UserInputError(
                f"request for {name!r}: feeds map input names to arrays, not a "
                f"{type(feeds).__name__}"
            )
        bundle_name, model = self._resolve(name, bundle)
        if self._successors is not None:
            with self._condition:
                if self._prefetched == bundle_name:
                    self.stats.prefetches_used += 1
                self._prefetched = None
                self._successors.saw(bundle_name)
        if model is None and self._entries[bundle_name].streams:
            return self._run_streamed(self._entries[bundle_name], feeds, outputs, name)
        while True:
            entry, session = self._acquire(bundle_name, model)
            self._prefetch_after(bundle_name)
            try:
                return self._run_request(entry, session, model, feeds, outputs, name)
            except _RoomHeldInFlightError:
                with self._condition:
                    self.stats.waits_for_activations += 1
            finally:
                self._release(entry)
            # Unpinned, so that nothing waits for this request: a request in flight ends,
            # and this one asks again (its bundle still resident, or loaded again).
            with self._condition:
                self._condition.wait(0.1)

    def _run_request(
        self,
        entry: _Entry,
        session: Session,
        model: ModelEntry | None,
        feeds: Mapping[str, np.ndarray],
        outputs: Sequence[str] | None,
        name: str,
    ) -> dict[str, np.ndarray]:
        """Run a pinned bundle's session for a request for `model` (None: the whole)."""
        if model is None:
            check_feeds(feeds, session.inputs, f"request for {name!r}")
            unknown = sorted(set(outputs or ()) - {spec.name for spec in session.outputs})
            if unknown:
                raise UserInputError(f"bundle {name!r} has no outputs {unknown}")
            return self._run_session(entry, WHOLE, session, feeds, outputs)
        wanted = outputs if outputs is not None else list(model.outputs)
        unknown = [output for output in wanted if output not in model.outputs]
        if unknown:
            raise UserInputError(f"model {model.name!r} has no outputs {unknown}")
        fused_feeds = _model_feeds(session, model, feeds, f"request for {name!r}")
        fused_names = [model.outputs[output] for output in wanted]
        key = entry.bundle.session_key(model.name)
        results = self._run_session(entry, key, session, fused_feeds, fused_names)
        return {output: results[model.outputs[output]] for output in wanted}

    def _run_session(
        self,
        entry: _Entry,
        key: SessionKey,
        session: Session,
        feeds: Mapping[str, np.ndarray],
        outputs: Sequence[str] | None,
        *,
        reserve: bool = True,
    ) -> dict[str, np.ndarray]:
        """Run a pinned session under the run lock. One whose weights are still being read
        (`interleaved`) first waits, without the lock, until the rest of its read should end
        within its last run's time (never run: until its first chunk arrived): its inference
        then overlaps the read without stalling on it, and the requests of resident bundles
        compute meanwhile. Raises `_RoomHeldInFlightError`, having run nothing, where a larger
        request's activations must wait (`reserve`: count them; a stage of a bundle run stage
        by stage only gives back what it grew)."""
        waited = 0.0
        if isinstance(session, ReadingSession):
            began = time.perf_counter()
            # Never run yet: wait for the first chunk, so that the run does not fault ahead of
            # the read (the fault reads the disk's whole read-around window first).
            session.reader.wait_until_within(entry.run_seconds.get(key, math.inf))
            waited = time.perf_counter() - began
        # A request larger than the one its footprint was measured on grows the arena past
        # what the budget counts: what it adds is counted while it runs (`reserve`; room made
        # for it as for a load, under the run lock: one such count at a time where runs take
        # turns), and the run gives it back at its end.
        growth = _growth(entry, session, feeds)
        larger = getattr(session, "gives_back_arena", False) and growth > 1.0
        options = {"give_back_arena": True} if larger else {}
        with self._run_lock:
            beyond = self._reserve_beyond_arena(entry, growth) if larger and reserve else 0
            if beyond is None:
                raise _RoomHeldInFlightError
            try:
                started = time.perf_counter()
                results = session.run(feeds, outputs, **options)
                ran = entry.run_seconds[key] = time.perf_counter() - started
                entry.miss.ran(key, waited, ran)
            finally:
                if beyond:
                    with self._condition:
                        self._ledger.free_beyond_arena(beyond)
                        self._condition.notify_all()
        if larger:
            self.stats.arenas_given_back += 1
        return results

    def _prefetch_after(self, bundle_name: str) -> None:
        """Start reading the bundle that usually follows `bundle_name`'s requests, where it is
        not resident, while this request computes."""
        if self._successors is None or self._prefetcher is None:
            return
        with self._condition:
            following = self._successors.likely_after(bundle_name)
            if following is None or self._ledger.holds(following):
                return
            files = [path for path in self._entries[following].bundle.files if path.exists()]
            self.stats.prefetches += 1
            self._prefetched = following
        self._prefetcher.fetch(files)

    def _reserve_beyond_arena(self, entry: _Entry, growth: float) -> int | None:
        """Count what a request `growth` times the size its bundle was measured on adds beyond
        the arena counted (`ActivationCurve`), evicting idle bundles for it; the bytes counted,
        or None where requests in flight hold the room. Refused in one line where it cannot
        fit beside the bundle itself."""
        extra = entry.bundle.footprint.activation_curve.extra_bytes(growth)
        if extra is None or extra < RESOLUTION_BYTES:  # nothing probed, or within the noise:
            return 0  # what it grows is only given back
        need = entry.bundle.footprint.activation_bytes + extra
        with self._condition:
            beyond = max(0, need - self._ledger.arena_bytes)
            if beyond == 0:
                return 0
            if not self._make_room_beyond_arena(entry, beyond):
                if self._ledger.fits_beyond_arena(entry.name, beyond):
                    return None
                what = f"a request {growth:.3g}x the inputs bundle {entry.name!r} was measured on"
                raise UserInputError(
                    f"{what} needs about {format_bytes(need)} of "
                    f"activations, more than the budget ({format_bytes(self.budget_bytes)}) "
                    "leaves beside the bundle; send smaller inputs or serve with a larger budget"
                )
            self._note_peak()
            return beyond

    def _note_peak(self) -> None:
        """Under the lock, after something more was counted."""
        self.stats.peak_accounted_bytes = max(
            self.stats.peak_accounted_bytes, self._ledger.held_bytes
        )

    def _make_room_beyond_arena(self, entry: _Entry, beyond: int) -> bool:
        """Count `beyond` for a request of `entry`, evicting idle bundles until it fits; False,
        changing nothing, where pinned bundles leave no room for it."""
        return self._evicting_for(
            entry,
            lambda idle, evict: self._ledger.reserve_beyond_arena(
                entry.name,
                beyond,
                idle=idle,
                policy=self.policy,
                evict=evict,
                dismiss=self._dismiss,
            ),
        )

    def input_specs(self, name: str, *, bundle: str | None = None) -> list[TensorSpec]:
        """The inputs a request for `name` takes, named as the caller names them."""
        return self.specs(name, bundle=bundle)[0]

    def specs(
        self, name: str, *, bundle: str | None = None
    ) -> tuple[list[TensorSpec], list[TensorSpec]]:
        """(inputs, outputs) of bundle or model `name` (of `bundle`, where given), named as
        the caller names them (loading what a request for it runs, if it is not resident)."""
        bundle_name, model = self._resolve(name, bundle)
        if model is None and self._entries[bundle_name].streams:
            return self._streamed_specs(self._entries[bundle_name])
        entry, session = self._acquire(bundle_name, model)
        try:
            inputs, outputs = list(session.inputs), list(session.outputs)
        finally:
            self._release(entry)
        manifest = entry.bundle.manifest
        inputs = with_bounds(inputs, manifest.input_bounds) if manifest else inputs
        if model is None:
            return inputs, outputs
        own_inputs = {fused: own for own, fused in model.inputs.items()}
        own_outputs = {fused: own for own, fused in model.outputs.items()}
        return (
            [replace(s, name=own_inputs[s.name]) for s in inputs if s.name in own_inputs],
            [replace(s, name=own_outputs[s.name]) for s in outputs if s.name in own_outputs],
        )

    def open_ahead(self, name: str) -> bool:
        """Open the session a request for `name` runs now and stand it by, its weights left
        unread: its first request then reads them and runs, as a miss after an eviction does,
        instead of opening a session on the request's path (2-3 ms for the OCR trio, 4-8 ms
        for a fused zoo bundle). What `serve` does for each bundle once registered. Only for
        sessions that can stand by (ahead-of-time, not streamed), and only where the session
        fits beside everything counted: nothing is dismissed or evicted for it, and a miss
        that needs the room dismisses it first. Whether it now stands by."""
        bundle_name, model = self._resolve(name)
        entry = self._entries[bundle_name]
        key = entry.bundle.session_key(model.name if model is not None else None)
        if entry.streams or not self._ledger.standby or entry.bundle.weight_records(key) is None:
            return False  # its weights are not mapped: nothing to leave unread
        with entry.opening:  # a request for it meanwhile waits, then finds it standing by
            with self._condition:
                if key in entry.sessions or key in entry.standby:
                    return False
            entry.bundle.check_unchanged()
            session = self._session_factory(
                entry.bundle.artifact, part=entry.bundle.session_record(key)
            )
            own = entry.bundle.session_bytes(key, self._pool_weights).private_bytes
            with self._condition:
                stands = bool(getattr(session, "mapped_weights", None))
                stands = stands and self._ledger.stand_by_ahead(entry.name, key, own)
                if stands:
                    entry.standby[key] = self._stand_by(session)
                    self.stats.opened_ahead += 1
            if not stands:
                session.close()
            return stands

    def load(self, name: str, *, bundle: str | None = None) -> None:
        """Make what a request for `name` runs resident now (a bundle, or a model's part of
        one), evicting as needed."""
        bundle_name, model = self._resolve(name, bundle)
        self._release(self._acquire(bundle_name, model)[0])

    def unload(self, name: str, *, stand_by: bool = False) -> bool:
        """Evict bundle `name` (or its model's bundle) once no request holds it, and hand the
        memory it held back to the system; False when it was not resident. `stand_by`: as
        making room evicts, its sessions that map their weights stand by (`standby`)."""
        bundle_name = self._resolve(name)[0]
        with self._condition:
            entry = self._entries[bundle_name]
            while entry.pins > 0:
                self._condition.wait()
            if not stand_by:
                self._dismiss_all(entry)
            if not self._ledger.holds(bundle_name):
                return False
            self._evict(entry, stand_by=stand_by)
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
            sessions = self._entries[bundle_name].sessions
            return [bundle_name if key is WHOLE else key for key in sessions]

    # stage by stage ---------------------------------------------------------------------------
    def _run_streamed(
        self,
        entry: _Entry,
        feeds: Mapping[str, np.ndarray],
        outputs: Sequence[str] | None,
        name: str,
    ) -> dict[str, np.ndarray]:
        """Run a bundle larger than the budget one stage at a time: each stage opened (room
        made for it as for any session), run on what earlier stages computed, then closed and
        its pages let go. With `interleaved` loading the next stage opens, and its weights
        are read, while the current one runs."""
        inputs, known_outputs = self._streamed_specs(entry)
        check_feeds(feeds, inputs, f"request for {name!r}")
        wanted = list(outputs) if outputs is not None else [spec.name for spec in known_outputs]
        unknown = sorted(set(wanted) - {spec.name for spec in known_outputs})
        if unknown:
            raise UserInputError(f"bundle {name!r} has no outputs {unknown}")
        stages = entry.bundle.stages
        ahead = self._loading == "interleaved"
        with self._condition:
            entry.pins += 1
            self.stats.misses += 1
            self.stats.streamed_runs += 1
            loads = self.stats.loads_by_bundle
            loads[entry.name] = loads.get(entry.name, 0) + 1
        opened: dict[int, Session] = {}
        try:
            values = dict(feeds)
            last_read = {n: i for i, stage in enumerate(stages) for n in stage.inputs}
            spent: dict[int, list[str]] = {}  # stage -> values no later stage reads
            for value, index in last_read.items():
                if value not in wanted:
                    spent.setdefault(index, []).append(value)
            for index, stage in enumerate(stages):
                if index not in opened:
                    opened[index] = self._open_stage(entry, index)
                if ahead and index + 1 < len(stages):
                    opened[index + 1] = self._open_stage(entry, index + 1)
                session = opened.pop(index)
                try:
                    stage_feeds = {n: values[n] for n in stage.inputs}
                    values.update(
                        self._run_session(
                            entry,
                            StageKey(index),
                            session,
                            stage_feeds,
                            stage.outputs,
                            reserve=False,
                        )
                    )
                finally:
                    self._close_stage(entry, index, session)
                for value in spent.get(index, ()):
                    values.pop(value, None)
            return {output: values[output] for output in wanted}
        finally:
            for index, session in opened.items():
                self._close_stage(entry, index, session)
            self._release(entry)

    def _open_stage(self, entry: _Entry, index: int) -> Session:
        """Count stage `index` of a pinned streaming bundle (evicting as needed) and open it."""
        key = StageKey(index)
        with self._condition:
            self._wait_for_room(entry, key, f"bundle {entry.name!r}: stage {index}", own_pins=1)
        started = time.perf_counter()
        try:
            session = self._open_read(entry, key)
        except BaseException:
            with self._condition:
                self._ledger.uncount(entry.name, key)
                self._condition.notify_all()
            raise
        with self._condition:
            self._ledger.opened(entry.name, key)
            self.stats.sessions_opened += 1
            self.stats.seconds_loading += time.perf_counter() - started
            self.stats.bytes_loaded += entry.bundle.session_bytes(key, self._pool_weights).bytes
            self._note_peak()
        return session

    def _close_stage(self, entry: _Entry, index: int, session: Session) -> None:
        """Close a stage, stop counting it, and let its weights' pages go."""
        session.close()
        with self._condition:
            self._ledger.uncount(entry.name, StageKey(index))
            self._condition.notify_all()
        if not self._keep_page_cache:
            drop_file_pages(entry.bundle.files)  # pages still mapped (the next stage's) stay

    def _streamed_specs(self, entry: _Entry) -> tuple[list[TensorSpec], list[TensorSpec]]:
        """A streaming bundle's inputs and outputs: those of its stages that are the
        bundle's own, read once from each stage opened alone (mapped, not read)."""
        if entry.stage_specs is None:
            graph_inputs: list[TensorSpec] = []
            produced: list[TensorSpec] = []
            made: set[str] = set()
            entry.bundle.check_unchanged()
            for stage in entry.bundle.stages:
                session = self._session_factory(entry.bundle.artifact, part=stage)
                try:
                    graph_inputs += [s for s in session.inputs if s.name not in made]
                    produced += session.outputs
                    made |= {s.name for s in session.outputs}
                finally:
                    session.close()
            read_later = {n for stage in entry.bundle.stages for n in stage.inputs}
            manifest_outputs = {
                fused
                for model in entry.bundle.models().values()
                for fused in model.outputs.values()
            }
            outputs = [
                s for s in produced if s.name in manifest_outputs or s.name not in read_later
            ]
            unique_inputs = list({s.name: s for s in graph_inputs}.values())
            entry.stage_specs = (unique_inputs, outputs)
        return entry.stage_specs

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
                return name, (bundle.models()[name] if bundle.is_solo else None)
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
            resident = self._wait_for_room(entry, key, f"bundle {bundle_name!r}", own_pins=0)
            entry.pins += 1
            if resident:
                self.stats.hits += 1
                self.policy.touch(entry)
            else:
                self.stats.misses += 1
                loads = self.stats.loads_by_bundle
                loads[bundle_name] = loads.get(bundle_name, 0) + 1
            self._note_peak()
        try:
            return entry, self._session_for(entry, key)
        except BaseException:
            with self._condition:
                if key not in entry.sessions:
                    self._ledger.uncount(bundle_name, key)  # nothing of a failed open stays
            self._release(entry)
            raise

    def _open_read(self, entry: _Entry, key: SessionKey) -> Session:
        """Open the session for `key` of a checked bundle, its weights read as the loading
        policy says: the read starts before the session opens."""
        entry.bundle.check_unchanged()
        weights = entry.bundle.weight_records(key)
        reader = start_reading(weights, self._loading, self._weight_pool)
        try:
            session = self._session_factory(
                entry.bundle.artifact, part=entry.bundle.session_record(key)
            )
        except BaseException:
            if reader is not None:
                reader.stop()
            raise
        return reading(session, reader)

    def _reuse(self, entry: _Entry, key: SessionKey, session: Session) -> Session:
        """A session that stood by, its weights read as the loading policy says through the
        session's own mapping (what it maps, pooled from whichever file; read so, the pages
        are mapped for it too, and its run takes no faults on them); closed where the
        bundle's files changed since it opened."""
        try:
            entry.bundle.check_unchanged()
        except BaseException:
            session.close()
            raise
        weights = getattr(session, "mapped_weights", [])
        return reading(session, start_reading_weights(weights, self._loading))

    def _session_for(self, entry: _Entry, key: SessionKey) -> Session:
        """The pinned entry's session for `key`, opened once however many requests ask at once
        (they wait for the one that opens it)."""
        with entry.opening:
            session = entry.sessions.get(key)
            if session is not None:
                return session
            with self._condition:
                standing = entry.standby.pop(key, None)  # the ledger counts it in full now
            started = time.perf_counter()
            if standing is None:
                session = self._open_read(entry, key)  # bulk reads here: load time
            else:
                session = self._reuse(entry, key, standing)
            seconds = time.perf_counter() - started
            with self._condition:
                entry.sessions[key] = session
                counted = entry.bundle.session_bytes(key, self._pool_weights)
                # Counted again, if a failed open beside it uncounted it; open: no transient.
                self._ledger.count(entry.name, key, counted, opening=False)
                self._ledger.opened(entry.name, key)
                if standing is None:
                    self.stats.sessions_opened += 1
                else:
                    self.stats.sessions_reused += 1
                serves = 1 if key is not WHOLE else len(entry.bundle.models())
                self.stats.models_opened += max(1, serves)
                self.stats.seconds_loading += seconds
                self.stats.bytes_loaded += counted.bytes
                entry.miss.opened(key, seconds)
                if len(entry.sessions) == 1:  # the bundle has just become resident
                    entry.miss.became_resident(key)
                    self.policy.touch(entry)
                if counted.loading_bytes:
                    self._condition.notify_all()  # its transient is no longer counted
        if key is WHOLE and not entry.bundle.shared_weights:
            # A portable load freed the weights it copied: hand them back, as its footprint
            # was measured, so that what stays counted is what stays resident.
            release_freed_memory()
        return session

    def _wait_for_room(self, entry: _Entry, key: SessionKey, what: str, *, own_pins: int) -> bool:
        """Under the lock: count `entry`'s session for `key` once room is made (`_make_room`),
        waiting while requests in flight hold it; refuse where nothing in flight could free
        any (`own_pins`: the pins the caller itself holds). Whether the bundle held sessions
        just before: a hit."""
        while True:
            resident = self._ledger.holds(entry.name)
            if self._make_room(entry, key):  # a hit may need a part or more arena
                return resident
            if sum(e.pins for e in self._entries.values()) <= own_pins:
                # Nothing in flight can free room: waiting would never end.
                raise UserInputError(
                    f"{what} does not fit the budget ({format_bytes(self.budget_bytes)}) even "
                    "with every other bundle evicted"
                )
            self._condition.wait()  # pins hold the room

    def _make_room(self, newcomer: _Entry, key: SessionKey) -> bool:
        """Count `newcomer`'s session for `key` in the ledger, which evicts idle bundles
        (`_evict`) until it fits; False, changing nothing, when pinned bundles leave no room
        even with every idle one gone."""
        closed = self._evicting_for(
            newcomer,
            lambda idle, evict: self._ledger.make_room(
                newcomer.name,
                key,
                newcomer.bundle.session_bytes(key, self._pool_weights),
                idle=idle,
                policy=self.policy,
                evict=evict,
                may_close_own=newcomer.pins == 0,
                dismiss=self._dismiss,
            ),
        )
        if closed is None:
            return False
        if closed:
            self._close_sessions(newcomer, closed)
        return True

    def _evicting_for(
        self, entry: _Entry, count: Callable[[list[_Entry], Callable[[Evictable], None]], _T]
    ) -> _T:
        """`count(idle, evict)`: a ledger call that counts something of `entry`, offered the
        resident bundles no request holds and told of each it evicts (`_evict`); what it
        returns. Freed memory is then handed back (malloc_trim) only where a victim's weights
        lay in the heap. An ahead-of-time bundle maps its weights and holds 2-3.5 MiB of its
        own, which the next load reuses: trimming that cost a request 1 ms an eviction, up to
        5, and lowered no peak. A portable bundle's freed weights would leave holes the
        allocator keeps: without a trim the process grew 46% past its budget."""
        idle = [
            other
            for other in self._entries.values()
            if other is not entry and other.pins == 0 and self._ledger.holds(other.name)
        ]
        victims: list[_Entry] = []

        def evict(victim: Evictable) -> None:
            self._evict(victim, stand_by=True)  # type: ignore[arg-type]
            victims.append(victim)  # type: ignore[arg-type]

        counted = count(idle, evict)
        if any(not victim.bundle.shared_weights for victim in victims):
            release_freed_memory()
        return counted

    def _close_sessions(self, entry: _Entry, keys: Sequence[SessionKey]) -> None:
        """Close some sessions of an idle bundle, which stays resident with the rest (the
        ledger no longer counts them)."""
        for key in keys:
            session = entry.sessions.pop(key, None)
            if session is not None:
                session.close()
        release_freed_memory()

    def _evict(self, entry: _Entry, *, drop_pages: bool = True, stand_by: bool = False) -> None:
        """Close every session the bundle holds, the whole's and its parts', and drop its
        files' pages from the page cache (`drop_pages`, unless the cache keeps them).
        `stand_by`: those the ledger keeps standing by stay open, their weights' pages given
        back where no resident session maps them."""
        self.evictions.append(entry.bundle.name)
        self._ledger.release(entry.name, stand_by=stand_by)  # done already where it chose
        standing = self._ledger.standing_by(entry.name)
        for key, session in entry.sessions.items():
            if key in standing:
                entry.standby[key] = self._stand_by(session)
            else:
                session.close()
        entry.sessions.clear()
        if drop_pages and not self._keep_page_cache:
            drop_file_pages(entry.bundle.files)
        self.stats.evictions += 1
        self.policy.evicted(entry)

    def _stand_by(self, session: Session) -> Session:
        """`session`, its read stopped and its weights' pages unmapped, save those a counted
        session maps too (they stay resident for it)."""
        if isinstance(session, ReadingSession):
            session.reader.stop()
            session = session.session
        for weight in getattr(session, "mapped_weights", ()):
            if not self._ledger.maps(weight.digest):
                weight.give_back_pages()
        return session

    def _dismiss(self, holder: str, key: SessionKey) -> None:
        """Close a session the ledger no longer counts standing by."""
        session = self._entries[holder].standby.pop(key, None)
        if session is not None:
            session.close()

    def _dismiss_all(self, entry: _Entry) -> None:
        """Close every session of `entry` standing by."""
        for key in self._ledger.dismiss(entry.name):
            self._dismiss(entry.name, key)

    def _release(self, entry: _Entry) -> None:
        with self._condition:
            entry.pins -= 1
            if entry.pins == 0 and not entry.sessions:
                self._ledger.release(entry.name)  # its load failed: nothing of it stays counted
            self._condition.notify_all()

    def reset_stats(self) -> None:
        """Start counting (and the policy's history) afresh, e.g. after a warm-up."""
        with self._condition:
            self.stats = CacheStats(peak_accounted_bytes=self._ledger.held_bytes)
            self.evictions.clear()
            self.policy = self._new_policy()
            for entry in self._entries.values():
                entry.frequency, entry.priority, entry.base = 0, 0.0, 0.0

    # inspection ---------------------------------------------------------------------------
    @property
    def accounted_bytes(self) -> int:
        with self._condition:
            return self._ledger.held_bytes

    @property
    def least_budget_bytes(self) -> int:
        """The least budget under which every registered bundle can still load."""
        with self._condition:
            return self._ledger.least_budget

    def resident(self) -> list[str]:
        with self._condition:
            return [name for name, e in self._entries.items() if e.sessions]

    def close(self, *, cold: bool = False) -> None:
        """Close every idle bundle and hand the memory they held back to the system. `cold`:
        drop every bundle's files from the page cache too (unless the cache keeps them), so
        that what loads next reads storage, as after a device boots."""
        if self._prefetcher is not None:
            self._prefetcher.cancel()
        with self._condition:
            for entry in self._entries.values():
                self._dismiss_all(entry)
                if entry.pins == 0 and self._ledger.holds(entry.name):
                    self._evict(entry, drop_pages=False)
                if cold and not self._keep_page_cache and entry.pins == 0:
                    drop_file_pages(entry.bundle.files)
        release_freed_memory()


class EngineCache(BundleCache):
    """The former name of `BundleCache`, kept for one release: it caches any bundle, not only
    TensorRT engines."""

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        warnings.warn(
            "EngineCache is now BundleCache; the old name goes in the next release",
            DeprecationWarning,
            stacklevel=2,
        )
        super().__init__(*args, **kwargs)


def run_once(
    artifact: Path,
    *,
    model: str | None = None,
    feeds_path: Path | None = None,
    runtime: str = DEFAULT_RUNTIME,
    weight_streaming_budget: int | None = None,
    loading: str | None = None,
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
    cache = BundleCache(
        max(bundle.footprint.alone_bytes, 1), loading=loading, session_factory=factory
    )
    cache.register(bundle)
    name = model or bundle.name
    try:
        specs = cache.input_specs(name)
        feeds = load_feeds(feeds_path, specs) if feeds_path else random_feeds(specs)
        return cache.run(name, feeds)
    finally:
        cache.close()


class _RoomHeldInFlightError(Exception):
    """A larger request's activations fit the budget only once requests in flight end: it lets
    go of its bundle and asks again."""


def _growth(entry: _Entry, session: Session, feeds: Mapping[str, np.ndarray]) -> float:
    """How many times the input elements the bundle's footprint, and with it the arena the
    budget counts, was measured on a request's inputs hold: those inputs are the ones it ships,
    or random ones with every dynamic dim 1."""
    if entry.measured_sizes is None:
        shipped = _whole_feeds(entry.feeds_path) or {}
        entry.measured_sizes = {name: array.size for name, array in shipped.items()}
    sizes = entry.measured_sizes
    measured = sum(
        sizes.get(spec.name) or math.prod(resolve_shape(spec, {})) for spec in session.inputs
    )
    return growth_of(feeds, measured)


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
