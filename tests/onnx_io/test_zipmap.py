"""Classifiers as skl2onnx exports them by default: a ZipMap's maps carried as their tensor."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from fusedinf_cc.runtime.loader import BundleCache
from tests.support.commands import assert_clean_failure, run_cli

sklearn = pytest.importorskip("sklearn", reason="scikit-learn is a dev dependency")
skl2onnx = pytest.importorskip("skl2onnx", reason="skl2onnx is a dev dependency")


def _classifiers(folder):
    """A logistic regression over three classes and a small random forest over two, exported
    with skl2onnx's defaults (a ZipMap on each), and the rows they were trained on."""
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    x = rng.standard_normal((60, 4)).astype(np.float32)
    three = (x[:, 0] > 0.5).astype(int) + (x[:, 1] > 0).astype(int)
    two = (x[:, 2] + x[:, 3] > 0).astype(int)
    models = {
        "lr": LogisticRegression(max_iter=200).fit(x, three),
        "rf": RandomForestClassifier(n_estimators=3, max_depth=3, random_state=0).fit(x, two),
    }
    paths = {}
    for name, model in models.items():
        proto = skl2onnx.to_onnx(model, x[:1], target_opset={"": 17, "ai.onnx.ml": 3})
        assert any(node.op_type == "ZipMap" for node in proto.graph.node)
        paths[name] = folder / f"{name}.onnx"
        onnx.save(proto, paths[name])
    return models, paths, x


def test_classifiers_with_zipmap_fuse_run_and_verify(tmp_path):
    models, paths, x = _classifiers(tmp_path)
    fused = tmp_path / "classifiers.onnx"
    result = run_cli("fuse", *(f"{n}={p}" for n, p in paths.items()), "--share-inputs", "auto",
                     "-o", fused)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "ZipMap on output_probability carried as its float tensor" in result.stderr
    assert "Traceback" not in result.stderr
    verified = run_cli("verify", fused)
    assert verified.returncode == 0, verified.stderr + verified.stdout
    assert "all 4 outputs match" in verified.stdout
    cache = BundleCache(1 << 30)
    cache.register(fused)
    for name, model in models.items():
        out = cache.run(name, {"X": x})
        np.testing.assert_allclose(out["output_probability"], model.predict_proba(x), atol=1e-5)
        np.testing.assert_array_equal(out["output_label"], model.predict(x))
    cache.close()
    inspected = run_cli("inspect", paths["rf"])
    assert inspected.returncode == 0, inspected.stderr


def test_a_zipmap_that_feeds_other_nodes_is_refused_in_one_line(tmp_path):
    _, paths, _ = _classifiers(tmp_path)
    proto = onnx.load(paths["rf"])
    zipmap = next(node for node in proto.graph.node if node.op_type == "ZipMap")
    (mapped,) = zipmap.output
    proto.graph.node.append(onnx.helper.make_node("Identity", [mapped], ["again"]))
    proto.graph.output.append(onnx.helper.make_value_info("again", proto.graph.output[1].type))
    onnx.save(proto, paths["rf"])
    out = tmp_path / "out.onnx"
    result = run_cli("fuse", f"rf={paths['rf']}", "-o", out)
    assert_clean_failure(result, out, mentions="only a ZipMap that makes a graph output")
