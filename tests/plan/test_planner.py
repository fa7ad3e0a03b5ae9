"""`plan` end to end: a spec that bundle build and simulate take, judged on held-out requests."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from fusedinf_cc.precompile.spec import read_spec
from fusedinf_cc.runtime.budget import parse_budget
from fusedinf_cc.workload.layout import Layout
from fusedinf_cc.workload.requests import Request
from tests.support.commands import run_cli


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
        "--replays", "1", "--search-seconds", "3", "--loading", "bulk",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "held-out" in result.stdout and f"wrote {spec}" in result.stdout
    assert "MiB read" in result.stdout and "loading bulk" in result.stdout
    assert "--loading bulk" in spec.read_text()  # the spec says how to serve it
    record = json.loads(report.read_text())
    assert record["loading"] == "bulk"
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
    assert unfused["replayed"][0]["loading"] == "bulk"
    # Each miss reads its model's files at least: the prediction counts what it reads.
    assert unfused["predicted"]["bytes_read"] >= unfused["predicted"]["misses"] * min(
        path.stat().st_size for path in small_models.values()
    )
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


def test_plan_loading_auto_serves_the_plan_with_the_policy_predicted_best(small_models, tmp_path):
    trace = _calls_trace(tmp_path / "calls.csv", ["m0+m1", "m2", "m3", "m1+m2"] * 10)
    models = [f"{name}={path}" for name, path in small_models.items()]
    spec, report = tmp_path / "fusedinf.toml", tmp_path / "plan.json"
    result = run_cli(
        "plan", *models, "--trace", trace, "--work-dir", tmp_path / "work", "--aot",
        "--budget", "50%", "-o", spec, "--json", report, "--replays", "1",
        "--search-seconds", "3", "--loading", "auto",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    record = json.loads(report.read_text())
    scores = record["loading_scores"]
    assert set(scores) == {"bulk", "linear", "interleaved"}
    chosen = min(scores, key=scores.__getitem__)
    assert record["loading"] == chosen  # calibrated, searched and scored under each
    assert f"--loading {chosen}" in spec.read_text()
    assert f"loading {chosen}, predicted best of each policy's best grouping" in result.stdout
    held_out = {e["deployment"]: e for e in record["held_out"]}
    assert held_out["plan"]["replayed"][0]["loading"] == chosen  # judged as it will be served


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
        (["m0+m1"] * 4, ["--loading", "eager"], "unknown loading policy 'eager'"),
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
