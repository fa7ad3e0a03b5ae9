"""Traces and function files on disk: read back as written, or refused in one line."""

from __future__ import annotations

import os
from pathlib import Path

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
        ('{"fn": ["a", "b", "a"]}', "'fn' lists a twice"),
        ('{"fn": ' + "[" * 100_000 + "]" * 100_000 + "}", "nested too deeply"),
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
    assert message.startswith(f"--functions {path}: ")
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


@pytest.mark.parametrize(
    ("rows", "complaint"),
    [
        ("nan,fn00", "timestamp 'nan': give seconds, finite and not negative"),
        ("inf,fn00", "timestamp 'inf': give seconds, finite and not negative"),
        ("-2,fn00", "timestamp '-2': give seconds, finite and not negative"),
        ("noon,fn00", "timestamp 'noon' is not a number of seconds"),
        ("1733580000000000000,fn00", "is in milli-, micro- or nanoseconds; give seconds"),
        ("1733580000000,fn00", "is in milli-, micro- or nanoseconds; give seconds"),
    ],
)
def test_timestamps_are_finite_seconds_and_wrong_units_are_named(tmp_path, rows, complaint):
    path = tmp_path / "trace.csv"
    path.write_text(f"timestamp,function\n0,fn00\n{rows}\n")
    with pytest.raises(UserInputError, match=complaint):
        read_trace(path)


def test_a_trace_saved_by_a_spreadsheet_reads_as_written(tmp_path):
    path = tmp_path / "trace.csv"
    path.write_bytes(b"\xef\xbb\xbftimestamp , models\r\n0.5,a+b\r\n1733580000,a\r\n")
    requests = read_trace(path)
    assert [(r.arrival_s, r.models) for r in requests] == [
        (0.5, ("a", "b")),
        (1733580000.0, ("a",)),
    ]


@pytest.mark.parametrize("source", ["/dev/zero", "folder", "fifo"])
def test_a_trace_that_is_no_regular_file_is_refused_before_it_is_read(tmp_path, source):
    path = {"folder": tmp_path, "fifo": tmp_path / "fifo"}.get(source, Path(source))
    if source == "fifo":
        os.mkfifo(path)
    with pytest.raises(UserInputError, match=r"(not a regular file, so|a folder,) not a CSV trace"):
        read_trace(path)


def test_a_function_named_like_a_model_may_only_call_that_model():
    from fusedinf_cc.workload.traces import check_function_names

    check_function_names({"a": ["a"], "f": ["a", "b"]}, ["a", "b"])
    with pytest.raises(
        UserInputError, match="function 'a' has the name of a model but calls a\\+b"
    ):
        check_function_names({"a": ["a", "b"]}, ["a", "b"])
