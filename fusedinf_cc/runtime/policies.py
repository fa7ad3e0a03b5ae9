"""Which idle bundle leaves when a newcomer needs room.

- `lru`: least recently used (the ShmFaaS baseline).
- `gdsf`: GreedyDual-Size-Frequency. Priority = L + frequency * cost / size, where cost is
  what the bundle's miss was measured to cost (`MissCost`: its load and its first run's extra)
  and L rises to each victim's priority, so bundles that are
  often used, slow to load and small stay, and a long-unused bundle ages out. Size is what
  evicting the bundle would free when the victim is chosen: a bundle whose weights other
  resident bundles also hold frees only its own part, and is weighed by that.
- `belady`: clairvoyant, Belady's policy weighed by size: evicts the bundle whose next use lies
  furthest ahead times the bytes its eviction frees. It needs the future, so only a replay of a
  known trace (`simulate`) can run it: a reference for what an online policy could still gain.
  With bundles of one size it is Belady's, which no policy beats on misses; with sizes that
  differ it is a strong heuristic, not a bound.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Hashable, Sequence
from typing import Protocol


class CachedBundle(Protocol):
    name: str
    frequency: int
    priority: float
    base: float  # GDSF's L when the bundle was last used
    cost_seconds: float

    @property
    def size(self) -> int: ...


class CachePolicy(Protocol):
    name: str

    def touch(self, entry: CachedBundle) -> None: ...

    def victim(self, idle: Sequence[CachedBundle]) -> CachedBundle: ...

    def evicted(self, entry: CachedBundle) -> None: ...


class LeastRecentlyUsed:
    name = "lru"

    def __init__(self) -> None:
        self._clock = itertools.count(1)

    def touch(self, entry: CachedBundle) -> None:
        entry.priority = next(self._clock)

    def victim(self, idle: Sequence[CachedBundle]) -> CachedBundle:
        return min(idle, key=lambda entry: entry.priority)

    def evicted(self, entry: CachedBundle) -> None:
        return None


class GreedyDualSizeFrequency:
    name = "gdsf"

    def __init__(self) -> None:
        self.inflation = 0.0

    def touch(self, entry: CachedBundle) -> None:
        entry.frequency += 1
        entry.base = self.inflation
        self._weigh(entry)

    def victim(self, idle: Sequence[CachedBundle]) -> CachedBundle:
        for entry in idle:
            self._weigh(entry)  # sizes change as other bundles come and go
        return min(idle, key=lambda entry: entry.priority)

    @staticmethod
    def _weigh(entry: CachedBundle) -> None:
        entry.priority = entry.base + entry.frequency * entry.cost_seconds / max(entry.size, 1)

    def evicted(self, entry: CachedBundle) -> None:
        self.inflation = entry.priority
        entry.frequency = 0


class Clairvoyant:
    name = "belady"

    def __init__(self, until_next_use: Callable[[str], float]):
        """`until_next_use(name)`: how far ahead the bundle is next used (infinity: never)."""
        self._until_next_use = until_next_use

    def touch(self, entry: CachedBundle) -> None:
        return None

    def victim(self, idle: Sequence[CachedBundle]) -> CachedBundle:
        def weight(entry: CachedBundle) -> tuple[float, int]:
            return self._until_next_use(entry.name) * max(entry.size, 1), entry.size

        return max(idle, key=weight)

    def evicted(self, entry: CachedBundle) -> None:
        return None


# The online policies: what a serving loader can run.
POLICIES: dict[str, type[CachePolicy]] = {
    LeastRecentlyUsed.name: LeastRecentlyUsed,
    GreedyDualSizeFrequency.name: GreedyDualSizeFrequency,
}


class MissCost:
    """What a bundle's miss costs beyond a hit, as GDSF weighs it: the load, and what its first
    run took over a warm one (the weights it waited for or faulted in, cold caches). Where
    weights are read as inference reaches them (`linear`, `interleaved`) the read is in that
    first run, not in the load, and on a device's storage it is most of a miss; weighing the
    load alone made GDSF keep small bundles and swap large ones, reading more bytes than LRU.
    The first run's extra is known at the next warm run, and kept for later misses. `seconds`
    is the cost as known now: the holder's `cost_seconds`."""

    def __init__(self, seconds: float = 0.0) -> None:
        self.seconds = seconds  # before any miss: the load its footprint measured
        self.resident_key: Hashable | None = None  # the session that made it resident
        self._load: dict[Hashable, float] = {}
        self._first_run_extra: dict[Hashable, float] = {}  # as last measured
        self._fresh: set[Hashable] = set()  # opened, not run yet
        self._first_run: dict[Hashable, float] = {}  # run once since opened

    def opened(self, key: Hashable, load_seconds: float) -> None:
        self._load[key] = load_seconds
        self._fresh.add(key)
        self._first_run.pop(key, None)

    def became_resident(self, key: Hashable) -> float:
        """The cost of the miss that opened `key`, as far as it is known yet."""
        self.resident_key = key
        self.seconds = self._load[key] + self._first_run_extra.get(key, 0.0)
        return self.seconds

    def ran(self, key: Hashable, waited: float, ran: float) -> float | None:
        """Note a run of `key` (`waited` for its weights, then `ran`); the bundle's cost anew
        where this warm run completes the measure of the miss that made it resident."""
        if key in self._fresh:
            self._fresh.discard(key)
            self._first_run[key] = waited + ran
            return None
        first = self._first_run.pop(key, None)
        if first is None:
            return None
        self._first_run_extra[key] = max(0.0, first - ran)
        return self.became_resident(key) if key == self.resident_key else None
