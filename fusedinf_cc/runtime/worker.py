"""The child side of `bench` and of a footprint measurement: load what a `ProbeJob` names, time
its requests, report its own peak memory.

Runs in a freshly spawned process and imports only numpy, ONNX Runtime and this package's runtime
modules, never the compiler (onnx, onnx-ir), so its memory is what a deployed runtime would use.
"""

from __future__ import annotations

import gc
import importlib
import pickle
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from fusedinf_cc.artifacts.manifest import cached_manifest
from fusedinf_cc.backends.base import Session, TensorSpec
from fusedinf_cc.backends.onnxruntime import OnnxRuntimeSession, import_onnxruntime
from fusedinf_cc.backends.runtimes import DEFAULT_RUNTIME
from fusedinf_cc.backends.sessions import open_session
from fusedinf_cc.backends.tensorrt.device import device_memory_in_use
from fusedinf_cc.common.errors import FusedInfError, UserInputError
from fusedinf_cc.common.files import external_data_name
from fusedinf_cc.runtime.activations import ActivationCurve, measure_curve
from fusedinf_cc.runtime.feeds import random_feeds, with_bounds
from fusedinf_cc.runtime.pagecache import artifact_files, drop_file_pages, storage_read_bytes
from fusedinf_cc.runtime.procmem import release_freed_memory, reset_peak_rss, status_bytes

# The models apart, fused into one artifact (`bench`'s two sides), or one bundle measured on its
# own (a footprint: any bundle, a model built alone too).
Variant = Literal["separate", "fused", "bundle"]

# y = Relu(x), x: float[1, 8], opset 13: the smallest model that starts the runtime. Kept as
# bytes so that this worker never imports onnx (tests/runtime/test_worker.py checks them).
WARMUP_MODEL = bytes.fromhex(
    "0807120b6675736564696e662d63633a400a0c0a0178120179220452656c7512067761726d75705a130a017812"
    "0e0a0c080112080a0208010a02080862130a0179120e0a0c080112080a0208010a02080842040a00100d"
)
Execution = Literal["sequential", "parallel"]


@dataclass(frozen=True)
class BenchConfig:
    variant: Variant
    spinning: bool
    execution: Execution
    threads: int = 0  # 0: ONNX Runtime's default (one per physical core)
    runtime: str = DEFAULT_RUNTIME  # ort-cpu, ort-cuda, ort-trt or tensorrt

    @property
    def label(self) -> str:
        if self.runtime == "tensorrt":  # no thread pools to spin
            return f"{self.variant}/{self.execution}"
        spin = "spin" if self.spinning else "nospin"
        return f"{self.variant}/{self.execution}/{spin}"


@dataclass(frozen=True)
class ProbeJob:
    """What one child process loads and runs: model files and feeds by each model's own names."""

    models: list[tuple[str, Path]]  # (name, path); one entry for one artifact
    feeds: list[dict[str, np.ndarray]] | None  # None: random feeds from each model's inputs
    runs: int
    warmup: int
    # Start ONNX Runtime on a one-node model before the baseline, so that its one-time costs
    # (its library's pages, its environment) are not charged to the models measured.
    warm_runtime: bool = False
    # Load, run and drop the models once before the baseline: what is measured is then what
    # they add to a warm serving process (the loader's case), not first-use costs such as the
    # code pages of kernels that run for the first time.
    warm_load: bool = False
    # Activations from the process's one arena (`register_shared_arena`), as in the loader.
    shared_arena: bool = False
    # After the timed requests, open each part of the job's one artifact beside the whole and
    # measure what each adds (`VariantResult.part_bytes`): what the loader budgets a part with.
    with_parts: bool = False
    # Open only this model's part of the job's one artifact (the whole where it has none):
    # what a request for that model runs (`bench --model`).
    part: str | None = None
    # Drop the models' files from the page cache first, so that the load reads storage: what
    # a load costs on a box whose memory is the limit (`bench` under a device profile).
    cold: bool = False
    # After the timed requests, the peak its one artifact's requests add as their dynamic dims
    # grow (`activations.measure_curve`): what the loader counts a larger request by.
    activation_curve: bool = False
    # Measure the job's one artifact stage by stage, as the loader streams it, never its
    # whole: each stage opened, run on what the ones before it made, and closed in turn
    # (`VariantResult.stage_bytes`). A bundle built to be larger than memory is measured so.
    by_stages: bool = False


@dataclass
class VariantResult:
    config: BenchConfig
    load_s: float
    latencies_ms: list[float] = field(repr=False)
    peak_rss_bytes: int
    artifact_bytes: int
    imported_compiler: bool = False
    baseline_rss_bytes: int = 0  # before loading anything: the interpreter and the runtime
    # After the last request, with what the loads freed handed back to the system: what the
    # models hold once loaded (a portable load's transient weight copies gone).
    resident_rss_bytes: int = 0
    activation_bytes: int = 0  # with warm_load and shared_arena: what the shared arena kept
    gpu_bytes: int | None = None  # GPU memory in use beyond the baseline (None: no GPU runtime)
    part_bytes: dict[str, int] = field(default_factory=dict)  # with_parts: peak RSS each adds
    p50_ms_by_round: list[float] = field(default_factory=list)  # when merged from rounds
    # The spread between rounds: glibc's heap layout alone moves a process's peak by up to
    # 12 MiB between identical rounds (docs/benchmarks.md).
    peak_rss_bytes_by_round: list[int] = field(default_factory=list)
    load_s_by_round: list[float] = field(default_factory=list)
    load_read_bytes: int | None = None  # read from storage by the load and first request
    activation_curve: ActivationCurve | None = None  # with ProbeJob.activation_curve
    stage_bytes: list[int] = field(default_factory=list)  # with by_stages: peak RSS each adds

    @property
    def footprint_bytes(self) -> int:
        """Peak memory the models added to the process, load transients included."""
        return max(0, self.peak_rss_bytes - self.baseline_rss_bytes)

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
            "gpu_bytes": self.gpu_bytes,
            "rounds": max(1, len(self.p50_ms_by_round)),
            "p50_ms_by_round": self.p50_ms_by_round or [self.percentile(50)],
            "peak_rss_bytes_by_round": self.peak_rss_bytes_by_round or [self.peak_rss_bytes],
            "load_s_by_round": self.load_s_by_round or [self.load_s],
            "load_read_bytes": self.load_read_bytes,
        }


def run_variant(job: ProbeJob, config: BenchConfig) -> VariantResult:
    """In the child: load every model, run the first request (cold load), then time requests."""
    on_gpu = config.runtime != DEFAULT_RUNTIME
    if job.warm_runtime and config.runtime.startswith("ort-"):
        warm = OnnxRuntimeSession(WARMUP_MODEL, shared_arena=job.shared_arena)
        warm.run({"x": np.zeros((1, 8), np.float32)})
        warm.close()
    if job.by_stages:
        return _run_by_stages(job, config)
    activation_bytes = _load_once(job, config) if job.warm_load else 0
    if job.cold:
        drop_file_pages(file for _, path in job.models for file in artifact_files(path))
    gpu_baseline = device_memory_in_use() if on_gpu else None
    baseline = status_bytes().get("VmRSS", 0)
    read_before = storage_read_bytes()
    started = time.perf_counter()
    sessions = _open_all(job, config)
    feeds_per_model = _feeds_for(job, sessions)
    pool = (
        ThreadPoolExecutor(len(sessions))
        if config.execution == "parallel" and len(sessions) > 1
        else None
    )

    def request() -> None:
        if pool is None:
            for session, feeds in zip(sessions, feeds_per_model, strict=True):
                session.run(feeds)
        else:
            list(
                pool.map(
                    lambda pair: pair[0].run(pair[1]),
                    zip(sessions, feeds_per_model, strict=True),
                )
            )

    request()
    load_s = time.perf_counter() - started
    read_after = storage_read_bytes()
    for _ in range(job.warmup):
        request()
    latencies = []
    for _ in range(job.runs):
        begin = time.perf_counter()
        request()
        latencies.append((time.perf_counter() - begin) * 1000.0)
    gpu_bytes = None
    if gpu_baseline is not None:
        gpu_bytes = max(0, (device_memory_in_use() or 0) - gpu_baseline)
    if pool is not None:
        pool.shutdown()
    artifact_bytes = sum(_artifact_bytes(path) for _, path in job.models)
    peak_rss = status_bytes().get("VmHWM", 0)
    release_freed_memory()  # as the loader does after a portable load
    result = VariantResult(
        config=config,
        load_s=load_s,
        latencies_ms=latencies,
        peak_rss_bytes=peak_rss,
        artifact_bytes=artifact_bytes,
        imported_compiler="onnx_ir" in sys.modules,
        baseline_rss_bytes=baseline,
        resident_rss_bytes=status_bytes().get("VmRSS", 0),
        gpu_bytes=gpu_bytes,
        activation_bytes=activation_bytes,
        load_read_bytes=(
            read_after - read_before if read_after is not None and read_before is not None else None
        ),
    )
    if job.with_parts:
        result.part_bytes = _part_increments(job, config, feeds_per_model[0])
    if job.activation_curve:
        specs = _bounded_specs(job.models[0][1], sessions[0])
        result.activation_curve = measure_curve(sessions[0], feeds_per_model[0], specs)
        release_freed_memory()
    return result


def _run_by_stages(job: ProbeJob, config: BenchConfig) -> VariantResult:
    """The job's one artifact run stage by stage, twice: once to start what a first run starts
    (the arena, the kernels' pages), then measured, each stage's peak over what the process
    held before it opened. The whole is never open, so a bundle larger than this machine's
    memory is measured where it runs."""
    ((_, path),) = job.models
    manifest = cached_manifest(path)
    stages = manifest.stages if manifest is not None else []
    if not stages:
        raise UserInputError(f"{path}: built without stages; measure it whole")
    before_warm = status_bytes().get("RssAnon", 0)
    _, feeds = _stage_by_stage(path, stages, job, config, job.feeds[0] if job.feeds else None)
    gc.collect()
    release_freed_memory()
    activation_bytes = max(0, status_bytes().get("RssAnon", 0) - before_warm)
    baseline = status_bytes().get("VmRSS", 0)
    started = time.perf_counter()
    stage_bytes, _ = _stage_by_stage(path, stages, job, config, feeds)
    load_s = time.perf_counter() - started
    release_freed_memory()
    return VariantResult(
        config=config,
        load_s=load_s,
        latencies_ms=[load_s * 1000.0],
        peak_rss_bytes=baseline + max(stage_bytes),
        artifact_bytes=_artifact_bytes(path),
        imported_compiler="onnx_ir" in sys.modules,
        baseline_rss_bytes=baseline,
        resident_rss_bytes=status_bytes().get("VmRSS", 0),
        activation_bytes=activation_bytes,
        stage_bytes=stage_bytes,
    )


def _stage_by_stage(
    path: Path,
    stages: list[Any],
    job: ProbeJob,
    config: BenchConfig,
    feeds: dict[str, np.ndarray] | None,
) -> tuple[list[int], dict[str, np.ndarray]]:
    """Open, run and close each stage in order, the first on `feeds` (None: random inputs
    below the tables they index), each later one on what the ones before made. Returns the
    peak RSS each stage added over what the process held when it opened, and the feeds."""
    options = _session_options(config)
    values: dict[str, np.ndarray] = dict(feeds or {})
    added = []
    for stage in stages:
        before = status_bytes().get("VmRSS", 0)
        reset_peak_rss()
        session = open_session(
            path, config.runtime, options, shared_arena=job.shared_arena, part=stage
        )
        if feeds is None:
            feeds = random_feeds(_bounded_specs(path, session))
            values.update(feeds)
        values.update(session.run({spec.name: values[spec.name] for spec in session.inputs}))
        added.append(max(0, status_bytes().get("VmHWM", 0) - before))
        session.close()
        del session
        gc.collect()
    return added, feeds or {}


def _open_all(job: ProbeJob, config: BenchConfig) -> list[Session]:
    """A session per model of the job (or the one model's part the job names)."""
    options = _session_options(config)
    if job.part is not None:
        ((_, path),) = job.models
        manifest = cached_manifest(path)
        part = manifest.part(job.part) if manifest is not None else None
        return [
            open_session(path, config.runtime, options, shared_arena=job.shared_arena, part=part)
        ]
    return [
        open_session(path, config.runtime, options, shared_arena=job.shared_arena)
        for _, path in job.models
    ]


def _feeds_for(job: ProbeJob, sessions: list[Session]) -> list[dict[str, np.ndarray]]:
    """The job's feeds, or random ones below the tables an artifact's integer inputs index."""
    if job.feeds:
        return job.feeds
    return [
        random_feeds(_bounded_specs(path, session))
        for (_, path), session in zip(job.models, sessions, strict=True)
    ]


def _bounded_specs(path: Path, session: Session) -> list[TensorSpec]:
    """The session's inputs, with the rows each integer input indexes where its manifest
    says (random draws stay below them)."""
    manifest = cached_manifest(path)
    return with_bounds(session.inputs, manifest.input_bounds if manifest is not None else {})


def _part_increments(
    job: ProbeJob, config: BenchConfig, whole_feeds: dict[str, np.ndarray]
) -> dict[str, int]:
    """Open and run each part of the job's one artifact beside its loaded whole, one after
    another, on the whole's arrays; the peak RSS each adds, by model. With the whole loaded,
    an `--aot` part's pooled weights are already mapped: what it adds is its own (the loader
    adds the weights it maps by digest); a portable or `.ort` part adds its weight copies too."""
    ((_, path),) = job.models
    manifest = cached_manifest(path)
    options = _session_options(config)
    increments, opened = {}, []
    for part in manifest.parts if manifest is not None else ():
        before = status_bytes().get("VmRSS", 0)
        reset_peak_rss()  # where the kernel refuses, the increment is only overstated
        session = open_session(
            path, config.runtime, options, shared_arena=job.shared_arena, part=part
        )
        session.run({spec.name: whole_feeds[spec.name] for spec in session.inputs})
        increments[part.model] = max(0, status_bytes().get("VmHWM", 0) - before)
        opened.append(session)  # held, as a loader holds them
    return increments


def _load_once(job: ProbeJob, config: BenchConfig) -> int:
    """Load, run and drop the job's models; then restart the kernel's peak-RSS count. Returns
    the private memory that stayed behind, which with a shared arena is the arena the run grew
    (code pages the run touched first are file-backed, not counted)."""
    before = status_bytes().get("RssAnon", 0)
    sessions = _open_all(job, config)
    for session, feeds in zip(sessions, _feeds_for(job, sessions), strict=True):
        session.run(feeds)
        session.close()
    del sessions
    gc.collect()
    release_freed_memory()
    reset_peak_rss()
    return max(0, status_bytes().get("RssAnon", 0) - before)


def _session_options(config: BenchConfig) -> dict[str, Any] | None:
    if config.runtime == "tensorrt":
        return None
    ort = import_onnxruntime()
    spin = "1" if config.spinning else "0"
    options: dict[str, Any] = {
        "intra_op_num_threads": config.threads,
        "config": {
            "session.intra_op.allow_spinning": spin,
            "session.inter_op.allow_spinning": spin,
        },
    }
    if config.variant != "separate":  # one artifact
        options["execution_mode"] = (
            ort.ExecutionMode.ORT_PARALLEL
            if config.execution == "parallel"
            else ort.ExecutionMode.ORT_SEQUENTIAL
        )
    return options


def _artifact_bytes(path: Path) -> int:
    data = path.with_name(external_data_name(path))
    return path.stat().st_size + (data.stat().st_size if data.exists() else 0)


_USER_ERROR_MARK = "fusedinf-cc error: "


def run_in_fresh_process(job: ProbeJob, config: BenchConfig) -> VariantResult:
    """Run one configuration in a new interpreter; job and result travel as pickle files."""
    with tempfile.TemporaryDirectory(prefix="fusedinf-bench-") as scratch:
        job_path, result_path = Path(scratch) / "job.pkl", Path(scratch) / "result.pkl"
        job_path.write_bytes(pickle.dumps((job, config)))
        completed = subprocess.run(
            [sys.executable, "-m", "fusedinf_cc.runtime.worker", str(job_path), str(result_path)],
            capture_output=True,
            text=True,
            check=False,
        )
        if completed.returncode != 0:
            last = (completed.stderr.strip().splitlines() or ["no output"])[-1]
            if last.startswith(_USER_ERROR_MARK):  # the user's to fix: say it as it was said
                raise UserInputError(last.removeprefix(_USER_ERROR_MARK))
            raise RuntimeError(f"bench worker for {config.label} failed: {last}")
        result: VariantResult = pickle.loads(result_path.read_bytes())
    return result


def main() -> None:
    # Run as `-m`, this file is `__main__`; results must pickle under the module's real name.
    worker = importlib.import_module("fusedinf_cc.runtime.worker")

    job_path, result_path = Path(sys.argv[1]), Path(sys.argv[2])
    job, config = pickle.loads(job_path.read_bytes())
    try:
        result = worker.run_variant(job, config)
    except FusedInfError as error:
        print(f"{_USER_ERROR_MARK}{error}", file=sys.stderr)
        sys.exit(error.exit_code)
    result_path.write_bytes(pickle.dumps(result))


if __name__ == "__main__":
    main()
