"""`run`: one request through the loader, for a bundle or one model of it."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper

from fusedinf_cc.runtime.bundle import open_bundle
from fusedinf_cc.runtime.loader import BundleCache
from tests.support import builders
from tests.support.bundles import fused_pair_bundle
from tests.support.commands import run_cli
from tests.support.oracle import session as oracle_session


def test_run_command_answers_for_one_model_of_a_bundle(tmp_path):
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


def test_run_never_refuses_a_bundle_whose_request_touches_few_of_its_weights(tmp_path):
    """An embedding table of 100,000 rows, four rows read: one request leaves most of the
    table unread, so it was measured to hold less than the weights the budget counts. Both
    now weigh the same bytes: `run`, which sets no budget, runs it."""
    table = np.random.default_rng(0).standard_normal((100_000, 32)).astype(np.float32)
    model = builders.make_model(
        [helper.make_node("Gather", ["table", "ids"], ["y"])],
        [helper.make_tensor_value_info("ids", TensorProto.INT64, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 32])],
        [builders.tensor("table", table)],
    )
    source = builders.save(model, tmp_path / "emb.onnx")
    bundle = tmp_path / "solo.onnx"
    assert run_cli("fuse", f"big={source}", "--aot", "-o", bundle).returncode == 0
    feeds = tmp_path / "ids.npz"
    np.savez(feeds, **{"big/ids": np.array([[1, 5, 900, 77]], np.int64)})
    result = run_cli("run", bundle, "--inputs", feeds)
    assert result.returncode == 0, result.stderr
    assert "big/y" in result.stdout
    opened = open_bundle(bundle)
    assert opened.footprint.measured_bytes >= table.nbytes
    cache = BundleCache(opened.footprint.alone_bytes)
    cache.register(opened)
    ids = np.array([[3, 2, 1, 0]], np.int64)
    assert cache.run("big", {"ids": ids})["y"].shape == (1, 4, 32)
