"""Routing: the fewest bundles a function's request runs, wholes before parts."""

from __future__ import annotations

import pytest

from fusedinf_cc.common.errors import UserInputError
from fusedinf_cc.workload.layout import Layout
from fusedinf_cc.workload.routing import Call, route


def test_route_picks_the_fewest_bundles_wholes_before_parts():
    bundles = Layout({"big": ["m0", "m1", "m2"], "pair": ["m0", "m1"], "m3": ["m3"]})
    calls = route({"fa": ["m0", "m1"], "fb": ["m2", "m3"], "fc": ["m1", "m2"]}, bundles)
    assert calls["fa"] == [Call("pair")]  # covers as much as big, and runs whole
    assert calls["fb"] == [Call("big", "m2"), Call("m3")]
    assert calls["fc"] == [Call("big", "m1"), Call("big", "m2")]
    with pytest.raises(UserInputError, match="which no bundle holds"):
        route({"fd": ["m9"]}, bundles)
