"""Replay a trace on predicted sessions: the loader's accounting and policies, no ONNX Runtime.

A candidate grouping is judged the way `simulate` judges real bundles: one server takes the
requests in arrival order, each call opens what it needs (evicting idle bundles chosen by the
loader's own policy objects until it fits the budget beside the shared activation arena) and
runs. Sessions are `CostModel` predictions and time is counted, not measured, so one replay of
thousands of requests takes milliseconds. The accounting follows `EngineCache`: a bundle holds
its whole and its models' parts as sessions, pooled weights count once while any session holds
them, a whole counts its load's transient until it is open, the arena grows to the largest
request and never shrinks (and a replay starts with it grown: it opened every called session
for its feeds), a bundle whose next session does not fit beside its own idle ones closes those
first.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from fusedinf_cc.common.errors import UserInputError
from fusedinf_cc.measure.simulate import (
    Call,
    FutureUses,
    ReplayResult,
    Request,
    check_policies,
)
from fusedinf_cc.plan.costs import CostModel, SessionCost
from fusedinf_cc.runtime.policies import POLICIES, CachePolicy, Clairvoyant


@dataclass
class _Resident:
    """A bundle as the policies see it (`CachedBundle`), with its open sessions."""

    name: str
    members: frozenset[str]
    whole_bytes: int
    activation: int
    sessions: dict[str | None, SessionCost] = field(default_factory=dict)
    frequency: int = 0
    priority: float = 0.0
    base: float = 0.0
    cost_seconds: float = 0.0
    freeable: int | None = None

    @property
    def size(self) -> int:
        return self.whole_bytes if self.freeable is None else self.freeable


class _Memory:
    """What open sessions hold: their own bytes, and each pooled weight once."""

    def __init__(self) -> None:
        self.private = 0
        self.weights = 0
        self._holders: dict[str, int] = {}
        self._sizes: dict[str, int] = {}
        self._shared: set[str] = set()  # digests more than one session holds: few

    def add(self, cost: SessionCost) -> None:
        self.private += cost.private_bytes
        for digest, size in cost.weights:
            count = self._holders.get(digest, 0)
            if count == 0:
                self.weights += size
                self._sizes[digest] = size
            elif count == 1:
                self._shared.add(digest)
            self._holders[digest] = count + 1

    def remove(self, cost: SessionCost) -> None:
        self.private -= cost.private_bytes
        for digest, size in cost.weights:
            count = self._holders[digest] - 1
            if count == 0:
                self.weights -= size
                del self._holders[digest], self._sizes[digest]
            else:
                self._holders[digest] = count
                if count == 1:
                    self._shared.discard(digest)

    def added_by(self, costs: Sequence[SessionCost]) -> int:
        """Bytes these sessions would add to what is held."""
        new: dict[str, int] = {}
        for cost in costs:
            for digest, size in cost.weights:
                if digest not in self._holders:
                    new[digest] = size
        return sum(c.private_bytes for c in costs) + sum(new.values())

    def freed_by(self, costs: Sequence[SessionCost]) -> int:
        """Bytes closing these sessions (all of one bundle) would free."""
        if len(costs) == 1:  # the common case, without walking every weight
            cost = costs[0]
            kept = sum(self._sizes[d] for d in self._shared if d in cost.digests)
            return cost.bytes - kept
        own: dict[str, int] = {}
        sizes: dict[str, int] = {}
        for cost in costs:
            for digest, size in cost.weights:
                own[digest] = own.get(digest, 0) + 1
                sizes[digest] = size
        alone = sum(sizes[d] for d, n in own.items() if self._holders.get(d, 0) == n)
        return sum(c.private_bytes for c in costs) + alone


def predict(
    requests: Sequence[Request],
    bundles: Mapping[str, frozenset[str]],
    calls: Mapping[str, Sequence[Call]],
    costs: CostModel,
    budget_bytes: int,
    policy: str,
    deployment: str = "predicted",
) -> ReplayResult:
    """`simulate.replay`'s result for these bundles (name -> models) and routed calls, on
    predicted sessions. Peak RSS growth is not predicted (0)."""
    check_policies([policy])
    future = FutureUses([c.bundle for r in requests for c in calls[r.function]])
    made: CachePolicy = (
        Clairvoyant(future.until_next_use) if policy == Clairvoyant.name else POLICIES[policy]()
    )
    entries = {}
    for name, members in bundles.items():
        whole = costs.whole(members)
        if whole.bytes + whole.loading_bytes + whole.activation_bytes > budget_bytes:
            raise UserInputError(
                f"bundle {name!r} ({', '.join(sorted(members))}) does not fit the budget"
            )
        entries[name] = _Resident(name, members, whole.bytes, whole.activation_bytes)
    order = {entry.name: i for i, entry in enumerate(entries.values())}
    scatter = _scatter(costs.load_jitter)
    memory = _Memory()
    resident: dict[str, _Resident] = {}
    # A replay opens every called session once for its feeds before it starts: the arena it
    # starts with has grown to the largest of them. A request needs its bundle's arena, parts
    # too (what the loader counts).
    arena = max(
        (entries[call.bundle].activation for called in calls.values() for call in called),
        default=0,
    )
    hits = misses = evictions = models_loaded = 0
    loading = peak = 0.0
    server_free_at = 0.0
    latencies = []
    step = 0
    for request in requests:
        service = 0.0
        for call in calls[request.function]:
            future.now = step
            step += 1
            entry = entries[call.bundle]
            key = None if call.model is None or len(entry.members) == 1 else call.model
            session = costs.whole(entry.members) if key is None else costs.part(entry.members, key)
            was_resident = entry.name in resident
            needed_arena = max(arena, entry.activation)
            opened = key not in entry.sessions
            if opened:
                # In the order bundles registered, as the loader offers them: a policy that
                # weighs two victims alike takes the first.
                others = sorted(
                    (e for e in resident.values() if e is not entry), key=lambda e: order[e.name]
                )
                # A whole counts its load's transient until it is open.
                room = needed_arena + session.loading_bytes
                if _alone_bytes([*entry.sessions.values(), session]) + room > budget_bytes:
                    if not entry.sessions:
                        raise UserInputError(f"bundle {entry.name!r} does not fit the budget")
                    # Its own idle sessions are what leave no room: close them, as the loader does.
                    for cost in entry.sessions.values():
                        memory.remove(cost)
                    entry.sessions.clear()
                while not _fits(memory, [session], room, budget_bytes) and others:
                    for other in others:
                        other.freeable = memory.freed_by(list(other.sessions.values()))
                    victim = made.victim(others)
                    others.remove(victim)
                    for cost in victim.sessions.values():
                        memory.remove(cost)
                    victim.sessions.clear()
                    del resident[victim.name]
                    evictions += 1
                    made.evicted(victim)
                arena = needed_arena
                if was_resident:
                    hits += 1
                    made.touch(entry)
                else:
                    misses += 1
                entry.sessions[key] = session
                memory.add(session)
                peak = max(peak, memory.private + memory.weights + room)
                resident[entry.name] = entry
                seconds = session.load_seconds * next(scatter)
                service += seconds
                loading += seconds
                models_loaded += 1 if key is not None else len(entry.members)
                if len(entry.sessions) == 1:
                    entry.cost_seconds = seconds
                    made.touch(entry)
            else:
                hits += 1
                made.touch(entry)
                arena = needed_arena
            peak = max(peak, memory.private + memory.weights + arena)
            service += session.run_seconds + (session.cold_seconds if opened else 0.0)
        start = max(request.arrival_s, server_free_at)
        server_free_at = start + service
        latencies.append((server_free_at - request.arrival_s) * 1000.0)
    return ReplayResult(
        deployment=deployment,
        policy=policy,
        budget_bytes=budget_bytes,
        requests=len(requests),
        hits=hits,
        misses=misses,
        models_loaded=models_loaded,
        evictions=evictions,
        seconds_loading=loading,
        p50_ms=float(np.percentile(latencies, 50)),
        p99_ms=float(np.percentile(latencies, 99)),
        peak_accounted_bytes=int(peak),
        peak_rss_growth_bytes=0,
    )


def _fits(memory: _Memory, sessions: Sequence[SessionCost], arena: int, budget: int) -> bool:
    return memory.private + memory.weights + memory.added_by(sessions) + arena <= budget


def _alone_bytes(sessions: Sequence[SessionCost]) -> int:
    return _Memory().added_by(sessions)


def _scatter(ratios: Sequence[float]) -> Iterator[float]:
    """Each load's measured-over-median factor, drawn (seeded) from `ratios`: 1 with none."""
    if not ratios:
        yield from itertools.repeat(1.0)
    rng = np.random.default_rng(0)
    pool = np.asarray(ratios, dtype=float)
    while True:
        yield from pool[rng.integers(0, len(pool), size=1024)].tolist()
