"""Model names as given on the command line."""

from __future__ import annotations

from pathlib import Path

import pytest

from fusedinf_cc.common.errors import UserInputError
from fusedinf_cc.common.names import parse_model_spec


def test_model_spec_names_default_to_the_stem():
    assert parse_model_spec("models/resnet18.onnx") == ("resnet18", Path("models/resnet18.onnx"))
    assert parse_model_spec("cls=a/b.onnx") == ("cls", Path("a/b.onnx"))
    with pytest.raises(UserInputError):
        parse_model_spec("cls=")
