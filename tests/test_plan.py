"""plan: the cost model fitted on real bundles, and replays on predicted sessions."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from fusedinf_cc.common.errors import UserInputError
from fusedinf_cc.measure.deployments import Deployment, deployments
from fusedinf_cc.measure.simulate import replay
from fusedinf_cc.plan.costs import CostModel, Measured, SessionCost, measure_bundle, measure_bundles
from fusedinf_cc.plan.predict import predict
from fusedinf_cc.plan.search import search
from fusedinf_cc.precompile.spec import read_spec
from fusedinf_cc.runtime.budget import parse_budget
from fusedinf_cc.runtime.bundle import WHOLE, Bundle
from fusedinf_cc.runtime.ledger import least_budget
from fusedinf_cc.workload.layout import Layout
from fusedinf_cc.workload.requests import Request
from fusedinf_cc.workload.routing import Call, route
from tests.conftest import run_cli


def _cost(private, load, run, activation=100, weights=()):
    return SessionCost(
        private,
        tuple(weights),
        activation_bytes=activation,
        load_seconds=load,
        run_seconds=run,
    )


def test_fitting_recovers_what_fusing_saves_per_extra_model():
    alone = {
        name: Measured(frozenset({name}), _cost(1000 * (i + 1), 0.01 * (i + 1), 0.002 * (i + 1)))
        for i, name in enumerate("abcd")
    }

    def fused(names):
        costs = [alone[n].whole for n in names]
        extra = len(names) - 1
        return Measured(
            frozenset(names),
            _cost(
                sum(c.private_bytes for c in costs) - 300 * extra,
                sum(c.load_seconds for c in costs) - 0.004 * extra,
                sum(c.run_seconds for c in costs) - 0.001 * extra,
                activation=100 + 50 * extra,
            ),
            {
                n: _cost(alone[n].whole.private_bytes * 2, alone[n].whole.load_seconds, 0)
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


def test_a_grouping_whose_bundle_may_not_load_once_built_is_not_chosen():
    alone = {n: Measured(frozenset({n}), _cost(1000, 0.01, 0.01, activation=100)) for n in "abcd"}
    # Two measured pairs: one holds exactly its members' bytes and the larger arena, one 10%
    # more bytes and both arenas (the least squares saving of bytes between them is negative,
    # so none is fitted; the arena's share of the smaller member is fitted at one half).
    loading = replace(_cost(2200, 0.02, 0.02, activation=200), loading_bytes=300)
    groups = [
        Measured(frozenset("ab"), _cost(2000, 0.02, 0.02, activation=100)),
        Measured(frozenset("cd"), loading),
    ]
    model = CostModel.fitted(alone, groups)
    assert model.savings.private_bytes == 0.0 and model.savings.activation == 0.5
    assert model.bytes_margin == pytest.approx(1.1)
    assert model.activation_margin == pytest.approx(200 / 150)
    assert model.is_measured(frozenset("cd")) and not model.is_measured(frozenset("bc"))
    # The measured group needs what it measured, its load's transient too; the predicted one
    # as much more than predicted as a measured group did at worst.
    assert model.built_need(frozenset("cd")) == (2200 + 300, 200)
    assert model.built_need(frozenset("bc")) == (2200, 200)
    assert CostModel.fitted(alone, groups[:1]).bytes_margin == 1.0
    # The search judges a grouping only where its largest load fits beside its largest arena,
    # as the loader registers bundles.
    functions = {"bc": ["b", "c"]}
    trace = [Request(0.05 * i, "bc") for i in range(20)]
    found = search(trace, functions, model, 2200 + 199, "lru", pooled=True, seconds=5)
    assert found.best.layout.groups == frozenset({frozenset("b"), frozenset("c")})
    assert found.fused == found.unfused  # one bundle per function, the pair, did not fit
    roomier = search(trace, functions, model, 2200 + 200, "lru", pooled=True, seconds=5)
    assert roomier.fused.layout.groups == frozenset({frozenset("bc")})


def test_pooled_weights_of_a_group_count_once():
    shared = ("digest-backbone", 5000)
    alone = {
        "h0": Measured(frozenset({"h0"}), _cost(100, 0.01, 0.01, weights=[shared, ("w0", 10)])),
        "h1": Measured(frozenset({"h1"}), _cost(100, 0.01, 0.01, weights=[shared, ("w1", 10)])),
    }
    whole = CostModel.fitted(alone, []).whole(frozenset({"h0", "h1"}))
    assert whole.bytes == 200 + 5000 + 20


def test_predicted_loads_scatter_as_measured_and_the_first_run_after_one_is_cold():
    alone = {name: Measured(frozenset({name}), _cost(1 << 20, 0.01, 0.001)) for name in ("a", "b")}
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
    # The first request after a load runs cold: every call here pays it.
    cold = {n: replace(m.whole, cold_seconds=0.005) for n, m in alone.items()}
    slow = predict(trace, bundles, calls, CostModel(alone=cold), budget, "lru")
    assert slow.p50_ms == pytest.approx(calm.p50_ms + 5.0)


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


def _co_called_workload():
    """Fusing saves most of a session's fixed cost: a group called together loads and runs
    cheaper fused, while a model fused with one it is never called with only costs memory."""
    alone = {
        name: Measured(
            frozenset({name}),
            _cost(4 << 20, 0.02, 0.01, activation=1 << 20, weights=[(name, 8 << 20)]),
        )
        for name in ("a", "b", "c", "d")
    }
    pair = Measured(
        frozenset("ab"), _cost(5 << 20, 0.025, 0.012, 1 << 20, [("a", 8 << 20), ("b", 8 << 20)])
    )
    costs = CostModel.fitted(alone, [pair])
    functions = {"both": ["a", "b"], "c": ["c"], "d": ["d"], "cd": ["c", "d"]}
    names = ["both", "c", "both", "d", "both", "c", "both", "d"] * 25 + ["cd"]
    trace = [Request(0.05 * i, name) for i, name in enumerate(names)]
    budget = 2 * (12 << 20) + (1 << 20) + (13 << 20)  # a, b or the pair, beside one of c, d
    return trace, functions, costs, budget


def test_search_fuses_models_called_together_and_keeps_others_apart(monkeypatch):
    import fusedinf_cc.plan.search as searching

    monkeypatch.setattr(searching, "REQUIRED_GAIN", 0.0)  # any gain: the search alone
    trace, functions, costs, budget = _co_called_workload()
    found = search(trace, functions, costs, budget, "lru", pooled=True, seconds=20)
    assert frozenset("ab") in found.best.layout.groups
    assert not any({"c", "d"} <= bundle for bundle in found.best.layout.groups)
    assert found.best.score < min(found.unfused.score, found.fused.score)
    assert found.evaluated >= 3
    assert found.best.layout["g00"] == frozenset("ab")


def test_search_keeps_the_better_baseline_where_a_grouping_is_predicted_only_a_little_better(
    monkeypatch,
):
    import fusedinf_cc.plan.search as searching

    trace, functions, costs, budget = _co_called_workload()
    monkeypatch.setattr(searching, "REQUIRED_GAIN", 0.0)
    eager = search(trace, functions, costs, budget, "lru", pooled=True, seconds=20)
    better = min(eager.unfused, eager.fused, key=lambda judged: judged.score)
    # One bundle per function already fuses the pair; the grouping beyond it gains little.
    assert better.score * 0.95 < eager.best.score < better.score
    monkeypatch.undo()
    found = search(trace, functions, costs, budget, "lru", pooled=True, seconds=20)
    assert found.best.layout == better.layout
    assert found.best.score == better.score


def _calls_trace(path, rows, every=0.02):
    path.write_text(
        "timestamp,models\n" + "".join(f"{every * i:.3f},{row}\n" for i, row in enumerate(rows)),
        encoding="utf-8",
    )
    return path


def test_plan_writes_a_spec_that_bundle_build_and_simulate_take(small_models, tmp_path):
    trace = _calls_trace(tmp_path / "calls.csv", ["m0+m1", "m2", "m0+m1", "m3", "m1+m2"] * 12)
    models = [f"{name}={path}" for name, path in small_models.items()]
    spec, report = tmp_path / "fusedinf.toml", tmp_path / "plan.json"
    common = ["--trace", trace, "--work-dir", tmp_path / "work", "--aot", "--policy", "lru"]
    result = run_cli(
        "plan", *models, *common, "--budget", "100%", "-o", spec, "--json", report,
        "--replays", "1", "--search-seconds", "3",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "held-out" in result.stdout and f"wrote {spec}" in result.stdout
    record = json.loads(report.read_text())
    deployed = read_spec(spec).groups()
    assert deployed == record["bundles"]
    assert {m for members in deployed.values() for m in members} == set(small_models)
    assert not set(deployed) & set(small_models)  # a spec's bundle never has a model's name
    assert (record["planning_requests"], record["held_out_requests"]) == (30, 30)
    held_out = {e["deployment"]: e for e in record["held_out"]}
    unevicted_rows = {"unfused, nothing evicted", "fused, nothing evicted"}
    assert set(held_out) == {"unfused", "fused", "plan", *unevicted_rows}
    for evaluation in held_out.values():
        (replayed,) = evaluation["replayed"]
        assert replayed["requests"] == evaluation["predicted"]["requests"] == 30
    # Every model alone was measured for real: under LRU the prediction counts its loads.
    unfused = held_out["unfused"]
    assert unfused["predicted"]["misses"] == unfused["replayed"][0]["misses"] > 0
    # With no budget, each bundle loads once and stays: the references for the tail.
    unevicted = held_out["unfused, nothing evicted"]["replayed"][0]
    assert unevicted["misses"] == len(small_models) and unevicted["evictions"] == 0
    fused_unevicted = held_out["fused, nothing evicted"]["replayed"][0]
    functions = {"m0+m1", "m2", "m3", "m1+m2"}  # the held-out half calls each
    assert fused_unevicted["misses"] == len(functions) and fused_unevicted["evictions"] == 0
    ratios = record["over_better_baseline"]
    assert set(ratios) == {"loading_seconds", "p99_ms", "p99_nothing_evicted"}
    lowest = min(held_out[row]["replayed"][0]["p99_ms"] for row in unevicted_rows)
    better = min(held_out[row]["replayed"][0]["p99_ms"] for row in ("unfused", "fused"))
    assert ratios["p99_nothing_evicted"] == pytest.approx(lowest / better)
    assert "with nothing evicted, p99 is" in result.stdout
    kept = record["kept_baseline"]
    assert kept in (None, "unfused", "fused")
    if kept is not None:  # the plan is that baseline's grouping, and the command says so
        assert sorted(sorted(b) for b in deployed.values()) == record["search"][kept]["bundles"]
    assert (f"the plan is {kept}: " in result.stdout) == (kept is not None)
    # The spec is what `bundle build` builds and `simulate` replays, unchanged.
    built = run_cli("bundle", "build", spec, "--out", tmp_path / "dist")
    assert built.returncode == 0, built.stderr
    assert sorted(p.name for p in (tmp_path / "dist").iterdir() if p.is_dir()) == sorted(deployed)
    replayed = run_cli("simulate", *models, *common, "--budget", "100%", "--fused-groups", spec)
    assert replayed.returncode == 0, replayed.stderr
    assert "grouped" in replayed.stdout


def test_a_plan_that_does_not_load_once_built_is_not_written(small_models, tmp_path, monkeypatch):
    import fusedinf_cc.plan.planner as planner

    searched = planner.search

    def everything_in_one_bundle(*args, **kwargs):
        # A grouping the cost model got wrong: all four models in one bundle, which needs more
        # than a budget raised only until each model loads alone.
        found = searched(*args, **kwargs)
        together = Layout({"g00": small_models})
        return replace(found, best=replace(found.best, layout=together))

    monkeypatch.setattr(planner, "search", everything_in_one_bundle)
    functions = {"fa": ["m0", "m1"], "fb": ["m2", "m3"]}
    trace = [Request(0.02 * i, "fa" if i % 2 else "fb") for i in range(16)]
    settings = planner.PlanSettings(
        budget=parse_budget("1%"),
        policy="lru",
        replays=1,
        search_seconds=2,
        work_dir=tmp_path / "work",
    )
    chosen = planner.plan(small_models, functions, trace, settings)
    assert chosen.kept_baseline == "unfused"
    assert "does not load once built" in chosen.kept_because
    assert sorted(chosen.bundles.lists().values()) == [[m] for m in sorted(small_models)]
    judged = {e.deployment: e for e in chosen.evaluations}
    assert judged["plan"].left_out is None and len(judged["plan"].replayed) == 1


@pytest.mark.parametrize(
    ("rows", "extra", "message"),
    [
        (["m0+m9"] * 4, [], "models not given: m9"),
        (["m0+m1"] * 4, ["--budget", "1KiB"], "below the largest model"),
        (["m0+m1"] * 4, ["--holdout", "1"], "--holdout 1: a share of the trace"),
        ([], [], "no requests"),
    ],
)
def test_plan_refuses_bad_input_in_one_line_and_writes_nothing(
    small_models, tmp_path, rows, extra, message
):
    trace = _calls_trace(tmp_path / "calls.csv", rows)
    models = [f"{name}={path}" for name, path in small_models.items()]
    spec = tmp_path / "fusedinf.toml"
    args = ["--trace", trace, "--budget", "100%", "-o", spec, "--work-dir", tmp_path / "work"]
    result = run_cli("plan", *models, *args, "--replays", "0", *extra)
    assert result.returncode == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not spec.exists()
