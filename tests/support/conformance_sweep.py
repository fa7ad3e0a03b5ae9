"""ONNX's own operator conformance cases, fused in pairs and compared with their expected outputs.

The cases come from `onnx.backend.test.case.node`, which builds each case's model and computes
its expected outputs (the wheel ships no test data files). Kept: the cases with one data set of
plain tensors whose model ONNX Runtime runs alone and matches the expected outputs, so that
what a fused pair gets wrong is the fusion's doing.
"""

from __future__ import annotations

import contextlib
import functools
import io
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from fusedinf_cc.common.errors import FusedInfError
from fusedinf_cc.compiler.build import build_fused


@dataclass(frozen=True)
class Case:
    name: str
    model: onnx.ModelProto
    inputs: dict[str, np.ndarray]
    outputs: dict[str, np.ndarray]
    rtol: float
    atol: float


@functools.lru_cache(maxsize=1)
def runnable_cases() -> tuple[Case, ...]:
    """Every node case ONNX Runtime passes alone, in the order onnx lists them."""
    from onnx.backend.test.case.node import collect_testcases

    quiet = contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO())
    with quiet[0], quiet[1], warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")  # the cases' own numpy reference warns as it computes
        collected = collect_testcases()
    cases = []
    for test in collected:
        case = _case(test)
        if case is not None and _runs_alone(case):
            cases.append(case)
    return tuple(cases)


def _case(test) -> Case | None:
    if test.model is None or len(test.data_sets or ()) != 1:
        return None
    inputs, outputs = test.data_sets[0]
    graph = test.model.graph
    initialized = {t.name for t in graph.initializer}
    fed = [value.name for value in graph.input if value.name not in initialized]
    arrays = [*inputs, *outputs]
    if len(inputs) != len(fed) or len(outputs) != len(graph.output):
        return None
    if not all(isinstance(a, np.ndarray) and a.dtype != object for a in arrays):
        return None
    return Case(
        name=test.name,
        model=test.model,
        inputs=dict(zip(fed, inputs, strict=True)),
        outputs={o.name: a for o, a in zip(graph.output, outputs, strict=True)},
        rtol=test.rtol,
        atol=test.atol,
    )


def _session(model: bytes | str) -> ort.InferenceSession:
    """A CPU session whose failures are only raised, not also logged."""
    options = ort.SessionOptions()
    options.log_severity_level = 4
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def _runs_alone(case: Case) -> bool:
    try:
        session = _session(case.model.SerializeToString())
        got = session.run(list(case.outputs), case.inputs)
    except Exception:  # the runtime refuses the case: not one to fuse
        return False
    return all(_close(g, e, case) for g, e in zip(got, case.outputs.values(), strict=True))


def _close(got: np.ndarray, expected: np.ndarray, case: Case) -> bool:
    if got.shape != expected.shape or got.dtype != expected.dtype:
        return False
    if got.dtype.kind in "fc":
        return bool(np.allclose(got, expected, rtol=case.rtol, atol=case.atol, equal_nan=True))
    return bool(np.array_equal(got, expected))


def fuse_pair(first: Case, second: Case, folder: Path) -> str:
    """Fuse two cases as `a` and `b` and compare every fused output with its expected one:
    "equal", "refused: <the one-line reason>", "wrong: <outputs>" or "crashed: <error>"."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, case in (("a", first), ("b", second)):
        paths[name] = folder / f"{name}.onnx"
        onnx.save(case.model, paths[name])
    out = folder / "fused.onnx"
    try:
        build_fused([f"{name}={path}" for name, path in paths.items()], out)
    except FusedInfError as error:
        return f"refused: {str(error).splitlines()[0]}"
    except Exception as error:  # anything else is a bug: reported, not raised
        return f"crashed: {type(error).__name__}: {error}"
    feeds = {f"{n}/{k}": v for n, c in (("a", first), ("b", second)) for k, v in c.inputs.items()}
    try:
        session = _session(str(out))
        fed = {i.name for i in session.get_inputs()}
        names = [o.name for o in session.get_outputs()]
        results = session.run(None, {k: v for k, v in feeds.items() if k in fed})
        got = dict(zip(names, results, strict=True))
    except Exception as error:
        return f"crashed: the fused model does not run ({str(error).splitlines()[0]})"
    wrong = [
        f"{n}/{output}"
        for n, case in (("a", first), ("b", second))
        for output, expected in case.outputs.items()
        if f"{n}/{output}" not in got or not _close(got[f"{n}/{output}"], expected, case)
    ]
    return f"wrong: {', '.join(wrong)}" if wrong else "equal"


def tally(outcomes: list[str]) -> Counter:
    """Outcomes by kind: equal, refused, wrong, crashed."""
    return Counter(outcome.split(":", 1)[0].split(" ", 1)[0] for outcome in outcomes)
