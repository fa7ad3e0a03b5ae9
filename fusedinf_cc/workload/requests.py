"""Requests, and the synthetic workload: Zipf popularity over functions, Poisson arrivals."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fusedinf_cc.common.errors import UserInputError


@dataclass(frozen=True)
class Request:
    arrival_s: float
    function: str
    # The models the request calls, where the trace names them rather than a function (the
    # function is then named after them: "a+b").
    models: tuple[str, ...] | None = None


@dataclass(frozen=True)
class TraceSpec:
    """The synthetic workload; the defaults are the ones docs/benchmarks.md reports."""

    functions: int = 20
    min_models: int = 2
    max_models: int = 4
    requests: int = 400
    zipf_s: float = 1.1
    rate_per_s: float = 4.0
    seed: int = 0


def synthetic_functions(models: Sequence[str], spec: TraceSpec) -> dict[str, list[str]]:
    """`spec.functions` functions, each invoking 2-4 distinct models drawn from `models`."""
    if len(models) < spec.max_models:
        raise UserInputError(f"need at least {spec.max_models} models to draw functions from")
    rng = np.random.default_rng(spec.seed)
    functions = {}
    for index in range(spec.functions):
        count = int(rng.integers(spec.min_models, spec.max_models + 1))
        chosen = rng.choice(len(models), size=count, replace=False)
        functions[f"fn{index:02d}"] = [models[i] for i in sorted(chosen)]
    return functions


def synthetic_trace(functions: Sequence[str], spec: TraceSpec) -> list[Request]:
    """Zipf(s) popularity over functions (rank 1 the most popular), Poisson arrivals."""
    rng = np.random.default_rng(spec.seed + 1)
    ranks = np.arange(1, len(functions) + 1)
    popularity = ranks**-spec.zipf_s
    popularity /= popularity.sum()
    picks = rng.choice(len(functions), size=spec.requests, p=popularity)
    arrivals = np.cumsum(rng.exponential(1.0 / spec.rate_per_s, size=spec.requests))
    return [Request(float(t), functions[i]) for t, i in zip(arrivals, picks, strict=True)]
