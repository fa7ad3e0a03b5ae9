"""ONNX's own conformance cases, fused in pairs: equal to their sources, or refused in one line."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from tests.support import conformance_sweep


def _neighbouring_pairs() -> list[tuple[int, int]]:
    cases = conformance_sweep.runnable_cases()
    return [(i, i + 1) for i in range(0, len(cases) - 1, 2)]


def _sweep(pairs: list[tuple[int, int]], folder) -> list[str]:
    cases = conformance_sweep.runnable_cases()
    outcomes = []
    for index, (i, j) in enumerate(pairs):
        where = folder / f"pair{index}"
        outcome = conformance_sweep.fuse_pair(cases[i], cases[j], where)
        outcomes.append(f"{outcome} [{cases[i].name} + {cases[j].name}]")
        shutil.rmtree(where)  # a sweep writes thousands of models
    return outcomes


@pytest.mark.parametrize("seed", [0, 1])
def test_random_pairs_of_onnxs_conformance_cases_fuse_and_match(tmp_path, seed):
    cases = conformance_sweep.runnable_cases()
    assert len(cases) > 1000  # the cases really were collected and run
    # Any two: operators of different opsets, so one side is converted to the other's.
    drawn = np.random.default_rng(seed).choice(len(cases), size=(40, 2), replace=False)
    outcomes = _sweep([(int(i), int(j)) for i, j in drawn], tmp_path)
    counted = conformance_sweep.tally(outcomes)
    assert counted["wrong"] == counted["crashed"] == 0, [o for o in outcomes if "equal" not in o]
    assert counted["equal"] >= 30


@pytest.mark.slow
def test_every_neighbouring_pair_and_a_thousand_random_ones_fuse_or_are_refused(tmp_path):
    cases = conformance_sweep.runnable_cases()
    drawn = np.random.default_rng(7).choice(len(cases), size=(1000, 2))
    pairs = _neighbouring_pairs() + [(int(i), int(j)) for i, j in drawn if i != j]
    outcomes = _sweep(pairs, tmp_path)
    counted = conformance_sweep.tally(outcomes)
    print(f"conformance pairs: {dict(counted)}")
    for outcome in outcomes:
        if not outcome.startswith("equal"):
            print(outcome)
    assert counted["wrong"] == counted["crashed"] == 0, [o for o in outcomes if "equal" not in o]
