"""The Python API as a careless caller meets it: wrong types get `UserInputError`, paths may be
`str` or `os.PathLike`."""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest

from fusedinf_cc import BundleCache, UserInputError, build_fused, verify_artifact
from tests.support import builders


@pytest.fixture
def fused(tmp_path):
    specs = builders.affine_pair_specs(tmp_path / "models", seed=4)
    out = tmp_path / "fused.onnx"
    build_fused(specs, str(out))  # a str path, as most callers write one
    return out


def test_paths_may_be_strings(fused):
    assert verify_artifact(str(fused)).ok
    cache = BundleCache(1 << 30)
    cache.register(str(fused))
    assert cache.run("a", {"x": np.ones((1, 64), np.float32)})["y"].shape == (1, 64)


@pytest.mark.parametrize(
    ("call", "complaint"),
    [
        (lambda f: BundleCache(1 << 30, policy=None), "unknown policy None"),
        (lambda f: BundleCache(1 << 30).register(123), "bundle: a path (str or os.PathLike), not"),
        (lambda f: verify_artifact(5), "artifact: a path (str or os.PathLike), not int"),
        (lambda f: build_fused(str(f), "out.onnx"), "models and outputs are lists"),
        (lambda f: build_fused([str(f)], 7), "output: a path (str or os.PathLike), not int"),
    ],
)
def test_wrong_types_are_one_user_error(fused, call, complaint):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        with pytest.raises(UserInputError, match=re.escape(complaint)):
            call(fused)


@pytest.mark.parametrize(
    ("feeds", "outputs", "complaint"),
    [
        ([np.ones((1, 64), np.float32)], None, "feeds map input names to arrays, not a list"),
        ({"x": np.ones((1, 64), np.float32)}, [], "name the outputs as a list of one or more"),
        ({"x": np.ones((1, 64), np.float32)}, "y", "name the outputs as a list of one or more"),
    ],
)
def test_a_request_of_the_wrong_shape_is_one_user_error(fused, feeds, outputs, complaint):
    cache = BundleCache(1 << 30)
    cache.register(fused)
    with pytest.raises(UserInputError, match=complaint):
        cache.run("a", feeds, outputs)
