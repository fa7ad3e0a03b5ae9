"""Feeds: what a request gives must fit the model's inputs, from arrays or files."""

from __future__ import annotations

import numpy as np
import pytest

from fusedinf_cc.backends.base import TensorSpec
from fusedinf_cc.common.errors import UserInputError
from fusedinf_cc.compiler.build import build_fused
from fusedinf_cc.runtime.feeds import load_feeds
from tests.support import builders, oracle
from tests.support.commands import run_cli


def test_a_single_array_npy_feeds_a_model_of_one_input(tmp_path):
    model = builders.save(builders.affine(3, width=16), tmp_path / "one.onnx")
    one, written = tmp_path / "x.npy", tmp_path / "outputs.npz"
    x = np.random.default_rng(1).standard_normal((1, 16)).astype(np.float32)
    np.save(one, x)
    assert run_cli("run", model, "--inputs", one, "-o", written).returncode == 0
    assert np.load(written)["y"].tobytes() == oracle.outputs(model, {"x": x})["y"].tobytes()
    out = tmp_path / "fused.onnx"
    build_fused(builders.affine_pair_specs(tmp_path / "m", 0), out)
    np.save(one, np.ones((1, 64), np.float32))
    result = run_cli("verify", out, "--inputs", one)
    assert result.returncode == 2 and ".npz keyed by input names" in result.stderr


@pytest.mark.parametrize(
    ("given", "complaint"),
    [
        ({"image": np.zeros((2, 3, 8, 8), np.float32)}, None),  # the batch dim is dynamic
        (
            {"image": np.zeros((2, 3, 8, 9), np.float32)},
            "image is 2x3x8x9, the model wants ?x3x8x8",
        ),
        ({"image": np.zeros((3,), np.float32)}, "image is 3, the model wants ?x3x8x8"),
        ({"image": np.zeros((1, 3, 8, 8), np.int64)}, "image is int64, the model wants float32"),
        ({"frame": np.zeros((1, 3, 8, 8), np.float32)}, "missing ['image'], unexpected ['frame']"),
    ],
)
def test_feeds_from_a_file_must_fit_the_model(tmp_path, given, complaint):
    """A mistake in the user's .npz is theirs to fix: a one-line error, not a runtime failure."""
    spec = TensorSpec(name="image", dtype=np.dtype(np.float32), shape=(None, 3, 8, 8))
    path = tmp_path / "feeds.npz"
    np.savez(path, **given)
    if complaint is None:
        assert load_feeds(path, [spec])["image"].shape == (2, 3, 8, 8)
        return
    with pytest.raises(UserInputError) as raised:
        load_feeds(path, [spec])
    assert complaint in str(raised.value)
