"""The memory ledger: what a loader's budget counts, written once.

Memory holds sessions, each a bundle's whole or one model's part. A session counts its own bytes
and the pooled weights it maps; a pooled weight counts once however many sessions map it, for
as long as any does. A session being opened also counts its load's transient until it is open.
Activations come from one arena for the process, counted once at the most one request has
needed (it grows and never shrinks), or, without a shared arena, each session's own. A request
larger than its bundle was measured on counts what it adds beyond that arena while it runs
(`reserve_beyond_arena`), which its run gives back at its end.

An evicted session that maps its weights (an ahead-of-time session's pooled weights) stands by
(decision `standby-sessions`): the weights' pages go, the session stays open and counts its own
bytes, so the bundle's next miss reads its weights without opening a session again. Making
room dismisses sessions standing by, the longest standing first, before it evicts a holder:
dismissing one costs a later miss a session's opening, evicting one its whole load.

Two callers keep a ledger: the live loader (`loader.BundleCache`), under its lock, and the
planner's predicted replays (`plan/predict.py`), directly. Both register bundles (`register`: the
largest load must fit beside the largest arena) and make room the same way (`make_room`), so a
prediction swaps exactly as the loader would on the same bytes. The ledger is pure bookkeeping:
it opens and closes nothing, and knows nothing of locks, time or files.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol

from fusedinf_cc.common.errors import UserInputError
from fusedinf_cc.common.sizes import format_bytes
from fusedinf_cc.runtime.policies import CachePolicy


@dataclass(frozen=True)
class SessionBytes:
    """What one open session holds, as the budget counts it."""

    private_bytes: int  # its own: structures, and weights that are not pooled
    weights: tuple[tuple[str, int], ...] = ()  # pooled weights it maps: (digest, bytes)
    loading_bytes: int = 0  # what opening it needs beyond that, only while it opens

    @functools.cached_property
    def weight_bytes(self) -> int:
        return sum(size for _, size in self.weights)

    @functools.cached_property
    def weight_sizes(self) -> dict[str, int]:
        return dict(self.weights)

    @property
    def bytes(self) -> int:
        """What it holds once open, alone in the process."""
        return self.private_bytes + self.weight_bytes


class LoadNeed(NamedTuple):
    """What a bundle needs to load: its whole as it opens (with the transient), and the
    activations one of its requests takes."""

    load_bytes: int
    arena_bytes: int


def least_budget(needs: Iterable[LoadNeed]) -> int:
    """The least budget under which each of these bundles can load with a shared arena: the
    largest load beside the largest arena (which never shrinks, so it may be another's)."""
    needs = list(needs)
    return max((n.load_bytes for n in needs), default=0) + max(
        (n.arena_bytes for n in needs), default=0
    )


class Evictable(Protocol):
    """A holder of sessions as a policy weighs it (`policies.CachedBundle`), which the ledger
    tells what evicting it would free (`freeable`) before a victim is chosen."""

    name: str
    freeable: int | None


SessionKey = Hashable


class MemoryLedger:
    """The sessions counted against `budget_bytes`, by holder (a bundle's name)."""

    def __init__(self, budget_bytes: int, *, shared_arena: bool = True, standby: bool = True):
        self.budget_bytes = budget_bytes
        self.shared_arena = shared_arena
        self.standby = standby  # evicted sessions that map their weights stand by
        self.arena_bytes = 0  # the shared arena as counted: it grows and never shrinks
        self._private = 0
        self._weights = 0  # each pooled weight once
        self._loading = 0  # the transients of sessions counted and not yet open
        self._activations = 0  # without a shared arena: each counted session's own
        self._beyond_arena = 0  # what requests larger than their bundles' arena add, running
        self._maps: dict[str, int] = {}  # digest -> sessions that map it
        self._sizes: dict[str, int] = {}
        self._shared: set[str] = set()  # digests more than one session maps: few
        self._sessions: dict[str, dict[SessionKey, SessionBytes]] = {}
        self._opening: set[tuple[str, SessionKey]] = set()
        self._needs: dict[str, LoadNeed] = {}
        # Sessions standing by, the longest standing first: (holder, key) -> their own bytes.
        self._standing: dict[tuple[str, SessionKey], int] = {}
        self._standing_bytes = 0

    # registration ---------------------------------------------------------------------------
    def register(self, holder: str, need: LoadNeed) -> None:
        """Accept a bundle that can load under the budget, or refuse it in one line: its load
        beside the largest arena any registered bundle's request needs (the arena never
        shrinks), or beside its own without a shared arena."""
        needs = [*self._needs.values(), need] if self.shared_arena else [need]
        required = least_budget(needs)
        if required > self.budget_bytes:
            raise UserInputError(
                f"bundle {holder!r} needs {format_bytes(required)} of memory (with the "
                "activations of the largest request), more than the whole budget "
                f"({format_bytes(self.budget_bytes)})"
            )
        self._needs[holder] = need

    def unregister(self, holder: str) -> None:
        """Forget a bundle that holds nothing (before it is registered again, rebuilt)."""
        if self.holds(holder) or self.standing_by(holder):
            raise ValueError(f"{holder!r} still holds sessions")
        self._needs.pop(holder, None)

    @property
    def least_budget(self) -> int:
        """The least budget every registered bundle can load under."""
        if not self.shared_arena:
            return max((sum(need) for need in self._needs.values()), default=0)
        return least_budget(self._needs.values())

    # what is counted ------------------------------------------------------------------------
    @property
    def held_bytes(self) -> int:
        """Everything counted now: sessions, pooled weights once, transients, activations."""
        memory = self._private + self._weights + self._loading + self._beyond_arena
        memory += self._standing_bytes
        return memory + (self.arena_bytes if self.shared_arena else self._activations)

    def holds(self, holder: str) -> bool:
        """Whether `holder` is resident: it has sessions counted (standing by is not)."""
        return bool(self._sessions.get(holder))

    def stands_by(self, holder: str, key: SessionKey) -> bool:
        """Whether `holder`'s session for `key` stands by (a lookup: the planner asks it on
        every predicted miss)."""
        return (holder, key) in self._standing

    def standing_by(self, holder: str) -> set[SessionKey]:
        """The keys of `holder`'s sessions standing by."""
        return {key for name, key in self._standing if name == holder}

    def maps(self, digest: str) -> bool:
        """Whether a counted session maps the pooled weight `digest`."""
        return digest in self._maps

    def keys(self, holder: str) -> set[SessionKey]:
        """The holder's sessions counted: those open and those being opened."""
        return set(self._sessions.get(holder, ()))

    def mapped_elsewhere(self, session: SessionBytes) -> int:
        """Bytes of a counted session's pooled weights that another counted session maps too:
        what opening it finds in memory rather than reads."""
        maps = self._maps
        return sum(size for digest, size in session.weights if maps.get(digest, 0) > 1)

    def added_by(self, sessions: Sequence[SessionBytes]) -> int:
        """Bytes these sessions would add to what is counted (transients aside)."""
        new: dict[str, int] = {}
        for session in sessions:
            for digest, size in session.weights:
                if digest not in self._maps:
                    new[digest] = size
        return sum(s.private_bytes for s in sessions) + sum(new.values())

    def freed_by(self, holder: str) -> int:
        """Bytes closing every session of `holder` would free: their own, and the pooled
        weights no other holder's session maps (each at the size the holder maps it). What a
        policy weighs a victim by."""
        held = self._sessions.get(holder)
        if not held:
            return 0
        if len(held) == 1:  # the common case, without walking every weight
            (session,) = held.values()
            if not self._shared:
                return session.bytes
            sizes = session.weight_sizes
            return session.bytes - sum(sizes[d] for d in self._shared if d in sizes)
        own: dict[str, int] = {}
        sizes = {}
        for session in held.values():
            for digest, size in session.weights:
                own[digest] = own.get(digest, 0) + 1
                sizes[digest] = size
        alone = sum(sizes[d] for d, n in own.items() if self._maps.get(d, 0) == n)
        return sum(s.private_bytes for s in held.values()) + alone

    # changes --------------------------------------------------------------------------------
    def count(self, holder: str, key: SessionKey, session: SessionBytes, *, opening: bool) -> None:
        """Count a session; one `opening` counts its load's transient too, until `opened`."""
        held = self._sessions.setdefault(holder, {})
        if key in held:
            return
        self._stop_standing(holder, key)  # counted in full again
        held[key] = session
        self._private += session.private_bytes
        for digest, size in session.weights:
            maps = self._maps.get(digest, 0)
            if maps == 0:
                self._weights += size
                self._sizes[digest] = size
            elif maps == 1:
                self._shared.add(digest)
            self._maps[digest] = maps + 1
        if opening and session.loading_bytes:
            self._opening.add((holder, key))
            self._loading += session.loading_bytes
        if not self.shared_arena:
            self._activations += self._needs[holder].arena_bytes

    def opened(self, holder: str, key: SessionKey) -> None:
        """The session is open: its load's transient is no longer counted."""
        if (holder, key) in self._opening:
            self._opening.discard((holder, key))
            self._loading -= self._sessions[holder][key].loading_bytes

    def uncount(self, holder: str, key: SessionKey) -> None:
        """Stop counting one session (closed, or its open failed)."""
        held = self._sessions.get(holder, {})
        if key not in held:
            return
        self.opened(holder, key)  # a failed open's transient goes too
        session = held.pop(key)
        self._private -= session.private_bytes
        for digest, size in session.weights:
            maps = self._maps[digest] - 1
            if maps == 0:
                self._weights -= size
                del self._maps[digest], self._sizes[digest]
            else:
                self._maps[digest] = maps
                if maps == 1:
                    self._shared.discard(digest)
        if not self.shared_arena:
            self._activations -= self._needs[holder].arena_bytes
        if not held:
            self._sessions.pop(holder, None)

    def release(self, holder: str, *, stand_by: bool = False) -> None:
        """Stop counting every session of `holder` (evicted). `stand_by`: those that map
        their weights stand by instead, counting their own bytes (where the ledger keeps
        sessions standing by)."""
        for key, session in list(self._sessions.get(holder, {}).items()):
            self.uncount(holder, key)
            if stand_by and self.standby and session.weights:
                self._start_standing(holder, key, session.private_bytes)

    def dismiss(self, holder: str) -> set[SessionKey]:
        """Stop counting `holder`'s sessions standing by (closed); their keys."""
        keys = self.standing_by(holder)
        for key in keys:
            self._stop_standing(holder, key)
        return keys

    def stand_by_ahead(self, holder: str, key: SessionKey, own: int) -> bool:
        """Count a session opened ahead of its first request as standing by, at its own
        bytes, where it fits beside everything counted without dismissing or evicting
        anything; whether it was counted."""
        if not self.standby or (holder, key) in self._standing:
            return False
        if key in self._sessions.get(holder, {}) or self.held_bytes + own > self.budget_bytes:
            return False
        self._start_standing(holder, key, own)
        return True

    def _stand_by_again(self, holder: str, key: SessionKey, own: int | None) -> None:
        """Put back a session `make_room` took from standing by and could not count."""
        if own is not None:
            self._start_standing(holder, key, own)

    def _start_standing(self, holder: str, key: SessionKey, own: int) -> None:
        self._standing[holder, key] = own
        self._standing_bytes += own

    def _stop_standing(self, holder: str, key: SessionKey) -> int | None:
        """Stop counting the session standing by, if it does; its own bytes, or None."""
        own = self._standing.pop((holder, key), None)
        self._standing_bytes -= own or 0
        return own

    # room -----------------------------------------------------------------------------------
    def make_room(
        self,
        holder: str,
        key: SessionKey,
        session: SessionBytes,
        *,
        idle: Sequence[Evictable],
        policy: CachePolicy,
        evict: Callable[[Evictable], None],
        may_close_own: bool = True,
        dismiss: Callable[[str, SessionKey], None] = lambda holder, key: None,
    ) -> list[SessionKey] | None:
        """Count `holder`'s session for `key` (`session`, opening), with the arena its request
        needs, evicting `idle` holders (in the order offered) chosen by `policy` until all of
        it fits the budget; `evict(victim)` is told of each, after the ledger stopped counting
        it. Where the holders that are not idle leave no room beside the holder's own idle
        sessions, those close first (`may_close_own`: the holder serves no request now), and
        their keys are returned. Sessions standing by are dismissed before any holder is
        evicted, `dismiss(holder, key)` told of each; the holder's own session for `key`, if
        it stands by, is counted in full instead. None, changing nothing, where no room can
        be made even with every idle holder gone."""
        own_standing = self._stop_standing(holder, key)  # counted in full, or put back
        arena = max(self.arena_bytes, self._needs[holder].arena_bytes) if self.shared_arena else 0
        own = self._sessions.get(holder, {})
        new = key not in own
        if not new and arena == self.arena_bytes:
            return []  # a hit that needs no more memory
        adding = session if new else None
        closing: list[SessionKey] = []
        if self._counted_with(arena, holder, adding) > self.budget_bytes:
            busy = self._busy(holder, idle)
            held = self._held_by(busy, holder, list(own), adding, arena) + self._beyond_arena
            if held > self.budget_bytes:
                others = [k for k in own if k != key]
                kept = [k for k in own if k == key]
                if not may_close_own or not others:
                    return self._stand_by_again(holder, key, own_standing)
                held = self._held_by(busy, holder, kept, adding, arena) + self._beyond_arena
                if held > self.budget_bytes:
                    return self._stand_by_again(holder, key, own_standing)
                for other in others:  # its own idle sessions are what leave no room
                    self.uncount(holder, other)
                closing = others
            self._evict_until(
                lambda: self._counted_with(arena, holder, adding) <= self.budget_bytes,
                idle,
                policy,
                evict,
                dismiss,
            )
        if new:
            self.count(holder, key, session, opening=True)
        self.arena_bytes = arena
        return closing

    def reserve_beyond_arena(
        self,
        holder: str,
        extra: int,
        *,
        idle: Sequence[Evictable],
        policy: CachePolicy,
        evict: Callable[[Evictable], None],
        dismiss: Callable[[str, SessionKey], None] = lambda holder, key: None,
    ) -> bool:
        """Count `extra` bytes a request of `holder` needs beyond the arena counted, while it
        runs, evicting `idle` holders chosen by `policy` until it fits; False, changing nothing,
        where the holders that are not idle leave no room for it."""
        busy = self._busy(holder, idle)
        kept = list(self._sessions.get(holder, ()))
        held = self._held_by(busy, holder, kept, None, self.arena_bytes) + self._beyond_arena
        if held + extra > self.budget_bytes:
            return False
        self._evict_until(
            lambda: self.held_bytes + extra <= self.budget_bytes, idle, policy, evict, dismiss
        )
        self._beyond_arena += extra
        return True

    def _evict_until(
        self,
        fits: Callable[[], bool],
        idle: Sequence[Evictable],
        policy: CachePolicy,
        evict: Callable[[Evictable], None],
        dismiss: Callable[[str, SessionKey], None],
    ) -> None:
        """Until `fits()`: dismiss the session standing by longest (telling `dismiss`), or,
        none standing by, release the `idle` holder `policy` chooses (weighed by what its
        eviction frees now; its sessions that map their weights stand by), telling `evict`;
        until none of either is left."""
        offered = list(idle)
        while not fits():
            if self._standing:
                holder, key = next(iter(self._standing))
                self._stop_standing(holder, key)
                dismiss(holder, key)
                continue
            if not offered:
                return
            for entry in offered:
                entry.freeable = self.freed_by(entry.name)
            victim = policy.victim(offered)
            offered.remove(victim)
            self.release(victim.name, stand_by=True)
            evict(victim)

    def fits_beyond_arena(self, holder: str, extra: int) -> bool:
        """Whether `holder`'s sessions, the arena and `extra` fit the budget with nothing
        else counted: whether a request needing `extra` can ever run."""
        kept = list(self._sessions.get(holder, ()))
        return self._held_by([], holder, kept, None, self.arena_bytes) + extra <= self.budget_bytes

    def free_beyond_arena(self, extra: int) -> None:
        """The request that reserved `extra` (`reserve_beyond_arena`) has ended."""
        self._beyond_arena -= extra

    # sums -----------------------------------------------------------------------------------
    def _busy(self, holder: str, idle: Sequence[Evictable]) -> list[str]:
        """The holders other than `holder` that may not be evicted now."""
        others = len(self._sessions) - (holder in self._sessions)
        if len(idle) >= others:
            return []  # every other holder is idle (a replay's one server: always)
        idle_names = {entry.name for entry in idle}
        return [h for h in self._sessions if h != holder and h not in idle_names]

    def _counted_with(self, arena: int, holder: str, adding: SessionBytes | None) -> int:
        """What is counted, with `arena` as the shared arena and `holder`'s session `adding`
        counted as it opens."""
        memory = self._private + self._weights + self._loading + self._beyond_arena
        memory += self._standing_bytes
        if self.shared_arena:
            memory += arena
        else:
            memory += self._activations
        if adding is None:
            return memory
        memory += adding.private_bytes + adding.loading_bytes
        maps = self._maps
        for digest, size in adding.weights:
            if digest not in maps:
                memory += size
        if not self.shared_arena:
            memory += self._needs[holder].arena_bytes
        return memory

    def _held_by(
        self,
        holders: Iterable[str],
        holder: str,
        keys: Sequence[SessionKey],
        adding: SessionBytes | None,
        arena: int,
    ) -> int:
        """What `holders` with all their sessions, and `holder` with only `keys` and `adding`,
        hold together: as if every other holder were gone."""
        private = loading = activations = 0
        weights: dict[str, int] = {}
        chosen = [(h, k, s) for h in holders for k, s in self._sessions[h].items()]
        chosen += [(holder, k, self._sessions[holder][k]) for k in keys]
        for name, session_key, counted in chosen:
            private += counted.private_bytes
            weights.update(counted.weights)
            if (name, session_key) in self._opening:
                loading += counted.loading_bytes
            activations += self._needs[name].arena_bytes
        if adding is not None:
            private += adding.private_bytes + adding.loading_bytes
            weights.update(adding.weights)
            activations += self._needs[holder].arena_bytes
        memory = private + loading + sum(weights.values())
        return memory + (arena if self.shared_arena else activations)
