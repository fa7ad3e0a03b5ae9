"""Shapes as given on the command line."""

from __future__ import annotations

import pytest

from fusedinf_cc.common.errors import UserInputError
from fusedinf_cc.common.shapes import parse_shapes


def test_parse_shapes():
    assert parse_shapes("a/x:1x3x224x224,tokens:1x64") == {
        "a/x": (1, 3, 224, 224),
        "tokens": (1, 64),
    }
    for bad in ("x", "x:1xa", "x:-1"):
        with pytest.raises(UserInputError):
            parse_shapes(bad)
