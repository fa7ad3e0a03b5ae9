"""`run`: one request through the loader, for a bundle or one model of it."""

from __future__ import annotations

import numpy as np

from tests.support import builders
from tests.support.bundles import fused_pair_bundle
from tests.support.oracle import session as oracle_session


def test_run_command_answers_for_one_model_of_a_bundle(tmp_path):
    from tests.support.commands import run_cli

    bundle = fused_pair_bundle(tmp_path, "pair", 21, width=16)
    feeds = tmp_path / "feeds.npz"
    np.savez(feeds, x=builders.random_feeds(width=16, seed=5)["x"])
    outputs = tmp_path / "outputs.npz"
    result = run_cli("run", bundle, "--model", "pair_b", "--inputs", feeds, "-o", outputs)
    assert result.returncode == 0, result.stderr
    assert "1x16" in result.stdout
    (expected,) = oracle_session(tmp_path / "pair_b.onnx").run(
        None, builders.random_feeds(width=16, seed=5)
    )
    with np.load(outputs) as saved:
        assert list(saved.files) == ["y"]
        assert saved["y"].tobytes() == expected.tobytes()
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, pixels=np.zeros((1, 16), np.float32))
    result = run_cli("run", bundle, "--model", "pair_b", "--inputs", wrong)
    assert result.returncode == 2 and "missing ['x']" in result.stderr
