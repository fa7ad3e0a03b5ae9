"""Eviction policies: LRU, GDSF weighed by what an eviction frees, and the clairvoyant reference."""

from __future__ import annotations

import math
from dataclasses import dataclass
from types import SimpleNamespace

import pytest

from fusedinf_cc.runtime.bundle import WHOLE
from fusedinf_cc.runtime.policies import (
    Clairvoyant,
    GreedyDualSizeFrequency,
    LeastRecentlyUsed,
    MissCost,
)
from fusedinf_cc.workload.replay import FutureUses


@dataclass
class _Cached:
    size: int
    cost_seconds: float
    frequency: int = 0
    priority: float = 0.0
    base: float = 0.0


def test_gdsf_keeps_what_is_costly_to_reload_and_ages_out_the_rest():
    policy = GreedyDualSizeFrequency()
    slow = _Cached(size=100, cost_seconds=2.0)
    quick = _Cached(size=100, cost_seconds=0.1)
    policy.touch(slow)
    for _ in range(5):
        policy.touch(quick)  # used more often, but cheap to bring back
    assert policy.victim([slow, quick]) is quick
    policy.evicted(quick)
    assert policy.inflation == pytest.approx(5 * 0.1 / 100)
    # Ageing: once inflation has passed the stale bundle's priority, fresh arrivals outrank it.
    policy.inflation = slow.priority
    newcomer = _Cached(size=100, cost_seconds=0.1)
    policy.touch(newcomer)
    assert policy.victim([slow, newcomer]) is slow
    lru = LeastRecentlyUsed()
    lru.touch(slow)
    lru.touch(quick)
    assert lru.victim([slow, quick]) is slow


def test_gdsf_weighs_a_bundle_by_what_its_eviction_would_free_now():
    policy = GreedyDualSizeFrequency()
    first = _Cached(size=100, cost_seconds=1.0)
    second = _Cached(size=100, cost_seconds=1.0)
    policy.touch(first)
    policy.touch(second)
    # Same use, cost and footprint; then another resident bundle comes to hold most of the
    # first one's weights, so evicting it would free little: the second goes.
    first.size = 10
    assert policy.victim([first, second]) is second
    first.size, second.size = 100, 10
    assert policy.victim([first, second]) is first


def test_clairvoyant_policy_evicts_by_distance_to_next_use_times_size():
    future = FutureUses(["a", "b", "c", "a", "b", "a"])
    future.now = 2
    assert [future.until_next_use(name) for name in "abcz"] == [1, 2, math.inf, math.inf]
    policy = Clairvoyant(future.until_next_use)
    a, b = SimpleNamespace(name="a", size=10), SimpleNamespace(name="b", size=10)
    assert policy.victim([a, b]) is b  # used later, frees as much
    a.size = 30
    assert policy.victim([a, b]) is a  # used sooner, but frees three times as much
    future.now = 4
    assert policy.victim([a, b]) is b  # never used again


def test_a_miss_costs_its_load_and_what_its_first_run_took_over_a_warm_one():
    """GDSF weighs a bundle by what its miss costs: where weights are read as inference reaches
    them, the read is in the first run, and that is known once a warm run follows."""
    miss = MissCost()
    miss.opened(WHOLE, 0.010)
    assert miss.became_resident(WHOLE) == pytest.approx(0.010)  # the first run not known yet
    assert miss.ran(WHOLE, waited=0.050, ran=0.020) is None
    assert miss.ran(WHOLE, waited=0.0, ran=0.020) == pytest.approx(0.060)
    assert miss.ran(WHOLE, waited=0.0, ran=0.020) is None  # measured once per open
    # A later miss of the same session is weighed with what the last one measured at once.
    miss.opened(WHOLE, 0.012)
    assert miss.became_resident(WHOLE) == pytest.approx(0.062)
    # A part opened beside the whole measures its own, and does not change the bundle's cost.
    miss.opened("a", 0.004)
    miss.ran("a", waited=0.0, ran=0.009)
    assert miss.ran("a", waited=0.0, ran=0.002) is None
    # A first run faster than a warm one (noise) adds nothing.
    miss.opened(WHOLE, 0.010)
    miss.ran(WHOLE, waited=0.0, ran=0.010)
    assert miss.ran(WHOLE, waited=0.0, ran=0.015) == pytest.approx(0.010)
