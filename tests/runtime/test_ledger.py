"""The memory ledger: what the loader's budget counts, and how it makes room, on plain numbers."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from fusedinf_cc.common.errors import UserInputError
from fusedinf_cc.runtime.ledger import LoadNeed, MemoryLedger, SessionBytes, least_budget
from fusedinf_cc.runtime.policies import LeastRecentlyUsed

WHOLE = "whole"


@dataclass
class Holder:
    """A bundle as a policy sees it."""

    name: str
    size: int = 0
    frequency: int = 0
    priority: float = 0.0
    base: float = 0.0
    cost_seconds: float = 0.0
    freeable: int | None = None


def _none_expected(victim: Holder) -> None:
    raise AssertionError(f"{victim.name} was evicted where there was room")


def _ledger(budget: int, needs: dict[str, LoadNeed], *, shared_arena: bool = True):
    ledger = MemoryLedger(budget, shared_arena=shared_arena)
    for name, need in needs.items():
        ledger.register(name, need)
    return ledger


def test_a_pooled_weight_counts_once_while_any_session_maps_it():
    ledger = _ledger(10_000, {"a": LoadNeed(500, 50), "b": LoadNeed(500, 70)})
    backbone = ("backbone", 300)
    ledger.count("a", WHOLE, SessionBytes(100, (backbone, ("head-a", 20))), opening=False)
    ledger.count("b", WHOLE, SessionBytes(200, (backbone, ("head-b", 30))), opening=False)
    ledger.arena_bytes = 70
    assert ledger.held_bytes == 100 + 200 + 300 + 20 + 30 + 70
    assert ledger.added_by([SessionBytes(5, (backbone, ("new", 7)))]) == 5 + 7
    ledger.release("a")
    assert ledger.held_bytes == 200 + 300 + 30 + 70  # b still maps the backbone
    ledger.release("b")
    assert ledger.held_bytes == 70  # the arena never shrinks
    assert not ledger.holds("a") and not ledger.holds("b")


def test_a_loads_transient_counts_only_until_it_is_open():
    ledger = _ledger(10_000, {"a": LoadNeed(900, 0)})
    whole = SessionBytes(600, loading_bytes=300)
    ledger.count("a", WHOLE, whole, opening=True)
    assert ledger.held_bytes == 900
    ledger.opened("a", WHOLE)
    assert ledger.held_bytes == 600
    ledger.uncount("a", WHOLE)
    ledger.count("a", WHOLE, whole, opening=True)
    ledger.uncount("a", WHOLE)  # a failed open: nothing of it stays
    assert ledger.held_bytes == 0


def test_registration_refuses_a_load_that_cannot_fit_beside_the_largest_arena():
    assert least_budget([LoadNeed(100, 900), LoadNeed(800, 10)]) == 800 + 900
    ledger = _ledger(1_500, {"wide": LoadNeed(100, 900)})
    with pytest.raises(UserInputError) as refused:
        ledger.register("heavy", LoadNeed(800, 10))  # fine alone, not beside wide's arena
    assert "bundle 'heavy' needs 1.7 KiB" in str(refused.value)
    assert "more than the whole budget (1.5 KiB)" in str(refused.value)
    assert ledger.least_budget == 100 + 900  # what was refused is not counted
    # Each session with activations of its own: only its own arena matters.
    apart = _ledger(
        1_500, {"wide": LoadNeed(100, 900), "heavy": LoadNeed(800, 10)}, shared_arena=False
    )
    assert apart.least_budget == 100 + 900


def test_room_is_made_by_the_policy_until_the_newcomer_fits():
    needs = {name: LoadNeed(400, 50) for name in "abc"}
    ledger = _ledger(2 * 400 + 50, needs)
    policy = LeastRecentlyUsed()
    holders = {name: Holder(name) for name in "abc"}
    evicted: list[str] = []
    for name in "ab":
        assert (
            ledger.make_room(
                name, WHOLE, SessionBytes(400), idle=[], policy=policy, evict=_none_expected
            )
            == []
        )
        policy.touch(holders[name])
    policy.touch(holders["a"])  # a used last: b is the least recently used
    closed = ledger.make_room(
        "c",
        WHOLE,
        SessionBytes(400),
        idle=[holders["a"], holders["b"]],
        policy=policy,
        evict=lambda victim: evicted.append(victim.name),
    )
    assert closed == [] and evicted == ["b"]
    assert ledger.holds("a") and ledger.holds("c") and not ledger.holds("b")
    assert ledger.held_bytes == 2 * 400 + 50  # the arena grew to a request's need
    assert holders["a"].freeable == 400  # what evicting each would free, set for the policy


def test_a_bundle_closes_its_own_idle_sessions_where_they_leave_no_room():
    ledger = _ledger(1_000, {"big": LoadNeed(900, 0)})
    ledger.count("big", "part-a", SessionBytes(300), opening=False)
    closed = ledger.make_room(
        "big", WHOLE, SessionBytes(900), idle=[], policy=LeastRecentlyUsed(), evict=_none_expected
    )
    assert closed == ["part-a"]
    assert ledger.keys("big") == {WHOLE} and ledger.held_bytes == 900
    # Serving a request, it may not: then no room is made and nothing changes.
    ledger.uncount("big", WHOLE)
    ledger.count("big", "part-a", SessionBytes(300), opening=False)
    assert (
        ledger.make_room(
            "big",
            WHOLE,
            SessionBytes(900),
            idle=[],
            policy=LeastRecentlyUsed(),
            evict=_none_expected,
            may_close_own=False,
        )
        is None
    )
    assert ledger.keys("big") == {"part-a"} and ledger.held_bytes == 300


def test_holders_that_are_not_idle_leave_no_room_and_nothing_is_evicted():
    ledger = _ledger(
        1_000, {"busy": LoadNeed(600, 0), "idle": LoadNeed(300, 0), "new": LoadNeed(500, 0)}
    )
    ledger.count("busy", WHOLE, SessionBytes(600), opening=False)
    ledger.count("idle", WHOLE, SessionBytes(300), opening=False)
    evicted: list[str] = []
    assert (
        ledger.make_room(
            "new",
            WHOLE,
            SessionBytes(500),
            idle=[Holder("idle")],
            policy=LeastRecentlyUsed(),
            evict=lambda victim: evicted.append(victim.name),
        )
        is None
    )
    assert evicted == [] and ledger.holds("idle") and ledger.held_bytes == 900


def test_an_eviction_frees_only_the_weights_no_other_holder_maps():
    ledger = _ledger(10_000, {"a": LoadNeed(1, 0), "b": LoadNeed(1, 0)})
    ledger.count("a", WHOLE, SessionBytes(10, (("shared", 100), ("own", 5))), opening=False)
    ledger.count("a", "part", SessionBytes(3, (("own", 5),)), opening=False)
    ledger.count("b", WHOLE, SessionBytes(20, (("shared", 100),)), opening=False)
    assert ledger.freed_by("a") == 10 + 3 + 5
    assert ledger.freed_by("b") == 20
    ledger.release("a")
    assert ledger.freed_by("b") == 20 + 100


def test_without_a_shared_arena_each_session_counts_its_own_activations():
    ledger = _ledger(10_000, {"a": LoadNeed(100, 40)}, shared_arena=False)
    ledger.count("a", WHOLE, SessionBytes(100), opening=False)
    ledger.count("a", "part", SessionBytes(10), opening=False)
    assert ledger.held_bytes == 100 + 10 + 2 * 40


def _make_room(ledger, holder, session, idle, evicted, dismissed, policy=None):
    return ledger.make_room(
        holder,
        WHOLE,
        session,
        idle=idle,
        policy=policy or LeastRecentlyUsed(),
        evict=lambda victim: evicted.append(victim.name),
        dismiss=lambda name, key: dismissed.append((name, key)),
    )


def test_an_evicted_session_that_maps_its_weights_stands_by_at_its_own_bytes():
    needs = {name: LoadNeed(1_000, 0) for name in ("mapped", "portable")}
    ledger = _ledger(10_000, needs)
    mapped = SessionBytes(100, (("w", 900),))
    ledger.count("mapped", WHOLE, mapped, opening=False)
    ledger.count("portable", WHOLE, SessionBytes(1_000), opening=False)
    ledger.release("mapped", stand_by=True)
    ledger.release("portable", stand_by=True)  # its weights are its own: it closes
    assert not ledger.holds("mapped") and ledger.standing_by("mapped") == {WHOLE}
    assert ledger.standing_by("portable") == set()
    assert ledger.held_bytes == 100 and not ledger.maps("w")
    with pytest.raises(ValueError):
        ledger.unregister("mapped")  # it still holds a session, standing by
    # Its next miss counts it in full again, not twice.
    assert _make_room(ledger, "mapped", mapped, [], [], []) == []
    assert ledger.holds("mapped") and ledger.standing_by("mapped") == set()
    assert ledger.held_bytes == 1_000 and ledger.maps("w")
    # An eviction that is not the ledger's choice (`release` alone), or a ledger that keeps
    # none standing by, closes it.
    ledger.release("mapped")
    assert ledger.standing_by("mapped") == set() and ledger.held_bytes == 0
    closing = _ledger(10_000, needs)
    closing.standby = False
    closing.count("mapped", WHOLE, mapped, opening=False)
    closing.release("mapped", stand_by=True)
    assert closing.standing_by("mapped") == set() and closing.held_bytes == 0


def test_making_room_dismisses_sessions_standing_by_before_it_evicts_a_holder():
    ledger = _ledger(1_150, {name: LoadNeed(500, 0) for name in "abcd"})
    holders = {name: Holder(name) for name in "abcd"}
    policy = LeastRecentlyUsed()
    evicted: list[str] = []
    dismissed: list[tuple[str, str]] = []

    def load(name: str, idle: list[str]) -> None:
        session = SessionBytes(100, ((name, 400),))
        idle_holders = [holders[other] for other in idle]
        assert _make_room(ledger, name, session, idle_holders, evicted, dismissed, policy) == []
        policy.touch(holders[name])

    load("a", [])
    load("b", [])
    ledger.release("a", stand_by=True)  # evicted: a stands by at its own 100
    assert ledger.held_bytes == 500 + 100
    load("c", ["b"])  # 1,100 with a standing by: it fits, and a stays
    ledger.release("c", stand_by=True)
    load("a", ["b"])  # its own session is counted in full again: b, a and c standing by fit
    assert evicted == [] and dismissed == [] and ledger.standing_by("c") == {WHOLE}
    assert ledger.held_bytes == 500 + 500 + 100
    # d needs 500 more: c's standing session goes first, then b, the least recently used,
    # which stands by in turn where it fits.
    load("d", ["a", "b"])
    assert dismissed == [("c", WHOLE)] and evicted == ["b"]
    assert ledger.standing_by("b") == {WHOLE} and ledger.held_bytes == 500 + 500 + 100
    # Where no room can be made, the newcomer's own session keeps standing by.
    full = _ledger(600, {"x": LoadNeed(500, 0), "y": LoadNeed(500, 0)})
    full.count("x", WHOLE, SessionBytes(100, (("x", 400),)), opening=False)
    full.release("x", stand_by=True)
    full.count("y", WHOLE, SessionBytes(500), opening=False)
    assert _make_room(full, "x", SessionBytes(100, (("x", 400),)), [], [], []) is None
    assert full.standing_by("x") == {WHOLE} and full.held_bytes == 600


def test_a_session_opened_ahead_stands_by_only_where_it_fits_beside_what_is_counted():
    ledger = _ledger(1_000, {name: LoadNeed(500, 0) for name in "abc"})
    ledger.count("a", WHOLE, SessionBytes(100, (("a", 400),)), opening=False)
    assert ledger.stand_by_ahead("b", WHOLE, 300)
    assert ledger.standing_by("b") == {WHOLE} and ledger.held_bytes == 800
    assert not ledger.stand_by_ahead("b", WHOLE, 300)  # already standing by
    assert not ledger.stand_by_ahead("a", WHOLE, 100)  # counted in full
    assert not ledger.stand_by_ahead("c", WHOLE, 201)  # 1,001: nothing is made room for it
    assert ledger.held_bytes == 800 and ledger.holds("a") and ledger.standing_by("c") == set()
    # A load that needs the room dismisses it, as any session standing by.
    dismissed: list[tuple[str, str]] = []
    session = SessionBytes(100, (("c", 400),))
    assert _make_room(ledger, "c", session, [Holder("a")], [], dismissed) == []
    assert dismissed == [("b", WHOLE)] and ledger.holds("a") and ledger.holds("c")
    closing = _ledger(1_000, {"a": LoadNeed(500, 0)})
    closing.standby = False
    assert not closing.stand_by_ahead("a", WHOLE, 100) and closing.held_bytes == 0
