"""Replay a trace on predicted sessions: the loader's own ledger and policies, no ONNX Runtime.

A candidate layout is judged the way `simulate` judges real bundles, in the same replay loop
(`workload/replay.py`), with a server that stands in for the loader: each call opens what it
needs, making room in a `MemoryLedger` exactly as the loader does (registration, pooled
weights, a load's transient, the arena, a bundle that closes its own idle sessions first, the
policy's victims, sessions standing by), and runs. Sessions are `CostModel` predictions and
time is counted, not measured, so one replay of thousands of requests takes milliseconds. A
replay starts with the arena grown to the largest request's, as a real replay does (it opened
every called session for its feeds).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from fusedinf_cc.common.errors import UserInputError
from fusedinf_cc.plan.costs import CostModel, SessionCost
from fusedinf_cc.runtime.bundle import WHOLE, SessionKey
from fusedinf_cc.runtime.ledger import Evictable, LoadNeed, MemoryLedger
from fusedinf_cc.runtime.loader import CacheStats
from fusedinf_cc.runtime.policies import CachePolicy, MissCost
from fusedinf_cc.workload.layout import Layout
from fusedinf_cc.workload.replay import FutureUses, ReplayResult, new_policy, serve_trace
from fusedinf_cc.workload.requests import Request
from fusedinf_cc.workload.routing import Call, Routes


@dataclass(eq=False)  # one per bundle: compared by identity, as the loader's entries are
class _Bundle:
    """A bundle as the policies see it (`CachedBundle`), with the sessions it has open."""

    name: str
    members: frozenset[str]
    whole_bytes: int
    sessions: set[SessionKey] = field(default_factory=set)
    frequency: int = 0
    priority: float = 0.0
    base: float = 0.0
    miss: MissCost = field(default_factory=MissCost)
    freeable: int | None = None

    @property
    def cost_seconds(self) -> float:
        return self.miss.seconds

    @property
    def size(self) -> int:
        return self.whole_bytes if self.freeable is None else self.freeable


class PredictedServer:
    """The loader on predicted sessions: its ledger and policy, time counted from the costs."""

    def __init__(
        self,
        layout: Layout,
        routes: Routes,
        costs: CostModel,
        budget_bytes: int,
        policy: CachePolicy,
    ):
        self.costs = costs
        self.policy = policy
        self.stats = CacheStats()
        self.ledger = MemoryLedger(budget_bytes)
        self._bundles: dict[str, _Bundle] = {}
        for name, members in layout.items():
            whole = costs.whole(members)
            need = LoadNeed(whole.bytes + whole.loading_bytes, whole.activation_bytes)
            self.ledger.register(name, need)  # refused as the loader refuses it
            self._bundles[name] = _Bundle(name, members, whole.bytes)
        called = {call.bundle for calls in routes.values() for call in calls}
        self.ledger.arena_bytes = max(
            (costs.whole(layout[name]).activation_bytes for name in called), default=0
        )
        self._resident: dict[str, _Bundle] = {}  # in the order bundles registered
        self._order = {name: index for index, name in enumerate(self._bundles)}
        self._scatter = _scatter(costs.load_jitter)
        self._run_scatter = _scatter(costs.run_jitter, seed=1)
        self.bytes_read = 0  # from storage, as the loads' sessions would read it

    def serve(self, call: Call) -> float:
        bundle = self._bundles[call.bundle]
        key = WHOLE if call.model is None or len(bundle.members) == 1 else call.model
        session = self._session(bundle, key)
        run = session.run_seconds * next(self._run_scatter)
        if key in bundle.sessions:
            self.stats.hits += 1
            self.policy.touch(bundle)
            bundle.miss.ran(key, 0.0, run)
            return run
        load, cold = self._open(bundle, key, session)
        bundle.miss.ran(key, cold, run)
        return load + cold + run

    def request_done(self) -> None:
        return None

    def _session(self, bundle: _Bundle, key: SessionKey) -> SessionCost:
        if key is WHOLE:
            return self.costs.whole(bundle.members)
        return self.costs.part(bundle.members, key)  # type: ignore[arg-type]

    def _open(self, bundle: _Bundle, key: SessionKey, session: SessionCost) -> tuple[float, float]:
        """Make room as the loader does, open the session, and count its load; the seconds
        of its load and of its first run's extra (the read of what is not in memory)."""
        resident = self.ledger.holds(bundle.name)
        reused = self.ledger.stands_by(bundle.name, key)
        others = sorted(
            (b for b in self._resident.values() if b is not bundle),
            key=lambda b: self._order[b.name],
        )
        closed = self.ledger.make_room(
            bundle.name, key, session, idle=others, policy=self.policy, evict=self._evict
        )
        if closed is None:
            raise UserInputError(f"bundle {bundle.name!r} does not fit the budget")
        bundle.sessions.difference_update(closed)
        if resident:
            self.stats.hits += 1
            self.policy.touch(bundle)
        else:
            self.stats.misses += 1
        bundle.sessions.add(key)
        self._resident[bundle.name] = bundle
        stats = self.stats
        stats.peak_accounted_bytes = max(stats.peak_accounted_bytes, self.ledger.held_bytes)
        self.ledger.opened(bundle.name, key)
        in_memory = self.ledger.mapped_elsewhere(session)
        self.bytes_read += max(0, session.read_bytes - in_memory)
        opens = self.costs.reopen_seconds if reused else self.costs.open_seconds
        load, cold = opens(session, in_memory)
        seconds = load * next(self._scatter)
        stats.seconds_loading += seconds
        stats.models_opened += 1 if key is not WHOLE else len(bundle.members)
        bundle.miss.opened(key, seconds)
        if len(bundle.sessions) == 1:
            bundle.miss.became_resident(key)
            self.policy.touch(bundle)
        return seconds, cold

    def _evict(self, victim: Evictable) -> None:
        bundle = self._bundles[victim.name]
        bundle.sessions.clear()
        del self._resident[bundle.name]
        self.stats.evictions += 1
        self.policy.evicted(bundle)


def predict(
    requests: Sequence[Request],
    layout: Layout,
    routes: Routes,
    costs: CostModel,
    budget_bytes: int,
    policy: str,
    deployment: str = "predicted",
) -> ReplayResult:
    """What `simulate.replay` would report for this layout and these routes, on predicted
    sessions; a bundle the loader would refuse under the budget raises `UserInputError`.
    Peak RSS growth is not predicted (0)."""
    future = FutureUses.of(requests, routes)
    server = PredictedServer(layout, routes, costs, budget_bytes, new_policy(policy, future))
    latencies = serve_trace(requests, routes, server, future)
    return ReplayResult.of(
        deployment, policy, budget_bytes, server.stats, latencies, bytes_read=server.bytes_read
    )


def _scatter(ratios: Sequence[float], seed: int = 0) -> Iterator[float]:
    """Measured-over-median factors, drawn (seeded) from `ratios`: 1 with none."""
    if not ratios:
        yield from itertools.repeat(1.0)
    rng = np.random.default_rng(seed)
    pool = np.asarray(ratios, dtype=float)
    while True:
        yield from pool[rng.integers(0, len(pool), size=1024)].tolist()
