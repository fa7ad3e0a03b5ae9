"""Deployments: the same models built unfused, fused and grouped, each built once and reused."""

from __future__ import annotations

import pytest

from fusedinf_cc.common.errors import UserInputError
from fusedinf_cc.common.files import sha256_file
from fusedinf_cc.measure.deployments import deployments, total_footprint
from fusedinf_cc.measure.simulate import replay
from fusedinf_cc.runtime.footprint import arena_bytes
from fusedinf_cc.workload.layout import auto_groups
from fusedinf_cc.workload.requests import Request
from fusedinf_cc.workload.routing import Call
from tests.support import builders


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
        label = "+".join(functions[function])
        assert record.detail.startswith(f"{label}: 13 of 15 layers stacked")
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
