"""The cost model: fitted on real bundles, predicting any group from its members."""

from __future__ import annotations

import pytest

from fusedinf_cc.measure.deployments import deployments
from fusedinf_cc.plan.costs import CostModel, Measured, measure_bundle, measure_bundles
from fusedinf_cc.runtime.bundle import WHOLE
from tests.support.plans import session_cost


def test_fitting_recovers_what_fusing_saves_per_extra_model():
    alone = {
        name: Measured(
            frozenset({name}), session_cost(1000 * (i + 1), 0.01 * (i + 1), 0.002 * (i + 1))
        )
        for i, name in enumerate("abcd")
    }

    def fused(names):
        costs = [alone[n].whole for n in names]
        extra = len(names) - 1
        return Measured(
            frozenset(names),
            session_cost(
                sum(c.private_bytes for c in costs) - 300 * extra,
                sum(c.load_seconds for c in costs) - 0.004 * extra,
                sum(c.run_seconds for c in costs) - 0.001 * extra,
                activation=100 + 50 * extra,
            ),
            {
                n: session_cost(alone[n].whole.private_bytes * 2, alone[n].whole.load_seconds, 0)
                for n in names
            },
        )

    model = CostModel.fitted(alone, [fused("ab"), fused("bcd")])
    assert model.savings.private_bytes == pytest.approx(300)
    assert model.savings.load_seconds == pytest.approx(0.004)
    assert model.savings.run_seconds == pytest.approx(0.001)
    assert model.savings.activation == pytest.approx(0.5)
    assert model.part_scale.private_bytes == pytest.approx(2.0)
    assert model.part_scale.run_seconds == 0.0
    # A measured group is its measurement; another is predicted from its members.
    assert model.whole(frozenset("ab")) == fused("ab").whole
    predicted = model.whole(frozenset("acd"))
    assert predicted.private_bytes == 1000 + 3000 + 4000 - 600
    assert predicted.load_seconds == pytest.approx(0.08 - 0.008)
    assert model.part(frozenset("acd"), "c").private_bytes == 6000


def test_pooled_weights_of_a_group_count_once():
    shared = ("digest-backbone", 5000)
    alone = {
        "h0": Measured(
            frozenset({"h0"}), session_cost(100, 0.01, 0.01, weights=[shared, ("w0", 10)])
        ),
        "h1": Measured(
            frozenset({"h1"}), session_cost(100, 0.01, 0.01, weights=[shared, ("w1", 10)])
        ),
    }
    whole = CostModel.fitted(alone, []).whole(frozenset({"h0", "h1"}))
    assert whole.bytes == 200 + 5000 + 20


def test_a_built_bundle_is_predicted_holding_what_it_was_measured_to_hold(small_models, tmp_path):
    functions = {"fa": ["m0", "m1"], "fb": ["m1", "m2"]}
    for aot in (False, True):
        unfused, fused = deployments(small_models, functions, tmp_path / f"w{aot}", aot=aot)
        alone = {
            n: measure_bundle(b, pooled=aot, rounds=1, runs=2) for n, b in unfused.bundles.items()
        }
        costs = CostModel.fitted(alone, [])
        members = frozenset({"m0", "m1"})
        fitted = costs.whole(members)
        assert not costs.is_measured(members)
        costs.hold_as_built(fused.bundles.values(), pooled=aot)
        held = costs.whole(members)
        bundle = fused.bundles["fa"]
        assert held.bytes == bundle.session_bytes(WHOLE, aot).bytes
        assert held.loading_bytes == bundle.footprint.loading_bytes
        assert held.activation_bytes == bundle.footprint.activation_bytes
        # Its times are still the fitted ones: it was built, not timed.
        assert (held.load_seconds, held.run_seconds) == (fitted.load_seconds, fitted.run_seconds)
        assert costs.is_measured(members)


def test_calibration_measures_the_bundles_in_turn(small_models, tmp_path):
    """Every reload follows the other bundles' runs, as a miss under a budget does."""
    unfused, fused = deployments(small_models, {"fa": ["m0", "m1"]}, tmp_path / "work", aot=True)
    bundles = [unfused.bundles["m0"], fused.bundles["fa"], unfused.bundles["m1"]]
    turns: list[str] = []
    measured = measure_bundles(bundles, pooled=True, rounds=2, runs=2, done=turns.append)
    assert turns == ["m0", "fa", "m1", "m0", "fa", "m1"]
    assert [m.models for m in measured] == [{"m0"}, {"m0", "m1"}, {"m1"}]
    assert sorted(measured[1].parts) == ["m0", "m1"] and measured[0].parts == {}
    assert len(measured[1].load_ratios) == 2 * 3  # the whole and its two parts, each round
    for cost in [m.whole for m in measured] + list(measured[1].parts.values()):
        assert cost.load_seconds > 0 and cost.run_seconds > 0 and cost.cold_seconds >= 0
    # What the loader counts for the part, as the bundle itself says.
    assert (
        measured[1].parts["m0"].private_bytes == bundles[1].session_bytes("m0", True).private_bytes
    )


def _reading(name: str, weights: list[tuple[str, int]], graph: int = 1000) -> Measured:
    """A model alone whose load takes 2 ms plus 10 ns a byte and whose first run waits 1 ms
    plus 20 ns a byte: what a slow storage's reads look like."""
    read = graph + sum(size for _, size in weights)
    cost = session_cost(
        100, 0.002 + 1e-8 * read, 0.005, weights=weights, cold=0.001 + 2e-8 * read, read=read
    )
    return Measured(frozenset({name}), cost)


def test_reads_are_fitted_per_byte_and_a_group_reads_each_weight_once():
    backbone = ("digest-backbone", 4_000_000)
    alone = {
        "h0": _reading("h0", [backbone, ("w0", 1_000_000)]),
        "h1": _reading("h1", [backbone, ("w1", 3_000_000)]),
        "c": _reading("c", [("wc", 500_000)]),
    }
    model = CostModel.fitted(alone, [])
    assert model.reads.load_seconds_per_byte == pytest.approx(1e-8)
    assert model.reads.cold_seconds_per_byte == pytest.approx(2e-8)
    assert model.reads.bytes_per_second == pytest.approx(1 / 3e-8)
    group = model.whole(frozenset({"h0", "h1"}))
    read = 2 * 1000 + 4_000_000 + 1_000_000 + 3_000_000  # the backbone once
    assert group.read_bytes == read
    # Fixed costs add up (nothing fitted as saved without groups); the read is the group's.
    assert group.load_seconds == pytest.approx(2 * 0.002 + 1e-8 * read)
    assert group.cold_seconds == pytest.approx(2 * 0.001 + 2e-8 * read)
    # Opened beside a bundle that maps the backbone already, it is not read again.
    load, cold = model.open_seconds(group, in_memory_bytes=4_000_000)
    assert load == pytest.approx(group.load_seconds - 0.04)
    assert cold == pytest.approx(group.cold_seconds - 0.08)


def test_reads_that_cost_nothing_fit_no_slope():
    """From the page cache, a load's seconds do not grow with its bytes: no read cost."""
    alone = {
        name: Measured(frozenset({name}), session_cost(100, 0.003, 0.001, read=size))
        for name, size in (("a", 10_000), ("b", 9_000_000))
    }
    model = CostModel.fitted(alone, [])
    assert model.reads.load_seconds_per_byte == model.reads.cold_seconds_per_byte == 0.0
    assert model.whole(frozenset("ab")).load_seconds == pytest.approx(0.006)
