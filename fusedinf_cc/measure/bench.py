"""bench: fused vs separate sessions, each configuration measured in its own fresh process.

A fresh interpreter per configuration (started with exec, never forked) makes load time and peak
memory that configuration's own: peak RSS is the child's `VmHWM`. The child, `runtime/worker`,
imports only the runtime, never the compiler. One request runs every model once. The
separate baseline gets every configuration we try for the fused side too (thread spinning on and
off; models run one after another or concurrently), and the report compares the fastest of each.
The configurations run in rounds, the two variants alternating and each round in the reverse
order of the last, so that a machine whose speed drifts during the run charges both sides alike.
With `separate_side_files` the separate side runs copies of the sources saved with the fused
artifact's weight layout (a side file once weights pass 8 MiB), so that the comparison measures
fusion alone and not the layout.
"""

from __future__ import annotations

import functools
import os
import platform
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from fusedinf_cc.artifacts.manifest import Manifest, ModelEntry, manifest_for_artifact
from fusedinf_cc.backends.runtimes import DEFAULT_RUNTIME, TENSORRT, is_engine
from fusedinf_cc.backends.sessions import open_session
from fusedinf_cc.common.errors import UserInputError
from fusedinf_cc.common.versions import tool_versions
from fusedinf_cc.compiler.build import build_fused
from fusedinf_cc.compiler.targets.tensorrt import build_source_engine
from fusedinf_cc.measure.verify import source_path
from fusedinf_cc.onnx_io.model_io import load_model, save_model_atomic
from fusedinf_cc.runtime.feeds import load_feeds, random_feeds, refusing_random_inputs, with_bounds
from fusedinf_cc.runtime.worker import (
    BenchConfig,
    ProbeJob,
    Variant,
    VariantResult,
    run_in_fresh_process,
)


@dataclass
class BenchReport:
    results: list[VariantResult]
    environment: dict[str, Any]
    separate_models: list[tuple[str, Path]] = field(default_factory=list)

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
        if fused["gpu_bytes"] and separate["gpu_bytes"]:
            ratios["gpu_bytes"] = fused["gpu_bytes"] / separate["gpu_bytes"]
        if fused["load_read_bytes"] and separate["load_read_bytes"]:  # cold loads read storage
            ratios["load_read_bytes"] = fused["load_read_bytes"] / separate["load_read_bytes"]
        return ratios

    def to_dict(self) -> dict[str, Any]:
        return {
            "environment": self.environment,
            "configs": [r.summary() for r in self.results],
            "best": {v: self.best(v).summary() for v in ("separate", "fused")},
            "ratios_fused_over_separate": self.ratios(),
            "separate_models": [{"name": n, "path": str(p)} for n, p in self.separate_models],
        }


def default_configs(threads: int = 0, runtime: str = DEFAULT_RUNTIME) -> list[BenchConfig]:
    """Every configuration tried on both sides, the variants alternating; TensorRT has no thread
    pools to spin."""
    spinning = (False,) if runtime == TENSORRT else (True, False)
    return [
        BenchConfig(variant, spin, execution, threads, runtime)
        for execution in ("sequential", "parallel")
        for spin in spinning
        for variant in ("separate", "fused")
    ]


def one_model_configs(configs: Sequence[BenchConfig]) -> list[BenchConfig]:
    """The configurations that mean something for one model on each side (`--model`): nothing
    runs beside it, so the concurrent ones repeat the sequential ones."""
    return [config for config in configs if config.execution == "sequential"]


def round_order(configs: Sequence[BenchConfig], rounds: int) -> list[BenchConfig]:
    """Every configuration once per round, each round in the reverse order of the last."""
    order: list[BenchConfig] = []
    for index in range(rounds):
        order.extend(configs if index % 2 == 0 else reversed(configs))
    return order


def merge_rounds(results: Sequence[VariantResult]) -> VariantResult:
    """One configuration's rounds as one result: every round's latencies together, the median
    load time, and the memory of the round whose peak RSS is the median. The memory figures
    come from that one round so that they still add up (a median of each figure on its own
    could mix a peak from one round with a baseline from another)."""
    by_peak = sorted(results, key=lambda r: r.peak_rss_bytes)
    memory = by_peak[(len(by_peak) - 1) // 2]
    return replace(
        memory,
        load_s=statistics.median(r.load_s for r in results),
        latencies_ms=[latency for r in results for latency in r.latencies_ms],
        imported_compiler=any(r.imported_compiler for r in results),
        p50_ms_by_round=[r.percentile(50) for r in results],
        peak_rss_bytes_by_round=[r.peak_rss_bytes for r in results],
        load_s_by_round=[r.load_s for r in results],
    )


def bench_artifact(
    fused_path: Path,
    *,
    runs: int = 50,
    warmup: int = 5,
    threads: int = 0,
    shapes: dict[str, tuple[int, ...]] | None = None,
    configs: Sequence[BenchConfig] | None = None,
    on_config_done: Callable[[VariantResult], None] | None = None,
    runtime: str = DEFAULT_RUNTIME,
    scratch: Path | None = None,
    rounds: int = 1,
    separate_side_files: bool = False,
    feeds_path: Path | None = None,
    model: str | None = None,
    cold: bool = False,
) -> BenchReport:
    """Benchmark a fused artifact against its source models (found through its manifest), each
    configuration `rounds` times in a fresh process; `cold`: each load first drops the files
    it reads from the page cache, so that it reads storage (as under a device profile).

    A fused engine is compared with engines of the source models built alone, with the same
    options, into `scratch`; so are the sources re-saved with `separate_side_files`.
    `feeds_path`: an `.npz` by fused input names, for models that refuse random inputs.
    `model`: bench one model's request instead: what the fused artifact runs for it (its part)
    against that model built alone as the same kind of artifact, in `scratch`.
    """
    if separate_side_files and is_engine(fused_path):
        raise UserInputError("--separate-side-files applies to ONNX models, not engines")
    if model is not None and separate_side_files:
        raise UserInputError("--model benches the model built alone; drop --separate-side-files")
    if (is_engine(fused_path) or separate_side_files or model) and scratch is None:
        raise UserInputError("bench needs a scratch folder for the separate models it writes")
    manifest = manifest_for_artifact(fused_path)
    session = open_session(fused_path, runtime)
    fused_feeds = (
        load_feeds(feeds_path, session.inputs)
        if feeds_path
        else random_feeds(with_bounds(session.inputs, manifest.input_bounds), shapes)
    )
    session.close()
    said = functools.partial(
        refusing_random_inputs, fused_path, "bench --fused", random=feeds_path is None
    )
    if model is not None:
        assert scratch is not None
        with said():
            return _bench_model(
                fused_path,
                manifest.model(model),
                fused_feeds,
                scratch,
                runs=runs,
                warmup=warmup,
                manifest=manifest,
                configs=one_model_configs(configs or default_configs(threads, runtime)),
                rounds=rounds,
                runtime=runtime,
                on_config_done=on_config_done,
            )
    sources = [(e.name, source_path(fused_path, manifest, e)) for e in manifest.models]
    if separate_side_files:
        sources = resave_with_side_files(sources, scratch / "separate")
    if is_engine(fused_path):
        entries = {entry.name: entry for entry in manifest.models}
        sources = [
            (name, build_source_engine(manifest, entries[name], path, scratch / f"{name}.engine"))
            for name, path in sources
        ]
    separate_feeds = [
        {original: fused_feeds[name] for original, name in entry.inputs.items()}
        for entry in manifest.models
    ]
    jobs: dict[Variant, ProbeJob] = {
        "fused": ProbeJob([("fused", fused_path)], [fused_feeds], runs, warmup, cold=cold),
        "separate": ProbeJob(sources, separate_feeds, runs, warmup, cold=cold),
    }
    with said():
        results = _run_rounds(
            jobs, list(configs or default_configs(threads, runtime)), rounds, on_config_done
        )
    return BenchReport(results=results, environment=_environment(runtime), separate_models=sources)


def _run_rounds(
    jobs: dict[Variant, ProbeJob],
    tried: list[BenchConfig],
    rounds: int,
    on_config_done: Callable[[VariantResult], None] | None,
) -> list[VariantResult]:
    by_config: dict[BenchConfig, list[VariantResult]] = {config: [] for config in tried}
    for config in round_order(tried, rounds):
        result = run_in_fresh_process(jobs[config.variant], config)
        by_config[config].append(result)
        if on_config_done:
            on_config_done(result)
    return [merge_rounds(by_config[config]) for config in tried]


def _bench_model(
    fused_path: Path,
    entry: ModelEntry,
    fused_feeds: dict[str, np.ndarray],
    scratch: Path,
    *,
    manifest: Manifest,
    runs: int,
    warmup: int,
    configs: list[BenchConfig],
    rounds: int,
    runtime: str,
    on_config_done: Callable[[VariantResult], None] | None,
) -> BenchReport:
    """One model's request in the fused artifact ("fused": its part, or the whole where the
    artifact has none) against the model built alone as the same kind of artifact."""
    alone = build_alone(fused_path, manifest, entry, scratch)
    part = None if is_engine(fused_path) else manifest.part(entry.name)
    read = part.inputs if part is not None else list(fused_feeds)
    jobs: dict[Variant, ProbeJob] = {
        "fused": ProbeJob(
            [("fused", fused_path)],
            [{name: fused_feeds[name] for name in read}],
            runs,
            warmup,
            part=entry.name,
        ),
        "separate": ProbeJob(
            [(entry.name, alone)],
            [_alone_feeds(alone, entry, fused_feeds)],
            runs,
            warmup,
        ),
    }
    results = _run_rounds(jobs, configs, rounds, on_config_done)
    environment = _environment(runtime) | {
        "model": entry.name,
        "runs_in_fused": "its part" if part is not None else "the whole fused graph",
    }
    return BenchReport(results, environment, separate_models=[(entry.name, alone)])


def _alone_feeds(
    alone: Path, entry: ModelEntry, fused_feeds: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """The same arrays by the names the model's own artifact gives its inputs (an engine's
    are the model's own; a bundle of one prefixes them as `fuse` does)."""
    if is_engine(alone):
        return {own: fused_feeds[fused] for own, fused in entry.inputs.items()}
    (own_entry,) = manifest_for_artifact(alone).models
    return {own_entry.inputs[own]: fused_feeds[fused] for own, fused in entry.inputs.items()}


def build_alone(fused_path: Path, manifest: Manifest, entry: ModelEntry, scratch: Path) -> Path:
    """The model of `entry` built on its own as the kind of artifact `fused_path` is (an
    engine with the same options; `.ort`; `--aot`; portable `.onnx`), in `scratch`."""
    source = source_path(fused_path, manifest, entry)
    scratch.mkdir(parents=True, exist_ok=True)
    if is_engine(fused_path):
        return build_source_engine(manifest, entry, source, scratch / f"{entry.name}.engine")
    aot = bool(manifest.build_options.get("aot")) and fused_path.suffix == ".onnx"
    out = scratch / f"{entry.name}{'.aot' if aot else ''}{fused_path.suffix}"
    build_fused([f"{entry.name}={source}"], out, aot=aot)
    return out


def resave_with_side_files(
    sources: Sequence[tuple[str, Path]], folder: Path
) -> list[tuple[str, Path]]:
    """Copies of the sources in the layout `fuse` gives its artifact: weights in a side file
    once they pass 8 MiB, mapped at load instead of parsed out of the protobuf."""
    folder.mkdir(parents=True, exist_ok=True)
    copies = []
    for name, path in sources:
        copy = folder / f"{name}.onnx"
        save_model_atomic(load_model(path), copy)
        copies.append((name, copy))
    return copies


def _environment(runtime: str) -> dict[str, Any]:
    versions = tool_versions()
    return {
        "machine": platform.machine(),
        "processor": versions["cpu"],
        "cpus": os.cpu_count(),
        "system": platform.platform(),
        "versions": versions,
        "backend": runtime,
    }
