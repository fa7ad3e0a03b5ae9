"""Traces on disk, and the workload a command replays: its requests and its functions."""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from fusedinf_cc.common.errors import UserInputError, first_line
from fusedinf_cc.common.files import read_small_file, write_text_atomic
from fusedinf_cc.workload.requests import Request, TraceSpec, synthetic_functions, synthetic_trace

# A trace of a million requests is about 30 MB; a file past this is not one.
MAX_TRACE_BYTES = 256 * 2**20
MAX_FUNCTIONS_BYTES = 16 * 2**20
# Seconds since 1970 are about 1.8e9 today; a timestamp past this is in milli-, micro- or
# nanoseconds, which would read every gap between requests as 1,000 times or more too long.
_LARGEST_SECONDS = 1e11


def read_trace(path: Path) -> list[Request]:
    """CSV with a header `timestamp,function`, one request per row; or `timestamp,models`, each
    row naming the models a request calls (`a+b+c`). Timestamps are seconds from any origin
    (finite, not negative; rows in any order are sorted). A spreadsheet's byte-order mark and
    CRLF line ends are fine."""
    text = read_small_text(path, "CSV trace", MAX_TRACE_BYTES)
    try:
        reader = csv.DictReader(io.StringIO(text, newline=""))
        reader.fieldnames = [name.strip() for name in reader.fieldnames or ()]
        columns = set(reader.fieldnames)
        rows = list(reader)
    except csv.Error as error:
        raise UserInputError(f"{path}: not a CSV trace ({first_line(error)})") from None
    expected = "expected columns timestamp,function or timestamp,models"
    try:
        if "models" in columns and "function" not in columns:
            requests = [_model_call(_seconds(row["timestamp"]), row["models"]) for row in rows]
        else:
            requests = [
                Request(_seconds(row["timestamp"]), row["function"].strip()) for row in rows
            ]
    except (KeyError, AttributeError) as error:
        raise UserInputError(f"{path}: {expected} ({first_line(error)})") from None
    except ValueError as error:
        raise UserInputError(f"{path}: {error}") from None
    if not requests:
        raise UserInputError(f"{path}: no requests ({expected}, then rows)")
    largest = max(request.arrival_s for request in requests)
    if largest > _LARGEST_SECONDS:
        raise UserInputError(
            f"{path}: timestamp {largest:g} is in milli-, micro- or nanoseconds; give seconds "
            "(any origin)"
        )
    return sorted(requests, key=lambda request: request.arrival_s)


def _seconds(text: str) -> float:
    """A request's timestamp: seconds, finite and not negative."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise ValueError(f"timestamp {text!r} is not a number of seconds") from None
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"timestamp {text!r}: give seconds, finite and not negative")
    return value


def read_small_text(path: Path, what: str, max_bytes: int) -> str:
    """A regular text file of at most `max_bytes` (UTF-8, a byte-order mark dropped)."""
    data = read_small_file(path, what, max_bytes)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise UserInputError(
            f"{path}: not a {what}: not UTF-8 text ({first_line(error)})"
        ) from None


def _model_call(arrival_s: float, text: str) -> Request:
    models = tuple(dict.fromkeys(name.strip() for name in text.split("+")))
    if not all(models):
        raise ValueError(f"models {text!r}: name them as a+b+c")
    return Request(arrival_s, "+".join(sorted(models)), models)


def write_trace(requests: Sequence[Request], path: Path) -> None:
    """The trace as `read_trace` reads it, written whole or not at all."""
    text = io.StringIO(newline="")
    writer = csv.writer(text)
    by_models = trace_functions(requests) is not None
    writer.writerow(["timestamp", "models" if by_models else "function"])
    for request in requests:
        called = "+".join(request.models) if by_models else request.function  # type: ignore[arg-type]
        writer.writerow([f"{request.arrival_s:.6f}", called])
    write_text_atomic(path, text.getvalue())


def trace_functions(requests: Sequence[Request]) -> dict[str, list[str]] | None:
    """The functions a trace that names models defines (one per set of models called
    together); None for a trace that names functions."""
    if not all(request.models for request in requests):
        return None
    return {r.function: sorted(r.models) for r in requests}  # type: ignore[arg-type]


def read_name_lists(path: Path, flag: str, key: str) -> dict[str, list[str]]:
    """A JSON object of non-empty lists of names, e.g. functions -> the models each calls."""
    expected = f'{flag} {path}: expected a JSON object such as {{"{key}": ["model", ...]}}'
    text = read_small_text(path, f"{flag} file", MAX_FUNCTIONS_BYTES)
    try:
        loaded = json.loads(text)
    except ValueError as error:
        raise UserInputError(f"{expected} ({error})") from None
    except RecursionError:
        raise UserInputError(f"{expected} (nested too deeply)") from None
    if not isinstance(loaded, dict):
        raise UserInputError(expected)
    for entry, names in loaded.items():
        if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
            raise UserInputError(f"{expected}; {entry!r} is {json.dumps(names)}")
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:
            raise UserInputError(f"{flag} {path}: {entry!r} lists {', '.join(twice)} twice")
    return loaded


@dataclass(frozen=True)
class Workload:
    """What a command replays: the requests in arrival order, and the models each of their
    functions calls."""

    requests: list[Request]
    functions: dict[str, list[str]]


def load_workload(
    trace: Path | None,
    functions_file: Path | None,
    models: Callable[[], Sequence[str]],
    spec: TraceSpec,
    *,
    functions_required: bool = False,
) -> Workload:
    """The trace at `trace` (else a synthetic one drawn by `spec`) and its functions: those a
    trace that names models calls, else `functions_file`'s, else drawn from `models()`. Every
    function the trace names must be known; `functions_required`: a trace of functions needs
    `functions_file`, none are drawn."""
    given = read_trace(trace) if trace is not None else None
    named = trace_functions(given) if given else None
    if named is not None:
        if functions_file is not None:
            raise UserInputError(
                "--functions: the trace names the models each request calls; give no --functions"
            )
        return Workload(given, named)  # type: ignore[arg-type]
    if functions_file is not None:
        functions = read_name_lists(functions_file, "--functions", "fn")
    elif functions_required and given is not None:
        raise UserInputError(
            f"{trace}: a trace of functions needs --functions (or name the models: "
            "timestamp,models)"
        )
    else:
        functions = synthetic_functions(models(), spec)
    missing = {r.function for r in given or ()} - set(functions)
    if missing:
        raise UserInputError(f"the trace names unknown functions: {sorted(missing)}")
    check_function_names(functions, models())
    return Workload(given or synthetic_trace(sorted(functions), spec), functions)


def check_function_names(functions: dict[str, list[str]], models: Sequence[str]) -> None:
    """A function's fused bundle carries the function's name, so a function named like a model
    may only call that model: else one name would mean a bundle and a model."""
    known = set(models)
    for function, called in functions.items():
        if function in known and called != [function]:
            raise UserInputError(
                f"function {function!r} has the name of a model but calls "
                f"{'+'.join(called)}: name functions apart from the models"
            )
