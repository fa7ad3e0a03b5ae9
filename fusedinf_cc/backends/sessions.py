"""Open any artifact as a Session: the file's suffix picks the backend, `--backend` the device.

`ort-cpu`, `ort-cuda` and `ort-trt` run ONNX (and .ort) files on ONNX Runtime with that execution
provider; `.engine`/`.plan` files always run on TensorRT. Runtime processes import this, never
the compiler.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fusedinf_cc.artifacts.integrity import check_part_file
from fusedinf_cc.artifacts.manifest import PartRecord, StageRecord
from fusedinf_cc.backends.base import Session
from fusedinf_cc.backends.cpu_target import check_optimised_for_here
from fusedinf_cc.backends.onnxruntime import (
    SHARED_WEIGHTS_OPTIONS,
    OnnxRuntimeSession,
    prepacks,
    providers_for,
)
from fusedinf_cc.backends.runtimes import DEFAULT_RUNTIME, TENSORRT, check_runtime, is_engine
from fusedinf_cc.backends.tensorrt.compat import built_for
from fusedinf_cc.backends.tensorrt.runtime import TensorRTSession
from fusedinf_cc.backends.weight_pool import (
    DEFAULT_POOL,
    SharedWeight,
    WeightPool,
    artifact_weights,
)
from fusedinf_cc.common.errors import UserInputError


def check_weight_streaming(path: Path | bytes, budget: int | None) -> None:
    if budget is not None and not (isinstance(path, Path) and is_engine(path)):
        raise UserInputError(
            "--weight-streaming-budget applies to TensorRT engines built with --weight-streaming"
        )


def open_session(
    path: Path | bytes,
    runtime: str = DEFAULT_RUNTIME,
    options: Mapping[str, Any] | None = None,
    weight_streaming_budget: int | None = None,
    weight_pool: WeightPool | None = DEFAULT_POOL,
    shared_arena: bool = False,
    share_weights: bool = False,
    part: PartRecord | StageRecord | None = None,
) -> Session:
    """A loaded session for `path`; `options` are ONNX Runtime session options.
    `weight_streaming_budget` (bytes of weights kept on the GPU) is for engines built with
    --weight-streaming; TensorRT streams the rest in while the engine runs. An ahead-of-time
    artifact takes its weights from `weight_pool`, shared with every session of this process
    that holds the same weights (None: each session maps its own). `shared_arena`: activations
    on the CPU come from one arena for the whole process instead of one per session.
    `share_weights`: keep a portable artifact's weights in its mapped side file, shared between
    processes (`SHARED_WEIGHTS_OPTIONS`, at a latency cost); an ahead-of-time artifact keeps
    them there anyway, so for it this changes nothing. `part`: open that model's part of the
    artifact at `path` instead of the whole (its file beside `path`, checked against its
    digest; its weights the whole's, from the same side file and pool), or that stage of it."""
    check_runtime(runtime)
    check_weight_streaming(path, weight_streaming_budget)
    if isinstance(path, Path) and is_engine(path):
        return TensorRTSession(
            path, built_for=built_for(path), weight_streaming_budget=weight_streaming_budget
        )
    if runtime == TENSORRT:
        what = path if isinstance(path, Path) else "an ONNX model"
        raise UserInputError(
            f"--backend tensorrt runs TensorRT engines, not {what}: build one with "
            "`fusedinf-cc fuse ... -o fused.engine`"
        )
    optimised = isinstance(path, Path) and check_optimised_for_here(path, runtime) is not None
    if share_weights and not optimised:
        options = _with_shared_weights(options)
    shared_weights: list[tuple[str, SharedWeight]] = []
    model_file = path if part is None or not isinstance(path, Path) else path.with_name(part.path)
    if part is not None and isinstance(path, Path):
        check_part_file(path, part)
    if isinstance(path, Path):
        data_file, records = artifact_weights(path)
        if part is not None:
            reads = set(part.weights)
            records = tuple(record for record in records if record.name in reads)
        if prepacks(options, optimised):
            # A packed copy replaces the original; pooling it would keep both.
            records = tuple(record for record in records if not record.packable)
        if records and weight_pool is not None:
            shared_weights = weight_pool.acquire(data_file, records)
    return OnnxRuntimeSession(
        model_file,
        providers=providers_for(runtime),
        options=options,
        shared_weights=shared_weights,
        optimised=optimised,
        shared_arena=shared_arena,
    )


def _with_shared_weights(options: Mapping[str, Any] | None) -> dict[str, Any]:
    """`options` over `SHARED_WEIGHTS_OPTIONS`, their config entries merged."""
    given = dict(options or {})
    config = {**SHARED_WEIGHTS_OPTIONS["config"], **(given.get("config") or {})}
    return {**SHARED_WEIGHTS_OPTIONS, **given, "config": config}
