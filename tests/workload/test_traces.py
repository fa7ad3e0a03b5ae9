"""Traces and function files on disk: read back as written, or refused in one line."""

from __future__ import annotations

import pytest

from fusedinf_cc.common.errors import UserInputError
from fusedinf_cc.measure.deployments import deployments, total_footprint
from fusedinf_cc.measure.simulate import replay
from fusedinf_cc.workload.requests import Request
from fusedinf_cc.workload.routing import Call
from fusedinf_cc.workload.traces import read_name_lists, read_trace, trace_functions, write_trace


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
