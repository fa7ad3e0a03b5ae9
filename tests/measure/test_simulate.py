"""simulate: replays on the real loader, and the command."""

from __future__ import annotations

import json

import pytest

from fusedinf_cc.common.errors import UserInputError
from fusedinf_cc.measure.deployments import deployments
from fusedinf_cc.measure.simulate import replay
from fusedinf_cc.runtime.footprint import arena_bytes
from fusedinf_cc.runtime.ledger import least_budget
from fusedinf_cc.workload.requests import Request
from fusedinf_cc.workload.traces import write_trace
from tests.support.commands import run_cli


def test_replay_counts_one_call_per_bundle_a_function_runs(small_models, tmp_path):
    functions = {"fa": ["m0", "m1"], "fb": ["m1", "m2", "m3"]}
    unfused, fused = deployments(small_models, functions, tmp_path / "work")
    # Unfused models are built as bundles of one, as fused ones are: the deployments differ
    # only in grouping, never in how a model's file was written.
    for model, bundle in unfused.bundles.items():
        assert bundle.artifact != small_models[model]
        assert bundle.manifest is not None and list(bundle.models()) == [model]
    trace = [Request(0.01 * i, "fa" if i % 3 else "fb") for i in range(30)]
    # The least budget each deployment's bundles can all be registered under (the loader's own
    # floor: the largest bundle beside the largest request's arena, which may be another's).
    budget = max(least_budget(f.load_need for f in d.footprints) for d in (unfused, fused))
    calls = sum(len(functions[r.function]) for r in trace)
    for deployment, expected_calls in ((unfused, calls), (fused, len(trace))):
        result = replay(trace, deployment, budget, "lru")
        assert result.hits + result.misses == expected_calls
        # Every fused load brings a function's models; an unfused one brings one model.
        per_load = 1 if deployment is unfused else 2
        assert per_load * result.misses <= result.models_loaded <= 3 * result.misses
        assert result.peak_accounted_bytes <= budget
        assert result.p99_ms >= result.p50_ms > 0


def test_clairvoyant_replay_misses_less_than_lru_where_lru_thrashes(small_models, tmp_path):
    # Three bundles used in a cycle with room for two: LRU always evicts the next one needed.
    # Ahead of time: these tiny models' portable load transients are as large as they are.
    functions = {"fa": ["m0"], "fb": ["m1"], "fc": ["m2"]}
    unfused = deployments(small_models, functions, tmp_path / "work", aot=True)[0]
    trace = [Request(0.01 * i, ("fa", "fb", "fc")[i % 3]) for i in range(30)]
    # As the loader counts it, the third bundle opens beside the other two and the arena,
    # with its own load's transient: one byte short of the least of those, all three never
    # fit, while two always do.
    footprints = unfused.footprints
    together = sum(f.measured_bytes for f in footprints) + arena_bytes(footprints)
    budget = together + min(f.loading_bytes for f in footprints) - 1
    lru = replay(trace, unfused, budget, "lru")
    belady = replay(trace, unfused, budget, "belady")
    assert lru.misses == len(trace)
    assert belady.misses <= len(trace) // 2 + 2
    assert belady.peak_accounted_bytes <= budget
    with pytest.raises(UserInputError, match="choose from lru, gdsf, belady"):
        replay(trace, unfused, budget, "fifo")


def test_simulate_command_with_a_trace_and_functions(small_models, tmp_path):
    functions = tmp_path / "functions.json"
    functions.write_text(json.dumps({"fa": ["m0", "m1"], "fb": ["m2", "m3"]}))
    trace = tmp_path / "trace.csv"
    write_trace([Request(0.02 * i, "fa" if i % 2 else "fb") for i in range(20)], trace)
    report = tmp_path / "sim.json"
    models = [f"{name}={path}" for name, path in small_models.items()]
    result = run_cli(
        "simulate",
        *models,
        "--trace",
        trace,
        "--functions",
        functions,
        "--budget",
        "150%",  # every deployment fits: none is left out
        "--work-dir",
        tmp_path / "work",
        "--json",
        report,
        "--fused-groups",
        "auto",
        "--policy",
        "lru,belady",
    )
    assert result.returncode == 0, result.stderr
    written = json.loads(report.read_text())
    rows = written["results"]
    assert {(r["deployment"], r["policy"]) for r in rows} == {
        (deployment, policy)
        for deployment in ("unfused", "fused", "grouped")
        for policy in ("lru", "belady")
    }
    seconds = {(r["deployment"], r["policy"]): r["seconds_loading"] for r in rows}
    ratios = written["loading_seconds_over_unfused"]
    lru_ratio = seconds["fused", "lru"] / seconds["unfused", "lru"]
    assert ratios["lru"]["fused"] == pytest.approx(lru_ratio)
    assert set(ratios["belady"]) == {"fused", "grouped"}
    assert "loading seconds over unfused, lru: fused" in result.stdout
    write_trace([Request(0.0, "nobody")], trace)
    result = run_cli("simulate", *models, "--trace", trace, "--functions", functions)
    assert result.returncode == 2 and "unknown functions: ['nobody']" in result.stderr
    result = run_cli("simulate", *models)
    assert result.returncode == 2 and "--trace TRACE.csv or --synthetic" in result.stderr
    result = run_cli("simulate", *models, "--synthetic", "--policy", "lru,mru")
    assert result.returncode == 2 and "--policy: unknown mru" in result.stderr


def test_simulate_replays_a_bundle_spec_whose_bundles_share_a_model(small_models, tmp_path):
    trace = tmp_path / "calls.csv"
    rows = ["m0+m1", "m1+m2", "m3"] * 5
    trace.write_text(
        "timestamp,models\n" + "".join(f"{0.02 * i},{row}\n" for i, row in enumerate(rows)),
        encoding="utf-8",
    )
    spec = tmp_path / "fusedinf.toml"
    spec.write_text(
        "[bundles.ga]\n"
        f'models = {{ m0 = "{small_models["m0"]}", m1 = "{small_models["m1"]}" }}\n'
        "[bundles.gb]\n"
        f'models = {{ m1 = "{small_models["m1"]}", m2 = "{small_models["m2"]}" }}\n',
        encoding="utf-8",
    )
    models = [f"{name}={path}" for name, path in small_models.items()]
    report = tmp_path / "sim.json"
    common = ["--trace", trace, "--budget", "100%", "--work-dir", tmp_path / "work", "--aot"]
    result = run_cli("simulate", *models, *common, "--fused-groups", spec, "--json", report)
    assert result.returncode == 0, result.stderr
    grouped = [r for r in json.loads(report.read_text())["results"] if r["deployment"] == "grouped"]
    # ga, gb and m3 alone, each loaded once and then resident: every other call is a hit.
    assert [(r["misses"], r["hits"]) for r in grouped] == [(3, len(rows) - 3)] * 2
    few = [f"m{i}={small_models[f'm{i}']}" for i in (0, 1, 3)]
    result = run_cli("simulate", *few, *common, "--fused-groups", spec)
    assert result.returncode == 2 and "models not given: m2" in result.stderr.strip()
    functions = tmp_path / "functions.json"
    functions.write_text(json.dumps({"fa": ["m0"]}))
    result = run_cli("simulate", *models, *common, "--functions", functions)
    assert result.returncode == 2 and "give no --functions" in result.stderr


def test_without_a_work_dir_nothing_is_left_where_the_user_stands(small_models, tmp_path):
    here = tmp_path / "here"
    here.mkdir()
    models = [f"{name}={path}" for name, path in small_models.items()]
    result = run_cli("simulate", *models, "--synthetic", "--requests", "8", "--policy", "lru",
                     cwd=here)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "unfused" in result.stdout
    assert list(here.iterdir()) == []
