"""The fresh-process worker that bench and footprints run in."""

from __future__ import annotations

import onnx

from fusedinf_cc.runtime.worker import WARMUP_MODEL


def test_warmup_model_is_a_valid_one_node_model():
    model = onnx.load_from_string(WARMUP_MODEL)
    onnx.checker.check_model(model, full_check=True)
    assert [node.op_type for node in model.graph.node] == ["Relu"]


def test_a_cold_probe_reads_its_bundle_from_storage_and_says_how_much(tmp_path):
    from fusedinf_cc.compiler.build import build_fused
    from fusedinf_cc.runtime.pagecache import artifact_files
    from fusedinf_cc.runtime.worker import BenchConfig, ProbeJob, run_in_fresh_process
    from tests.support import builders

    artifact = tmp_path / "pair.onnx"
    build_fused(builders.affine_pair_specs(tmp_path / "m", seed=4, width=1024), artifact, aot=True)
    (side,) = [path for path in artifact_files(artifact) if path.name.endswith(".data")]
    config = BenchConfig("fused", spinning=False, execution="sequential")
    read = {
        cold: run_in_fresh_process(
            ProbeJob([("pair", artifact)], None, runs=1, warmup=0, cold=cold), config
        ).load_read_bytes
        for cold in (True, False)
    }
    assert read[True] >= 0.9 * side.stat().st_size, read
    assert read[False] < 0.1 * side.stat().st_size, read  # the cold probe left it cached
