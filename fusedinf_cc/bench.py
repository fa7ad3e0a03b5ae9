"""bench: fused vs separate sessions, each configuration measured in its own fresh process.

A fresh (spawned, not forked) process per configuration makes load time and peak memory that
configuration's own: peak RSS is the child's `VmHWM`. One request runs every model once. The
separate baseline gets every configuration we try for the fused side too (thread spinning on and
off; models run one after another or concurrently), and the report compares the fastest of each.
"""

from __future__ import annotations

import multiprocessing
import os
import platform
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from fusedinf_cc.backends.onnxruntime import OnnxRuntimeSession, import_onnxruntime
from fusedinf_cc.feeds import random_feeds
from fusedinf_cc.manifest import manifest_for_artifact
from fusedinf_cc.procmem import status_bytes
from fusedinf_cc.verify import source_path
from fusedinf_cc.versions import tool_versions

Variant = Literal["separate", "fused"]
Execution = Literal["sequential", "parallel"]


@dataclass(frozen=True)
class BenchConfig:
    variant: Variant
    spinning: bool
    execution: Execution
    threads: int = 0  # 0: ONNX Runtime's default (one per physical core)

    @property
    def label(self) -> str:
        spin = "spin" if self.spinning else "nospin"
        return f"{self.variant}/{self.execution}/{spin}"


@dataclass(frozen=True)
class BenchPlan:
    """What one child process loads and runs: model files and feeds by each model's own names."""

    models: list[tuple[str, Path]]  # (name, path); the fused plan has one entry
    feeds: list[dict[str, np.ndarray]]
    runs: int
    warmup: int


@dataclass
class VariantResult:
    config: BenchConfig
    load_s: float
    latencies_ms: list[float] = field(repr=False)
    peak_rss_bytes: int
    artifact_bytes: int

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q))

    @property
    def throughput_rps(self) -> float:
        return 1000.0 * len(self.latencies_ms) / sum(self.latencies_ms)

    def summary(self) -> dict[str, Any]:
        return {
            "config": asdict(self.config),
            "label": self.config.label,
            "load_s": self.load_s,
            "p50_ms": self.percentile(50),
            "p90_ms": self.percentile(90),
            "p99_ms": self.percentile(99),
            "throughput_rps": self.throughput_rps,
            "peak_rss_bytes": self.peak_rss_bytes,
            "artifact_bytes": self.artifact_bytes,
        }


@dataclass
class BenchReport:
    results: list[VariantResult]
    environment: dict[str, Any]

    def best(self, variant: Variant) -> VariantResult:
        return min(
            (r for r in self.results if r.config.variant == variant),
            key=lambda r: r.percentile(50),
        )

    def ratios(self) -> dict[str, float]:
        """fused / separate for the fastest configuration of each: below 1 is better."""
        fused, separate = self.best("fused").summary(), self.best("separate").summary()
        keys = ("load_s", "p50_ms", "p90_ms", "p99_ms", "peak_rss_bytes", "artifact_bytes")
        ratios = {key: fused[key] / separate[key] for key in keys}
        ratios["throughput_rps"] = fused["throughput_rps"] / separate["throughput_rps"]
        return ratios

    def to_dict(self) -> dict[str, Any]:
        return {
            "environment": self.environment,
            "configs": [r.summary() for r in self.results],
            "best": {v: self.best(v).summary() for v in ("separate", "fused")},
            "ratios_fused_over_separate": self.ratios(),
        }


def default_configs(threads: int = 0) -> list[BenchConfig]:
    return [
        BenchConfig(variant, spinning, execution, threads)
        for variant in ("separate", "fused")
        for execution in ("sequential", "parallel")
        for spinning in (True, False)
    ]


def bench_artifact(
    fused_path: Path,
    *,
    runs: int = 50,
    warmup: int = 5,
    threads: int = 0,
    shapes: dict[str, tuple[int, ...]] | None = None,
    configs: Sequence[BenchConfig] | None = None,
    on_config_done: Callable[[VariantResult], None] | None = None,
) -> BenchReport:
    """Benchmark a fused artifact against its source models (found through its manifest)."""
    manifest = manifest_for_artifact(fused_path)
    specs = OnnxRuntimeSession(fused_path).inputs
    fused_feeds = random_feeds(specs, shapes)
    sources = [(e.name, source_path(fused_path, manifest, e)) for e in manifest.models]
    separate_feeds = [
        {original: fused_feeds[name] for original, name in entry.inputs.items()}
        for entry in manifest.models
    ]
    plans: dict[Variant, BenchPlan] = {
        "fused": BenchPlan([("fused", fused_path)], [fused_feeds], runs, warmup),
        "separate": BenchPlan(sources, separate_feeds, runs, warmup),
    }
    results = []
    context = multiprocessing.get_context("spawn")
    for config in configs or default_configs(threads):
        with context.Pool(1) as pool:
            result = pool.apply(run_variant, (plans[config.variant], config))
        results.append(result)
        if on_config_done:
            on_config_done(result)
    return BenchReport(results=results, environment=_environment())


def run_variant(plan: BenchPlan, config: BenchConfig) -> VariantResult:
    """In the child: load every model, run the first request (cold load), then time requests."""
    started = time.perf_counter()
    sessions = [
        OnnxRuntimeSession(path, options=_session_options(config)) for _, path in plan.models
    ]
    pool = (
        ThreadPoolExecutor(len(sessions))
        if config.execution == "parallel" and len(sessions) > 1
        else None
    )

    def request() -> None:
        if pool is None:
            for session, feeds in zip(sessions, plan.feeds, strict=True):
                session.run(feeds)
        else:
            list(
                pool.map(lambda pair: pair[0].run(pair[1]), zip(sessions, plan.feeds, strict=True))
            )

    request()
    load_s = time.perf_counter() - started
    for _ in range(plan.warmup):
        request()
    latencies = []
    for _ in range(plan.runs):
        begin = time.perf_counter()
        request()
        latencies.append((time.perf_counter() - begin) * 1000.0)
    if pool is not None:
        pool.shutdown()
    artifact_bytes = sum(_artifact_bytes(path) for _, path in plan.models)
    return VariantResult(
        config=config,
        load_s=load_s,
        latencies_ms=latencies,
        peak_rss_bytes=status_bytes().get("VmHWM", 0),
        artifact_bytes=artifact_bytes,
    )


def _session_options(config: BenchConfig) -> dict[str, Any]:
    ort = import_onnxruntime()
    spin = "1" if config.spinning else "0"
    options: dict[str, Any] = {
        "intra_op_num_threads": config.threads,
        "config": {
            "session.intra_op.allow_spinning": spin,
            "session.inter_op.allow_spinning": spin,
        },
    }
    if config.variant == "fused":
        options["execution_mode"] = (
            ort.ExecutionMode.ORT_PARALLEL
            if config.execution == "parallel"
            else ort.ExecutionMode.ORT_SEQUENTIAL
        )
    return options


def _artifact_bytes(path: Path) -> int:
    data = path.with_name(path.name + ".data")
    return path.stat().st_size + (data.stat().st_size if data.exists() else 0)


def _environment() -> dict[str, Any]:
    return {
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "system": platform.platform(),
        "versions": tool_versions(),
        "backend": "onnxruntime-cpu",
    }
