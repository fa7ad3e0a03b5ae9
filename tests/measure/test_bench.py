"""bench runs every configuration in its own process and reports comparable numbers (no timing
targets here: those live in benchmarks)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from fusedinf_cc.measure.bench import (
    BenchConfig,
    bench_artifact,
    default_configs,
    merge_rounds,
    resave_with_side_files,
    round_order,
)
from fusedinf_cc.runtime.worker import VariantResult
from tests.support import builders
from tests.support.commands import fuse_files, run_cli

SEQUENTIAL_NO_SPIN = [
    BenchConfig("separate", False, "sequential"),
    BenchConfig("fused", False, "sequential"),
]


def fused_pair(tmp_path, width_a: int = 64) -> tuple[Path, Path, Path]:
    """Two affine models `a` and `b` and their fused artifact."""
    a = builders.save(builders.affine(0, width=width_a), tmp_path / "a.onnx")
    b = builders.save(builders.affine(1, width=64), tmp_path / "b.onnx")
    out = tmp_path / "fused.onnx"
    fuse_files([("a", a), ("b", b)], out)
    return a, b, out


def test_bench_measures_both_variants_in_fresh_processes(tmp_path):
    a, b, out = fused_pair(tmp_path)
    report = bench_artifact(out, runs=5, warmup=1, configs=SEQUENTIAL_NO_SPIN, rounds=2)
    separate, fused = report.best("separate"), report.best("fused")
    # Two rounds, each a fresh process: their latencies pooled, each round's p50 kept.
    assert len(separate.latencies_ms) == len(fused.latencies_ms) == 10
    assert len(fused.p50_ms_by_round) == 2 and fused.summary()["rounds"] == 2
    assert separate.artifact_bytes == a.stat().st_size + b.stat().st_size
    assert fused.artifact_bytes == out.stat().st_size
    # A fresh child: it imported onnxruntime (tens of MiB) but not the compiler.
    assert fused.peak_rss_bytes > 20 * 2**20
    assert not fused.imported_compiler and not separate.imported_compiler
    ratios = report.ratios()
    assert ratios["artifact_bytes"] == fused.artifact_bytes / separate.artifact_bytes


def test_separate_side_files_give_large_weights_the_fused_layout(tmp_path):
    big = builders.save(builders.affine(0, width=1536), tmp_path / "big.onnx")  # 9 MiB inside
    small = builders.save(builders.affine(1, width=64), tmp_path / "small.onnx")
    copies = dict(resave_with_side_files([("big", big), ("small", small)], tmp_path / "sep"))

    def locations(path):
        model = onnx.load(str(path), load_external_data=False)
        return {t.name: t.data_location for t in model.graph.initializer}

    assert locations(big) == {"W": onnx.TensorProto.DEFAULT, "b": onnx.TensorProto.DEFAULT}
    assert locations(copies["big"])["W"] == onnx.TensorProto.EXTERNAL
    assert copies["big"].stat().st_size < 2**20 < big.stat().st_size
    # Below 8 MiB the fused artifact keeps its weights inside too, and so does the copy.
    assert set(locations(copies["small"]).values()) == {onnx.TensorProto.DEFAULT}
    x = np.random.default_rng(2).standard_normal((1, 1536)).astype(np.float32)
    original, copy = (
        ort.InferenceSession(str(p)).run(None, {"x": x})[0] for p in (big, copies["big"])
    )
    np.testing.assert_array_equal(original, copy)


def test_bench_runs_the_separate_side_from_the_copies_and_says_so(tmp_path):
    _, _, out = fused_pair(tmp_path, width_a=1536)  # a: 9 MiB of weights inside its .onnx
    report = bench_artifact(
        out,
        runs=2,
        warmup=0,
        configs=SEQUENTIAL_NO_SPIN,
        scratch=tmp_path / "scratch",
        separate_side_files=True,
    )
    used = dict(report.separate_models)
    assert used == {
        "a": tmp_path / "scratch/separate/a.onnx",
        "b": tmp_path / "scratch/separate/b.onnx",
    }
    # The separate side's bytes are the copies' (model files and side file), not the originals'.
    copies_bytes = sum(p.stat().st_size for p in (tmp_path / "scratch/separate").iterdir())
    assert report.best("separate").artifact_bytes == copies_bytes
    assert report.to_dict()["separate_models"][0]["path"].endswith("separate/a.onnx")


def test_bench_cli_fuses_first_and_writes_json(tmp_path):
    a = builders.save(builders.affine(0), tmp_path / "a.onnx")
    b = builders.save(builders.affine(1), tmp_path / "b.onnx")
    report_path = tmp_path / "bench.json"
    result = run_cli(
        "bench",
        a,
        b,
        "--share-inputs",
        "auto",
        "--runs",
        "3",
        "--warmup",
        "0",
        "--rounds",
        "1",
        "--json",
        report_path,
    )
    assert result.returncode == 0, result.stderr
    assert "fastest separate vs fastest fused" in result.stdout
    report = json.loads(report_path.read_text())
    labels = {c["label"] for c in report["configs"]}
    assert len(labels) == 8  # both variants x sequential/parallel x spinning on/off
    for config in report["configs"]:  # one round: its own figures are the spread
        assert config["peak_rss_bytes_by_round"] == [config["peak_rss_bytes"]]
        assert config["load_s_by_round"] == [config["load_s"]]
    assert set(report["best"]) == {"separate", "fused"}
    assert report["environment"]["versions"]["onnx"]


def test_bench_without_models_or_fused_is_a_usage_error(tmp_path):
    result = run_cli("bench")
    assert result.returncode == 2
    assert result.stderr.strip() == "error: give the models to fuse, or --fused FUSED.onnx"


def test_separate_side_files_refuse_an_engine(tmp_path):
    result = run_cli("bench", "--fused", tmp_path / "fused.engine", "--separate-side-files")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "error: --separate-side-files applies to ONNX models, not engines"
    )


def test_bench_plot_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib", reason="--plot needs the plot extra (matplotlib)")
    a = builders.save(builders.affine(0), tmp_path / "a.onnx")
    b = builders.save(builders.affine(1), tmp_path / "b.onnx")
    picture = tmp_path / "bench.png"
    result = run_cli(
        "bench", a, b, "--runs", "2", "--warmup", "0", "--rounds", "1", "--plot", picture
    )
    assert result.returncode == 0, result.stderr
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert picture.stat().st_size > 10_000  # two panels of bars, not an empty canvas
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".bench.png")]


def test_rounds_alternate_the_variants_and_reverse_each_round():
    configs = default_configs()
    assert [c.variant for c in configs[:4]] == ["separate", "fused", "separate", "fused"]
    order = round_order(configs, 3)
    assert order == [*configs, *reversed(configs), *configs]


def test_merged_rounds_take_memory_from_one_round_and_pool_latencies():
    config = default_configs()[0]
    mib = 1 << 20

    def round_result(load_s: float, peak: int, baseline: int, latencies: list[float]):
        return VariantResult(
            config=config,
            load_s=load_s,
            latencies_ms=latencies,
            peak_rss_bytes=peak * mib,
            artifact_bytes=1000,
            baseline_rss_bytes=baseline * mib,
            resident_rss_bytes=(peak - 1) * mib,
        )

    rounds = [
        round_result(0.30, peak=90, baseline=50, latencies=[3.0, 4.0]),
        round_result(0.10, peak=70, baseline=45, latencies=[1.0]),
        round_result(0.20, peak=80, baseline=60, latencies=[2.0]),
    ]
    merged = merge_rounds(rounds)
    assert merged.load_s == 0.20
    assert merged.latencies_ms == [3.0, 4.0, 1.0, 2.0]
    assert merged.p50_ms_by_round == [3.5, 1.0, 2.0]
    assert merged.peak_rss_bytes_by_round == [90 * mib, 70 * mib, 80 * mib]
    assert merged.load_s_by_round == [0.30, 0.10, 0.20]
    summary = merged.summary()
    assert summary["peak_rss_bytes_by_round"] == [90 * mib, 70 * mib, 80 * mib]
    assert summary["load_s_by_round"] == [0.30, 0.10, 0.20]
    # The median-peak round's figures together: its footprint is 80 - 60, not 80 - 50.
    assert (merged.peak_rss_bytes, merged.baseline_rss_bytes) == (80 * mib, 60 * mib)
    assert merged.resident_rss_bytes == 79 * mib
    assert merged.footprint_bytes == 20 * mib
