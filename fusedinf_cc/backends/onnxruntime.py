"""The ONNX Runtime backend: the portable default. Works with `onnxruntime` or `onnxruntime-gpu`.

Both packages install one `onnxruntime` module, so this code asks the module, not the package,
which execution providers exist. On a machine without a GPU only the CPU provider is used.
"""

from __future__ import annotations

import importlib
import os
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np

from fusedinf_cc.backends.base import BuildOptions, Session, TensorSpec
from fusedinf_cc.errors import BackendUnavailableError, UserInputError, first_line
from fusedinf_cc.files import external_data_name, staging_dir

if TYPE_CHECKING:
    from fusedinf_cc.manifest import Manifest
    from fusedinf_cc.pipeline import FusedModel
    from fusedinf_cc.weight_pool import SharedWeight

INSTALL_HINT = (
    "install ONNX Runtime: pip install 'fusedinf-cc[cpu]' (or [gpu] on an x86_64 CUDA machine; "
    "Jetson: JetPack's onnxruntime-gpu wheel)"
)
CPU_PROVIDER = "CPUExecutionProvider"
CUDA_PROVIDER = "CUDAExecutionProvider"
TENSORRT_PROVIDER = "TensorrtExecutionProvider"
# `--backend` names -> the providers ONNX Runtime tries, in order; the CPU takes what is left.
EXECUTION_PROVIDERS: dict[str, tuple[str, ...]] = {
    "ort-cpu": (CPU_PROVIDER,),
    "ort-cuda": (CUDA_PROVIDER, CPU_PROVIDER),
    "ort-trt": (TENSORRT_PROVIDER, CUDA_PROVIDER, CPU_PROVIDER),
}
ORT_FORMAT_SUFFIX = ".ort"
ORT_FORMAT_MAX_BYTES = 2**31 - 2**26  # flatbuffers' 2 GiB, less room for the graph
# Tensors this small stay inside an ahead-of-time `.onnx`; larger ones go to its side file.
AOT_INLINE_MAX_BYTES = 1024
_LOG_ERRORS_ONLY = 3  # ORT warns about every unused initializer of a source model

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
    except ImportError:
        raise BackendUnavailableError(f"ONNX Runtime is not installed; {INSTALL_HINT}") from None


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

    def __init__(
        self,
        model: Path | bytes,
        *,
        providers: Sequence[str] = (CPU_PROVIDER,),
        options: Mapping[str, Any] | None = None,
        shared_weights: Sequence[tuple[str, SharedWeight]] = (),
        optimised: bool = False,
        shared_arena: bool = False,
    ):
        """`shared_weights`: initializers the session reads from memory the caller mapped
        (`weight_pool`) instead of loading them from the model's side file. `optimised`: the
        model is ONNX Runtime's own ahead-of-time output (`--aot`, `.ort`). `shared_arena`:
        CPU activations come from the process's one arena (`register_shared_arena`)."""
        ort = import_onnxruntime()
        session_options = ort.SessionOptions()
        session_options.log_severity_level = _LOG_ERRORS_ONLY
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
        self.outputs = [_spec(arg) for arg in self._session.get_outputs()]

    def run(
        self, feeds: Mapping[str, np.ndarray], outputs: Sequence[str] | None = None
    ) -> dict[str, np.ndarray]:
        names = list(outputs) if outputs is not None else [spec.name for spec in self.outputs]
        results = self._session.run(names, dict(feeds))
        return dict(zip(names, results, strict=True))

    def close(self) -> None:
        """Drop the session (and with it ONNX Runtime's memory), then the weights it read;
        closing twice is harmless."""
        self._session = None
        self._shared_weights = []


def build_ort_format(fused: FusedModel, out_path: Path) -> Manifest:
    """Optimise the fused model with ONNX Runtime now and keep the result as `.ort`."""
    from fusedinf_cc.model_io import weight_bytes

    if weight_bytes(fused.model) > ORT_FORMAT_MAX_BYTES:
        raise UserInputError(
            f"{out_path}: the ORT format holds at most 2 GiB; write .onnx for models this large"
        )
    return _optimise_ahead_of_time(fused, out_path, {"session.save_model_format": "ORT"}, "ort")


def build_aot_onnx(fused: FusedModel, out_path: Path) -> Manifest:
    """Optimise the fused model with ONNX Runtime now and keep the result as ONNX, its weights
    (reordered for this CPU's kernels) in `<out>.data`.

    Loading then does no graph work and copies no weight: ONNX Runtime memory-maps the side file
    and its kernels read the weights where they lie, so processes serving one artifact share one
    copy. The ORT format cannot do that from Python, and copies its inline weights at load.
    Measured on a 96 MiB bundle: session creation 10-14 ms instead of 170-190 ms.
    """
    data_name = external_data_name(out_path)
    config = {
        "session.optimized_model_external_initializers_file_name": data_name,
        "session.optimized_model_external_initializers_min_size_in_bytes": str(
            AOT_INLINE_MAX_BYTES
        ),
    }
    return _optimise_ahead_of_time(fused, out_path, config, "onnx", data_name=data_name)


def _optimise_ahead_of_time(
    fused: FusedModel,
    out_path: Path,
    save_config: Mapping[str, str],
    artifact_format: str,
    *,
    data_name: str | None = None,
) -> Manifest:
    """Let ONNX Runtime optimise the fused model fully, for this CPU, and save what it built.
    The manifest records the CPU class, which loading checks (`cpu_target`)."""
    from fusedinf_cc.backends.cpu_target import this_cpu
    from fusedinf_cc.model_io import save_model_atomic
    from fusedinf_cc.pipeline import embed_manifest, finish_manifest

    ort = import_onnxruntime()
    manifest = embed_manifest(fused, out_path)
    with staging_dir(out_path) as staging:
        staged_onnx = staging / "fused.onnx"
        save_model_atomic(fused.model, staged_onnx)
        options = ort.SessionOptions()
        options.log_severity_level = _LOG_ERRORS_ONLY
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.optimized_model_filepath = str(staging / out_path.name)
        for key, value in save_config.items():
            options.add_session_config_entry(key, value)
        try:
            ort.InferenceSession(str(staged_onnx), options, providers=[CPU_PROVIDER])
        except Exception as error:  # onnxruntime raises its own exception types per failure
            raise UserInputError(
                f"{out_path}: ONNX Runtime cannot load the fused model to optimise it "
                f"({first_line(error)})"
            ) from None
        written = [out_path]
        if data_name and (staging / data_name).is_file():
            written.insert(0, out_path.parent / data_name)
        elif data_name:
            (out_path.parent / data_name).unlink(missing_ok=True)
        for target in written:  # the side file first: the model never points at a missing one
            os.replace(staging / target.name, target)
    if len(written) > 1:
        from fusedinf_cc.weight_records import external_weight_records

        records = external_weight_records(out_path, written[0].name)
        manifest.weights = records
    return finish_manifest(
        manifest,
        fused,
        out_path,
        written,
        backend="onnxruntime",
        build_options={"format": artifact_format, "graph_optimization_level": "all", "aot": True},
        device=this_cpu(ort.__version__).to_record(),
    )


def _spec(arg: Any) -> TensorSpec:
    dtype = _ONNX_TYPES.get(arg.type)
    if dtype is None:
        raise UserInputError(
            f"tensor {arg.name!r} has type {arg.type}, which fusedinf-cc cannot feed"
        )
    shape = tuple(dim if isinstance(dim, int) else (dim or None) for dim in (arg.shape or ()))
    return TensorSpec(name=arg.name, dtype=np.dtype(dtype), shape=shape)


class OnnxRuntimeBackend:
    """`.onnx`: the fused model itself, portable, which ONNX Runtime optimises when it loads;
    with `aot`, the model ONNX Runtime optimised ahead of time, its weights memory-mapped at load.
    `.ort`: the model optimised ahead of time in ONNX Runtime's own format. Full optimisation
    uses layouts of this CPU's instruction set, so those manifests record the CPU class."""

    name = "onnxruntime"
    suffixes = (".onnx", ORT_FORMAT_SUFFIX)
    install_hint = INSTALL_HINT

    def available(self) -> bool:
        try:
            import_onnxruntime()
        except BackendUnavailableError:
            return False
        return True

    def build(
        self, fused: FusedModel, out_path: Path, options: BuildOptions | None = None
    ) -> Manifest:
        from fusedinf_cc.pipeline import write_fused

        options = options or BuildOptions()
        if out_path.suffix == ORT_FORMAT_SUFFIX:
            return build_ort_format(fused, out_path)
        if options.aot:
            return build_aot_onnx(fused, out_path)
        return write_fused(fused, out_path, single_file=options.single_file)

    def load(self, artifact_path: Path) -> Session:
        from fusedinf_cc.runtimes import open_session

        return open_session(artifact_path)
