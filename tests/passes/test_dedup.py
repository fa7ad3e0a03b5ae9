"""dedup (and cse): on by default, and off when asked, the graph then kept as merged."""

from __future__ import annotations

import numpy as np
import onnx

from fusedinf_cc.passes.base import FusionOptions
from tests.support import builders
from tests.support.commands import fuse_files
from tests.support.oracle import compare_fused


def test_no_dedup_and_no_cse_keep_the_graph_as_merged(tmp_path):
    a = builders.save(builders.affine(0), tmp_path / "a.onnx")
    b = builders.save(builders.affine(0), tmp_path / "b.onnx")
    out = tmp_path / "fused.onnx"
    options = FusionOptions(share_inputs="auto", dedup=False, cse=False)
    manifest = fuse_files([("a", a), ("b", b)], out, options)
    fused = onnx.load(out)
    assert len(fused.graph.node) == 6 and len(fused.graph.initializer) == 4
    assert [p.name for p in manifest.passes] == ["normalize", "prefix", "merge", "share", "cleanup"]
    np.testing.assert_equal([e for e, _ in compare_fused(out, manifest).values()], [0.0, 0.0])
