"""Predicted replays: the loader's ledger and policies on predicted sessions, counting what the
real loader counts."""

from __future__ import annotations

from dataclasses import replace

import pytest

from fusedinf_cc.common.errors import UserInputError
from fusedinf_cc.measure.deployments import Deployment, deployments
from fusedinf_cc.measure.simulate import replay
from fusedinf_cc.plan.costs import CostModel, Measured, ReadCost, SessionCost, measure_bundle
from fusedinf_cc.plan.predict import predict
from fusedinf_cc.runtime.bundle import Bundle
from fusedinf_cc.runtime.ledger import least_budget
from fusedinf_cc.workload.layout import Layout
from fusedinf_cc.workload.requests import Request
from fusedinf_cc.workload.routing import Call, route
from tests.support.plans import session_cost


def _remeasured(deployment: Deployment, wider: str, extra_arena: int) -> Deployment:
    """`deployment` (of single models) with its footprints set: every bundle the size of the
    first, and `wider`'s requests need `extra_arena` more than the others'."""
    first = next(iter(deployment.bundles.values())).footprint
    bundles = {}
    for name, bundle in deployment.bundles.items():
        footprint = replace(
            bundle.footprint,
            measured_bytes=first.measured_bytes,
            loading_bytes=first.loading_bytes,
            activation_bytes=first.activation_bytes + (extra_arena if name == wider else 0),
        )
        bundles[name] = Bundle(bundle.name, bundle.artifact, bundle.manifest, footprint)
    return Deployment(deployment.name, bundles, deployment.calls)


def test_predicted_loads_scatter_as_measured_and_the_first_run_after_one_is_cold():
    alone = {
        name: Measured(frozenset({name}), session_cost(1 << 20, 0.01, 0.001)) for name in ("a", "b")
    }
    trace = [Request(0.1 * i, "ab"[i % 2]) for i in range(400)]  # one model fits: every call loads
    steady = CostModel(alone={n: m.whole for n, m in alone.items()})
    jittery = CostModel(alone={n: m.whole for n, m in alone.items()}, load_jitter=[1, 1, 1, 9])
    bundles = Layout({n: {n} for n in "ab"})
    calls = {n: [Call(n)] for n in "ab"}
    budget = (1 << 20) + 200
    calm, scattered = (predict(trace, bundles, calls, c, budget, "lru") for c in (steady, jittery))
    assert calm.misses == scattered.misses == 400
    assert calm.seconds_loading == pytest.approx(400 * 0.01)
    # A quarter of the loads take 9x: three times the loading seconds, and a 9x tail.
    assert scattered.seconds_loading / calm.seconds_loading == pytest.approx(3.0, rel=0.2)
    assert scattered.p99_ms == pytest.approx(9 * 0.01 * 1000 + 1, rel=0.05)
    assert scattered.p50_ms == pytest.approx(calm.p50_ms)
    # Runs scatter as the warm runs measured did: a quarter take 3x, none of the loads.
    uneven = CostModel(alone={n: m.whole for n, m in alone.items()}, run_jitter=[1, 1, 1, 3])
    spread = predict(trace, bundles, calls, uneven, budget, "lru")
    assert spread.seconds_loading == pytest.approx(calm.seconds_loading)
    assert spread.p99_ms == pytest.approx(calm.p99_ms + 2 * 1.0, rel=0.05)
    # The first request after a load runs cold: every call here pays it.
    cold = {n: replace(m.whole, cold_seconds=0.005) for n, m in alone.items()}
    slow = predict(trace, bundles, calls, CostModel(alone=cold), budget, "lru")
    assert slow.p50_ms == pytest.approx(calm.p50_ms + 5.0)


def test_a_predicted_replay_counts_what_the_real_loader_counts(small_models, tmp_path):
    functions = {"fa": ["m0", "m1"], "fb": ["m1", "m2", "m3"], "fc": ["m3"]}
    unfused, fused = deployments(small_models, functions, tmp_path / "work", aot=True)
    # Footprints as a machine may measure them: models of one size, m2's requests needing a
    # wider arena. A replay starts with the arena that wide (it opened every session for its
    # feeds): two models would fit beside the others' arena, one fits beside m2's.
    unfused = _remeasured(unfused, wider="m2", extra_arena=64 << 10)
    one = unfused.bundles["m0"].footprint
    measured = {
        name: measure_bundle(b, pooled=True, rounds=2, runs=2)
        for name, b in unfused.bundles.items()
    }
    groups = [measure_bundle(b, pooled=True, rounds=2, runs=2) for b in fused.bundles.values()]
    costs = CostModel.fitted(measured, groups)
    assert all(m.whole.load_seconds > 0 and m.whole.run_seconds > 0 for m in measured.values())
    assert sorted(groups[1].parts) == ["m1", "m2", "m3"]
    trace = [Request(0.01 * i, ("fa", "fb", "fc", "fb")[i % 4]) for i in range(40)]
    budgets = {
        unfused.name: one.measured_bytes + one.alone_bytes + (32 << 10),
        # The least budget every bundle registers under: room for the largest, so some swap.
        fused.name: least_budget(f.load_need for f in fused.footprints),
    }
    for deployment in (unfused, fused):
        budget = budgets[deployment.name]
        members = deployment.layout
        calls = route(functions, members)
        assert calls == deployment.calls
        # Policies that weigh bytes (belady weighs what an eviction frees, and fa's and fb's
        # bundles share m1's pooled weights), not measured seconds, decide alike.
        for policy in ("lru", "belady"):
            real = replay(trace, deployment, budget, policy)
            guess = predict(trace, members, calls, costs, budget, policy, deployment.name)
            # The same bytes under the same policy: the same loads and evictions, exactly.
            counted = (guess.hits, guess.misses, guess.evictions, guess.models_loaded)
            assert counted == (real.hits, real.misses, real.evictions, real.models_loaded)
            assert real.evictions > 0
            assert guess.peak_accounted_bytes == real.peak_accounted_bytes
            assert guess.seconds_loading > 0 and guess.p99_ms >= guess.p50_ms > 0
    with pytest.raises(UserInputError, match=r"'fb' needs .* more than the whole budget"):
        predict(
            [Request(0.0, "fb")],
            Layout({"fb": {"m1", "m2", "m3"}}),
            {"fb": []},
            costs,
            1000,
            "lru",
        )


def test_a_predicted_miss_reads_only_what_is_not_in_memory():
    """Two bundles pool one backbone: while one is resident, a miss of the other reads only its
    own weights, and pays the read's seconds only for them."""
    backbone = ("backbone", 8 << 20)
    per_byte = 1e-8

    def reading(own: str) -> Measured:
        weights = [backbone, (own, 1 << 20)]
        read = sum(size for _, size in weights)
        cost = session_cost(0, 0.001, 0.002, weights=weights, cold=per_byte * read, read=read)
        return Measured(frozenset({own}), cost)

    alone = {name: reading(name).whole for name in ("a", "b")}
    costs = CostModel(alone, reads=ReadCost(cold_seconds_per_byte=per_byte))
    bundles = Layout({n: {n} for n in "ab"})
    calls = {n: [Call(n)] for n in "ab"}
    trace = [Request(1.0 * i, "ab"[i % 2]) for i in range(2)]
    both = predict(trace, bundles, calls, costs, 64 << 20, "lru")  # room for both
    assert both.misses == 2
    assert both.bytes_read == (9 << 20) + (1 << 20)  # the backbone once
    first, second = (9 << 20) * per_byte, (1 << 20) * per_byte
    assert both.p99_ms == pytest.approx(1000 * (0.001 + 0.002 + first), rel=0.02)
    assert both.p50_ms == pytest.approx(1000 * (0.001 + 0.002 + (first + second) / 2), rel=0.02)
    one = predict(trace, bundles, calls, costs, (9 << 20) + 200, "lru")  # room for one
    assert one.bytes_read == 2 * (9 << 20)  # the backbone left with the first


def test_a_predicted_miss_of_a_session_standing_by_pays_only_its_read():
    """An evicted session that maps its weights stands by where its own bytes fit: its next
    miss opens nothing and pays only what a load reads, as the loader's does."""
    per_byte = 1e-9
    weights_bytes = 4 << 20
    load = 0.010 + per_byte * weights_bytes  # a session's opening, then its bulk read

    def mapping(name: str) -> SessionCost:
        weights = [(name, weights_bytes)]
        return session_cost(1 << 20, load, 0.001, weights=weights, read=weights_bytes)

    costs = CostModel(
        {name: mapping(name) for name in "ab"}, reads=ReadCost(load_seconds_per_byte=per_byte)
    )
    bundles = Layout({n: {n} for n in "ab"})
    calls = {n: [Call(n)] for n in "ab"}
    trace = [Request(1.0 * i, "ab"[i % 2]) for i in range(10)]  # one fits: every call misses
    whole = (1 << 20) + weights_bytes + 100
    standing = predict(trace, bundles, calls, costs, whole + (1 << 20), "lru")
    closing = predict(trace, bundles, calls, costs, whole, "lru")  # no room to stand by
    assert standing.misses == closing.misses == 10
    assert closing.seconds_loading == pytest.approx(10 * load)
    assert standing.seconds_loading == pytest.approx(2 * load + 8 * per_byte * weights_bytes)
    assert standing.peak_accounted_bytes == whole + (1 << 20)
