"""simulate: synthetic workloads, replaying them on the real loader, and the command."""

from __future__ import annotations

import itertools
import json
import math
from collections import Counter
from types import SimpleNamespace

import pytest

from fusedinf_cc.common.errors import UserInputError
from fusedinf_cc.common.files import sha256_file
from fusedinf_cc.measure.deployments import deployments, total_footprint
from fusedinf_cc.measure.simulate import replay
from fusedinf_cc.runtime.budget import held_at_once, parse_budget
from fusedinf_cc.runtime.footprint import arena_bytes
from fusedinf_cc.runtime.ledger import least_budget
from fusedinf_cc.runtime.policies import Clairvoyant
from fusedinf_cc.workload.layout import Layout, auto_groups
from fusedinf_cc.workload.replay import FutureUses
from fusedinf_cc.workload.requests import Request, TraceSpec, synthetic_functions, synthetic_trace
from fusedinf_cc.workload.routing import Call, route
from fusedinf_cc.workload.traces import read_name_lists, read_trace, trace_functions, write_trace
from tests import builders
from tests.conftest import run_cli


def test_synthetic_workload_is_zipf_over_functions_with_poisson_arrivals():
    spec = TraceSpec(functions=20, requests=4000, zipf_s=1.1, rate_per_s=50.0, seed=3)
    functions = synthetic_functions([f"m{i}" for i in range(8)], spec)
    assert len(functions) == 20
    assert all(
        2 <= len(models) <= 4 and len(set(models)) == len(models) for models in functions.values()
    )
    trace = synthetic_trace(sorted(functions), spec)
    counts = Counter(request.function for request in trace)
    assert counts["fn00"] > counts["fn01"] > counts["fn09"]  # rank 1 is the most popular
    assert counts["fn00"] / len(trace) == pytest.approx(
        1 / sum(r**-1.1 for r in range(1, 21)), rel=0.1
    )
    gaps = [b.arrival_s - a.arrival_s for a, b in itertools.pairwise(trace)]
    assert min(gaps) >= 0
    assert sum(gaps) / len(gaps) == pytest.approx(1 / 50.0, rel=0.1)
    assert synthetic_trace(sorted(functions), spec) == trace  # seeded


def test_trace_csv_round_trips_and_bad_ones_are_refused(tmp_path):
    trace = [Request(0.5, "fn01"), Request(0.1, "fn00")]
    path = tmp_path / "trace.csv"
    write_trace(trace, path)
    assert [r.function for r in read_trace(path)] == ["fn00", "fn01"]  # sorted by arrival
    path.write_text("when,what\n1,fn00\n")
    with pytest.raises(UserInputError, match="timestamp,function"):
        read_trace(path)
    for empty in ("", "timestamp,function\n"):
        path.write_text(empty)
        with pytest.raises(UserInputError, match="no requests"):
            read_trace(path)


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ('{"fn": ["a", "b"]}', None),
        ('["a", "b"]', "expected a JSON object"),
        ('{"fn": "ab"}', "'fn' is \"ab\""),  # not the models a and b
        ('{"fn": []}', "'fn' is []"),
        ('{"fn": [1, 2]}', "'fn' is [1, 2]"),
        ("{fn: a}", "Expecting property name"),
    ],
)
def test_function_and_group_files_are_objects_of_lists_of_names(tmp_path, text, complaint):
    path = tmp_path / "functions.json"
    path.write_text(text)
    if complaint is None:
        assert read_name_lists(path, "--functions", "fn") == {"fn": ["a", "b"]}
        return
    with pytest.raises(UserInputError) as raised:
        read_name_lists(path, "--functions", "fn")
    message = str(raised.value)
    assert message.startswith(f"--functions {path}: expected a JSON object")
    assert complaint in message


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


def test_aot_deployments_build_every_bundle_for_this_cpu(small_models, tmp_path):
    functions = {"fa": ["m0", "m1"], "fb": ["m1", "m2"]}
    unfused, fused = deployments(small_models, functions, tmp_path / "work", aot=True)
    for deployment in (unfused, fused):
        for bundle in deployment.bundles.values():
            assert bundle.artifact.name.endswith(".aot.onnx")
            assert bundle.manifest is not None and bundle.manifest.device["kind"] == "cpu"
    assert sorted(unfused.bundles) == ["m0", "m1", "m2"]
    trace = [Request(0.01 * i, "fa" if i % 2 else "fb") for i in range(6)]
    result = replay(trace, unfused, total_footprint(unfused), "lru")
    assert result.misses == 3 and result.hits == 2 * len(trace) - 3


def test_stacked_deployments_build_the_fused_bundles_with_stack(tmp_path):
    models = {
        f"m{seed}": builders.save(builders.small_cnn(seed), tmp_path / f"m{seed}.onnx")
        for seed in range(3)
    }
    functions = {"fa": ["m0", "m1"], "fb": ["m1", "m2"]}
    _, fused = deployments(models, functions, tmp_path / "work", aot=True, stack=True)
    for function, bundle in fused.bundles.items():
        assert bundle.artifact.name == f"{function}.stack.aot.onnx"
        (record,) = [p for p in bundle.manifest.passes if p.name == "stack"]
        assert record.detail == f"{'+'.join(functions[function])}: 13 layers"
    trace = [Request(0.01 * i, "fa" if i % 2 else "fb") for i in range(6)]
    result = replay(trace, fused, total_footprint(fused), "lru")
    assert result.misses == 2 and result.hits == len(trace) - 2


def test_bundles_are_reused_until_a_source_model_changes(tmp_path):
    models = {f"m{i}": builders.save(builders.affine(i), tmp_path / f"m{i}.onnx") for i in range(3)}
    functions = {"fa": ["m0", "m1"], "fb": ["m2"]}
    _, fused = deployments(models, functions, tmp_path / "work")
    stamps = {name: b.artifact.stat().st_mtime_ns for name, b in fused.bundles.items()}
    builders.save(builders.affine(7), models["m1"])  # another model at the same path
    _, again = deployments(models, functions, tmp_path / "work")
    assert again.bundles["fb"].artifact.stat().st_mtime_ns == stamps["fb"]
    assert again.bundles["fa"].artifact.stat().st_mtime_ns != stamps["fa"]
    (entry,) = [e for e in again.bundles["fa"].manifest.models if e.name == "m1"]
    assert entry.sha256 == sha256_file(models["m1"])


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


def test_auto_groups_are_models_always_called_together():
    functions = {"fa": ["m0", "m1", "m2"], "fb": ["m0", "m1", "m3"], "fc": ["m2", "m4"]}
    assert auto_groups(functions).lists() == {"g00": ["m0", "m1"]}
    assert auto_groups({"fa": ["m0"], "fb": ["m1"]}) == Layout()


def test_grouped_deployment_loads_each_model_once_per_request(small_models, tmp_path):
    functions = {"fa": ["m0", "m1", "m2"], "fb": ["m0", "m1", "m3"]}
    plans = deployments(small_models, functions, tmp_path / "work", auto_groups(functions))
    grouped = plans[-1]
    assert grouped.name == "grouped"
    assert sorted(grouped.bundles) == ["g00", "m2", "m3"]
    assert grouped.calls == {"fa": [Call("g00"), Call("m2")], "fb": [Call("g00"), Call("m3")]}
    assert sorted(grouped.bundles["g00"].models()) == ["m0", "m1"]
    trace = [Request(0.01 * i, "fa" if i % 2 else "fb") for i in range(10)]
    result = replay(trace, grouped, total_footprint(grouped), "lru")
    assert result.misses == 3 and result.hits == 2 * len(trace) - 3
    assert result.models_loaded == 4  # g00 brings m0 and m1 at once
    with pytest.raises(UserInputError, match="needs distinct, known models"):
        deployments(small_models, functions, tmp_path / "w", {"a": ["m0", "m9"]})


def test_a_function_that_calls_part_of_a_group_runs_those_models_parts(small_models, tmp_path):
    functions = {"all": ["m0", "m1", "m2"], "some": ["m0", "m1"], "one": ["m2"]}
    groups = {"g": ["m0", "m1", "m2"]}
    (plan,) = [d for d in deployments(small_models, functions, tmp_path / "w", groups)
               if d.name == "grouped"]  # fmt: skip
    assert plan.calls == {
        "all": [Call("g")],
        "some": [Call("g", "m0"), Call("g", "m1")],
        "one": [Call("g", "m2")],
    }
    trace = [Request(0.01 * i, name) for i, name in enumerate(["some", "one", "all"] * 3)]
    result = replay(trace, plan, total_footprint(plan), "belady")
    # One bundle, loaded once: the parts and the whole open inside it, never another copy.
    assert result.misses == 1 and result.hits == 3 * (2 + 1 + 1) - 1
    assert result.models_loaded == 2 + 1 + 3  # the parts of m0, m1 and m2, then the whole


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


def test_route_picks_the_fewest_bundles_wholes_before_parts():
    bundles = Layout({"big": ["m0", "m1", "m2"], "pair": ["m0", "m1"], "m3": ["m3"]})
    calls = route({"fa": ["m0", "m1"], "fb": ["m2", "m3"], "fc": ["m1", "m2"]}, bundles)
    assert calls["fa"] == [Call("pair")]  # covers as much as big, and runs whole
    assert calls["fb"] == [Call("big", "m2"), Call("m3")]
    assert calls["fc"] == [Call("big", "m1"), Call("big", "m2")]
    with pytest.raises(UserInputError, match="which no bundle holds"):
        route({"fd": ["m9"]}, bundles)


def test_a_model_in_two_bundles_runs_in_the_one_its_function_is_routed_to(small_models, tmp_path):
    functions = {"left": ["m0", "m1"], "right": ["m1", "m2"], "solo": ["m1"]}
    groups = {"ga": ["m0", "m1"], "gb": ["m1", "m2"]}
    (plan,) = [d for d in deployments(small_models, functions, tmp_path / "w", groups, aot=True)
               if d.name == "grouped"]  # fmt: skip
    assert plan.calls == {"left": [Call("ga")], "right": [Call("gb")], "solo": [Call("ga", "m1")]}
    trace = [Request(0.01 * i, name) for i, name in enumerate(["left", "right", "solo"] * 4)]
    result = replay(trace, plan, total_footprint(plan), "lru")
    assert result.misses == 2 and result.hits == len(trace) - 2
    # Both bundles and m1's part resident hold m1's weights once: the pool maps them once.
    ga, gb = (plan.bundles[name].footprint for name in ("ga", "gb"))
    everything = ga.measured_bytes + ga.parts["m1"] + gb.measured_bytes + arena_bytes([ga, gb])
    everything += max(ga.loading_bytes, gb.loading_bytes)  # one of them loading
    m1_weights = plan.bundles["gb"].session_bytes("m1", True).weight_bytes
    assert result.peak_accounted_bytes <= everything - m1_weights


def test_a_trace_that_names_models_defines_its_functions(small_models, tmp_path):
    trace = tmp_path / "calls.csv"
    trace.write_text("timestamp,models\n0.2,m1+m0\n0.1,m1\n0.3,m0+m1+m0\n", encoding="utf-8")
    requests = read_trace(trace)
    assert [r.function for r in requests] == ["m1", "m0+m1", "m0+m1"]
    functions = trace_functions(requests)
    assert functions == {"m1": ["m1"], "m0+m1": ["m0", "m1"]}
    # One bundle per function: m1 alone, named after it, beside a bundle that holds m1 too.
    _, fused = deployments(small_models, functions, tmp_path / "w", aot=True)
    assert fused.calls == {"m1": [Call("m1")], "m0+m1": [Call("m0+m1")]}
    result = replay(requests, fused, total_footprint(fused), "lru")
    assert (result.misses, result.hits) == (2, 1)
    again = tmp_path / "again.csv"
    write_trace(requests, again)
    assert read_trace(again) == requests
    assert trace_functions([Request(0.0, "fa")]) is None
    trace.write_text("timestamp,models\n0.1,m0++m1\n", encoding="utf-8")
    with pytest.raises(UserInputError, match="name them as a"):
        read_trace(trace)


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
