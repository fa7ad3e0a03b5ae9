"""Which idle bundle leaves when a newcomer needs room.

- `lru`: least recently used (the ShmFaaS baseline).
- `gdsf`: GreedyDual-Size-Frequency. Priority = L + frequency * cost / size, where cost is the
  bundle's measured load seconds and L rises to each victim's priority, so bundles that are
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
from collections.abc import Callable, Sequence
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
