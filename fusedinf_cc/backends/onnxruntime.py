"""The ONNX Runtime backend: the portable default. Works with `onnxruntime` or `onnxruntime-gpu`.

Both packages install one `onnxruntime` module, so this code asks the module, not the package,
which execution providers exist. On a machine without a GPU only the CPU provider is used.
"""

from __future__ import annotations

import functools
import importlib
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from fusedinf_cc.backends.base import TensorSpec
from fusedinf_cc.backends.runtimes import CPU_PROVIDER, EXECUTION_PROVIDERS, ORT_FORMAT_SUFFIX
from fusedinf_cc.common.errors import BackendUnavailableError, UserInputError, first_line

INSTALL_HINT = (
    "install ONNX Runtime: pip install 'fusedinf-cc[cpu]' (or [gpu] on an x86_64 CUDA machine; "
    "Jetson: JetPack's onnxruntime-gpu wheel)"
)
# How a run that ONNX Runtime refused is worded: the inputs, not the model, are at fault.
RUN_REFUSED = "ONNX Runtime cannot run it on these inputs"
_LOG_FATAL_ONLY = 4
LOG_ERRORS_ONLY = 3  # ORT warns about every unused initializer of a source model

# An ahead-of-time artifact loads without prepacking: its kernels read MatMul/Gemm weights where
# they lie (mapped, pooled, shared between processes) instead of packing a private copy at load.
# Measured on the zoo: loads up to 1.9x faster, 6 MiB less private memory for
# mobilenet_v3_small, the same inference time at batch 1.
# `{"config": {PREPACKING_KEY: "0"}}` turns it back on.
PREPACKING_KEY = "session.disable_prepacking"

# ONNX Runtime memory-maps a model's external data file; those pages stay shared between every
# process that loads the file unless the runtime copies the weights. Prepacking and the layout
# optimisations above "basic" copy them. With both off, four processes serving one 59 MiB bundle
# held 260 MiB in all (PSS) instead of 570 MiB, at about twice the latency on this x86 CPU.
# For portable artifacts only: an ahead-of-time one already loads with neither, at full speed.
SHARED_WEIGHTS_OPTIONS: dict[str, Any] = {
    "graph_optimization_level_name": "ORT_ENABLE_BASIC",
    "config": {PREPACKING_KEY: "1"},
}

# ONNX Runtime's worker threads spin for a while after each run, waiting for the next. A process
# holding several sessions (the loader) has the idle sessions' threads spinning on the cores the
# running one needs: on the drifting zoo workload (2 cores, nine models resident by turns) the
# replay's p50 was 75 ms with spinning and 34 ms without, its p99 210 and 58 ms.
NO_SPINNING_OPTIONS: dict[str, Any] = {
    "config": {"session.intra_op.allow_spinning": "0", "session.inter_op.allow_spinning": "0"}
}

_SHARED_ARENA_LOCK = threading.Lock()
_shared_arena_registered = False


def register_shared_arena() -> None:
    """Give this process one CPU memory arena for the activations of every session that asks
    for it (`shared_arena`). A session's own arena keeps its peak activation memory while the
    session sits idle; with one arena, idle sessions hold none and the running one reuses what
    the last one freed. ONNX Runtime grows it on demand and never shrinks it."""
    global _shared_arena_registered
    with _SHARED_ARENA_LOCK:
        if _shared_arena_registered:
            return
        ort = import_onnxruntime()
        memory = ort.OrtMemoryInfo(
            "Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT
        )
        # max_mem, extend strategy, initial chunk, max dead bytes: ONNX Runtime's defaults.
        ort.create_and_register_allocator(memory, ort.OrtArenaCfg(0, -1, -1, -1))
        _shared_arena_registered = True


_ONNX_TYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int8)": np.int8,
    "tensor(int16)": np.int16,
    "tensor(int32)": np.int32,
    "tensor(int64)": np.int64,
    "tensor(uint8)": np.uint8,
    "tensor(uint16)": np.uint16,
    "tensor(uint32)": np.uint32,
    "tensor(uint64)": np.uint64,
    "tensor(bool)": np.bool_,
}


def import_onnxruntime() -> ModuleType:
    try:
        return importlib.import_module("onnxruntime")
    except ImportError as error:
        if _interrupted(error):  # Ctrl-C during the import, which onnxruntime re-raised
            raise KeyboardInterrupt from None
        raise BackendUnavailableError(f"ONNX Runtime is not installed; {INSTALL_HINT}") from None


@functools.lru_cache(maxsize=1)
def cpu_kernel_versions() -> dict[tuple[str, str], tuple[tuple[int, int], ...]]:
    """The installed ONNX Runtime's CPU kernels: (domain, operator) -> the operator versions
    each implements, as (first, last)."""
    import_onnxruntime()
    from onnxruntime.capi import onnxruntime_pybind11_state as state

    kernels: dict[tuple[str, str], set[tuple[int, int]]] = {}
    for kernel in state.get_all_opkernel_def():
        if kernel.provider == CPU_PROVIDER:
            key = (kernel.domain or "", kernel.op_name)
            kernels.setdefault(key, set()).add(tuple(kernel.version_range))
    return {key: tuple(sorted(ranges)) for key, ranges in kernels.items()}


def _interrupted(error: BaseException | None) -> bool:
    seen = 0
    while error is not None and seen < 16:
        if isinstance(error, KeyboardInterrupt):
            return True
        error, seen = error.__cause__ or error.__context__, seen + 1
    return False


def providers_for(runtime: str) -> tuple[str, ...]:
    """The execution providers for `--backend RUNTIME`, if this ONNX Runtime build has them.

    onnxruntime-gpu lists the CUDA provider even on a machine without a GPU, and falls back to
    the CPU with a warning when a session starts; `OnnxRuntimeSession.providers` says which ran.
    """
    if runtime not in EXECUTION_PROVIDERS:
        raise UserInputError(
            f"--backend {runtime!r}: use one of {', '.join(EXECUTION_PROVIDERS)} or tensorrt"
        )
    wanted = EXECUTION_PROVIDERS[runtime]
    available = set(import_onnxruntime().get_available_providers())
    if wanted[0] not in available:
        raise BackendUnavailableError(
            f"--backend {runtime}: this ONNX Runtime has no {wanted[0]} (it has "
            f"{', '.join(sorted(available))}); install onnxruntime-gpu in place of onnxruntime "
            "(x86_64 with CUDA), or JetPack's onnxruntime-gpu wheel on a Jetson"
        )
    return wanted


def prepacks(options: Mapping[str, Any] | None, optimised: bool) -> bool:
    """Whether a session with `options` packs weights at load: by default, all but
    ahead-of-time artifacts do."""
    setting = ((options or {}).get("config") or {}).get(PREPACKING_KEY)
    return not optimised if setting is None else str(setting) != "1"


class OnnxRuntimeSession:
    """One `InferenceSession` behind the backend-neutral `Session` interface."""

    gives_back_arena = True  # `run(..., give_back_arena=True)`

    def __init__(
        self,
        model: Path | bytes,
        *,
        providers: Sequence[str] = (CPU_PROVIDER,),
        options: Mapping[str, Any] | None = None,
        shared_weights: Sequence[tuple[str, Any]] = (),
        optimised: bool = False,
        shared_arena: bool = False,
    ):
        """`shared_weights`: initializers the session reads from memory the caller mapped
        (`weight_pool`) instead of loading them from the model's side file. `optimised`: the
        model is ONNX Runtime's own ahead-of-time output (`--aot`, `.ort`). `shared_arena`:
        CPU activations come from the process's one arena (`register_shared_arena`)."""
        ort = import_onnxruntime()
        session_options = ort.SessionOptions()
        session_options.log_severity_level = LOG_ERRORS_ONLY
        if shared_arena and providers[0] == CPU_PROVIDER:
            register_shared_arena()
            session_options.add_session_config_entry("session.use_env_allocators", "1")
            # A memory pattern makes a session's second run allocate one planned block, which
            # the shared arena then keeps beside the first run's tensors: zoo bundles held up to
            # twice their activations (two squeezenets and a transformer: 22.0 instead of
            # 11.5 MiB), at the same latency (within 4% on ten zoo bundles). Without it, every
            # run takes its tensors from the arena's free chunks.
            session_options.enable_mem_pattern = False
        if optimised or (isinstance(model, Path) and model.suffix == ORT_FORMAT_SUFFIX):
            # Optimised ahead of time: loading must not redo (or undo) that work, nor pack
            # weights into private copies.
            session_options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
            session_options.add_session_config_entry(PREPACKING_KEY, "1")
            # Run the nodes in the order the graph lists them, the order its side file holds
            # their weights (`compiler/targets/weight_order.py`), so a read running ahead of
            # the first request brings what runs next. ONNX Runtime's default order (a reverse
            # depth-first walk from the outputs) ran a fused OCR trio's last model first: 19 of
            # its 22 weight-reading nodes read behind one run before them.
            session_options.execution_order = ort.ExecutionOrder.PRIORITY_BASED
        for key, value in (options or {}).items():
            if key == "graph_optimization_level_name":
                session_options.graph_optimization_level = getattr(
                    ort.GraphOptimizationLevel, value
                )
            elif key == "config":
                for config_key, config_value in value.items():
                    session_options.add_session_config_entry(config_key, str(config_value))
            else:
                setattr(session_options, key, value)
        for name, weight in shared_weights:
            session_options.add_initializer(name, weight.value)
        self.name = "a model" if isinstance(model, bytes) else model.name
        # A failed run is reported once, as the error below, not also by ONNX Runtime's log.
        self._run_options = ort.RunOptions()
        self._run_options.log_severity_level = _LOG_FATAL_ONLY
        # A request larger than any before grows the CPU arena, which keeps what it grew; this
        # run gives it back at its end (`run(..., give_back_arena=True)`).
        self._shrinking_options = ort.RunOptions()
        self._shrinking_options.log_severity_level = _LOG_FATAL_ONLY
        self._shrinking_options.add_run_config_entry(
            "memory.enable_memory_arena_shrinkage", "cpu:0"
        )
        # ONNX Runtime reads these in place: they must outlive the session.
        self._shared_weights = list(shared_weights)
        source = model if isinstance(model, bytes) else str(model)
        try:
            self._session: Any = ort.InferenceSession(
                source, sess_options=session_options, providers=list(providers)
            )
        except Exception as error:  # onnxruntime raises its own exception types per failure
            where = "" if isinstance(model, bytes) else f"{model}: "
            raise UserInputError(
                f"{where}ONNX Runtime cannot load it ({first_line(error)})"
            ) from None
        # What ONNX Runtime really uses: a GPU provider asked for may have fallen back to the CPU.
        self.providers: list[str] = list(self._session.get_providers())
        self.inputs = [_spec(arg) for arg in self._session.get_inputs()]
        self.outputs = [_spec(arg, output=True) for arg in self._session.get_outputs()]

    def run(
        self,
        feeds: Mapping[str, np.ndarray],
        outputs: Sequence[str] | None = None,
        *,
        give_back_arena: bool = False,
    ) -> dict[str, np.ndarray]:
        """The outputs named (all by default); `give_back_arena`: the CPU arena returns what
        this run grew it by, at its end (a request larger than those it was sized for)."""
        names = list(outputs) if outputs is not None else [spec.name for spec in self.outputs]
        options = self._shrinking_options if give_back_arena else self._run_options
        try:
            results = self._session.run(names, dict(feeds), options)
        except Exception as error:  # onnxruntime raises its own types; the inputs caused it
            raise UserInputError(f"{self.name}: {RUN_REFUSED} ({first_line(error)})") from None
        return dict(zip(names, results, strict=True))

    @property
    def mapped_weights(self) -> list[Any]:
        """The `SharedWeight`s it reads in place, in the order its model lists them."""
        return [weight for _, weight in self._shared_weights]

    def close(self) -> None:
        """Drop the session (and with it ONNX Runtime's memory), then the weights it read;
        closing twice is harmless."""
        self._session = None
        self._shared_weights = []


def _spec(arg: Any, *, output: bool = False) -> TensorSpec:
    """An input's or output's spec. An output that is not a tensor (a source classifier's
    sequence of maps, which `verify` reads as its tensor) comes back as Python objects."""
    dtype = _ONNX_TYPES.get(arg.type)
    if dtype is None and output and not arg.type.startswith("tensor("):
        return TensorSpec(name=arg.name, dtype=np.dtype(object), shape=())
    if dtype is None:
        raise UserInputError(
            f"tensor {arg.name!r} has type {arg.type}, which fusedinf-cc cannot feed"
        )
    shape = tuple(dim if isinstance(dim, int) else (dim or None) for dim in (arg.shape or ()))
    return TensorSpec(name=arg.name, dtype=np.dtype(dtype), shape=shape)
