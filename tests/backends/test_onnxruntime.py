"""ONNX Runtime sessions of ahead-of-time artifacts run their nodes in the order their side file
holds the weights, the order a read running ahead of the first request brings them in."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from fusedinf_cc.backends.sessions import open_session
from fusedinf_cc.backends.weight_pool import artifact_weights
from fusedinf_cc.compiler.build import build_fused
from tests.support import builders

pytest.importorskip("onnxruntime", reason="needs ONNX Runtime")


def test_an_ahead_of_time_session_runs_its_nodes_in_side_file_order(tmp_path):
    # Three models side by side: ONNX Runtime's default order (a reverse depth-first walk from
    # the outputs) runs the last one first.
    specs = builders.affine_pair_specs(tmp_path / "models", seed=3, width=256)
    third = builders.save(builders.affine(77, width=256), tmp_path / "models" / "c.onnx")
    out = tmp_path / "trio.aot.onnx"
    build_fused([*specs, f"c={third}"], out, aot=True)
    _, records = artifact_weights(out)
    offset = {record.name: record.offset for record in records}
    graph = onnx.load(out, load_external_data=False).graph
    reads = {node.name: [offset[i] for i in node.input if i in offset] for node in graph.node}

    options = {"enable_profiling": True, "profile_file_prefix": str(tmp_path / "profile")}
    session = open_session(out, options=options)
    session.run({spec.name: np.ones((1, 256), np.float32) for spec in session.inputs})
    profile = Path(session._session.end_profiling())  # the order it ran: ONNX Runtime's record
    session.close()

    ran = [
        event["name"].removesuffix("_kernel_time")
        for event in json.loads(profile.read_text(encoding="utf-8"))
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time")
    ]
    read = [min(reads[name]) for name in ran if reads.get(name)]
    assert len(read) == 3 and read == sorted(read)
