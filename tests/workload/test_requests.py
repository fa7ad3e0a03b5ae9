"""The synthetic workload: Zipf popularity over functions, Poisson arrivals, seeded."""

from __future__ import annotations

import itertools
from collections import Counter

import pytest

from fusedinf_cc.workload.requests import TraceSpec, synthetic_functions, synthetic_trace


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
