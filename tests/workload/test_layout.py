"""Layouts: which models share a bundle."""

from __future__ import annotations

from fusedinf_cc.workload.layout import Layout, auto_groups


def test_auto_groups_are_models_always_called_together():
    functions = {"fa": ["m0", "m1", "m2"], "fb": ["m0", "m1", "m3"], "fc": ["m2", "m4"]}
    assert auto_groups(functions).lists() == {"g00": ["m0", "m1"]}
    assert auto_groups({"fa": ["m0"], "fb": ["m1"]}) == Layout()
