"""Budgets: one parser, and a share raised only until each model loads alone."""

from __future__ import annotations

import json

import pytest

from fusedinf_cc.common.errors import UserInputError
from fusedinf_cc.measure.deployments import deployments, total_footprint
from fusedinf_cc.measure.simulate import replay
from fusedinf_cc.runtime.budget import held_at_once, parse_budget
from fusedinf_cc.runtime.ledger import least_budget
from fusedinf_cc.workload.requests import Request
from fusedinf_cc.workload.traces import write_trace
from tests.support.commands import run_cli


def test_budget_parsing():
    assert parse_budget("512MiB").in_bytes() == 512 * 2**20
    assert parse_budget("50%").in_bytes(1000) == 500
    assert parse_budget("1.5GiB").in_bytes(0) == int(1.5 * 2**30)
    with pytest.raises(UserInputError):
        parse_budget("lots")
    for nonsense in ("-50%", "nan%", "inf%", "0%", "0", "-1MiB"):
        with pytest.raises(UserInputError, match="--budget"):
            parse_budget(nonsense)
    with pytest.raises(UserInputError, match="give a size here"):
        parse_budget("50%").in_bytes()  # a command with nothing to take a share of


def test_a_percentage_budget_is_raised_only_until_each_model_loads_alone(small_models, tmp_path):
    functions = {"fa": ["m0", "m1", "m2"], "fb": ["m2", "m3"]}
    unfused, fused = deployments(small_models, functions, tmp_path / "work")
    unfused_total = total_footprint(unfused)
    assert unfused_total == held_at_once(unfused.footprints)
    # The least budget each model alone loads under: the largest beside the largest arena.
    floor = least_budget(f.load_need for f in unfused.footprints)
    assert floor < least_budget(f.load_need for f in fused.footprints)  # three models, one bundle
    budget = parse_budget
    assert budget("200%").resolve(unfused.footprints) == (2 * unfused_total, None)
    raised, notice = budget("1%").resolve(unfused.footprints)
    assert raised == floor and notice is not None and "using" in notice
    with pytest.raises(UserInputError, match="below the largest model"):
        budget("1KiB").resolve(unfused.footprints)  # a size is taken as given, or refused
    # There unfused replays, and the deployment that needs more is refused, not given more.
    trace = [Request(0.02 * i, "fa" if i % 2 else "fb") for i in range(6)]
    assert replay(trace, unfused, floor, "lru").requests == 6
    with pytest.raises(UserInputError, match="'fa'"):
        replay(trace, fused, floor, "lru")
    # The command replays what fits and names what it left out, and why.
    trace_file, functions_file = tmp_path / "trace.csv", tmp_path / "functions.json"
    write_trace(trace, trace_file)
    functions_file.write_text(json.dumps(functions))
    report = tmp_path / "sim.json"
    models = [f"{name}={path}" for name, path in small_models.items()]
    result = run_cli(
        "simulate",
        *models,
        *("--trace", trace_file, "--functions", functions_file, "--budget", "1%"),
        *("--work-dir", tmp_path / "work", "--json", report, "--policy", "lru"),
    )
    assert result.returncode == 0, result.stderr
    assert "below the largest model" in result.stderr
    written = json.loads(report.read_text())
    assert [r["deployment"] for r in written["results"]] == ["unfused"]
    assert written["results"][0]["budget_bytes"] == floor
    assert "'fa'" in written["left_out"]["fused"]
    assert "fused: left out, bundle 'fa'" in " ".join(result.stdout.split())
    # Below what a model alone needs, an absolute budget is refused in one line.
    result = run_cli(
        "simulate",
        *models,
        *("--trace", trace_file, "--functions", functions_file, "--budget", "1KiB"),
        *("--work-dir", tmp_path / "work"),
    )
    assert result.returncode == 2 and "below the largest model" in result.stderr
