"""ONNX Runtime's targets: the portable `.onnx`, and models ONNX Runtime optimised ahead of time
(`.onnx` with `--aot`, and `.ort`) for this CPU class."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fusedinf_cc.artifacts.manifest import Manifest, manifest_path_for
from fusedinf_cc.backends.cpu_target import this_cpu
from fusedinf_cc.backends.onnxruntime import INSTALL_HINT, LOG_ERRORS_ONLY, import_onnxruntime
from fusedinf_cc.backends.runtimes import CPU_PROVIDER, ORT_FORMAT_SUFFIX
from fusedinf_cc.common.errors import BackendUnavailableError, UserInputError, first_line
from fusedinf_cc.common.files import commit_staged, external_data_name, sha256_file, staging_dir
from fusedinf_cc.compiler.parts import part_file_name, write_parts
from fusedinf_cc.compiler.pipeline import (
    FusedModel,
    embed_manifest,
    finish_manifest,
    remove_stale_parts,
    write_fused,
)
from fusedinf_cc.compiler.stages import stale_stages, write_stages
from fusedinf_cc.compiler.targets.base import BuildOptions
from fusedinf_cc.compiler.targets.weight_digests import external_weight_records
from fusedinf_cc.compiler.targets.weight_order import order_by_first_use
from fusedinf_cc.onnx_io.model_io import save_model_atomic, weight_bytes

ORT_FORMAT_MAX_BYTES = 2**31 - 2**26  # flatbuffers' 2 GiB, less room for the graph
# Tensors this small stay inside an ahead-of-time `.onnx`; larger ones go to its side file.
AOT_INLINE_MAX_BYTES = 1024


def build_ort_format(fused: FusedModel, out_path: Path, *, parts: bool = True) -> Manifest:
    """Optimise the fused model with ONNX Runtime now and keep the result as `.ort`."""
    if weight_bytes(fused.model) > ORT_FORMAT_MAX_BYTES:
        raise UserInputError(
            f"{out_path}: the ORT format holds at most 2 GiB; write .onnx for models this large"
        )
    config = {"session.save_model_format": "ORT"}
    return _optimise_ahead_of_time(fused, out_path, config, "ort", parts=parts)


def build_aot_onnx(
    fused: FusedModel, out_path: Path, *, parts: bool = True, stages: int | str | None = None
) -> Manifest:
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
    return _optimise_ahead_of_time(
        fused, out_path, config, "onnx", data_name=data_name, parts=parts, stages=stages
    )


def _optimise_ahead_of_time(
    fused: FusedModel,
    out_path: Path,
    save_config: Mapping[str, str],
    artifact_format: str,
    *,
    data_name: str | None = None,
    parts: bool = True,
    stages: int | str | None = None,
) -> Manifest:
    """Let ONNX Runtime optimise the fused model fully, for this CPU, and save what it built.
    The manifest records the CPU class, which loading checks (`cpu_target`)."""
    ort = import_onnxruntime()
    manifest = embed_manifest(fused, out_path)
    with staging_dir(out_path) as staging:
        staged_onnx = staging / "fused.onnx"
        save_model_atomic(fused.model, staged_onnx)
        _save_optimised(ort, staged_onnx, staging / out_path.name, save_config, out_path)
        staged = [staging / out_path.name]
        if data_name and (staging / data_name).is_file():
            staged.insert(0, staging / data_name)  # the side file first: see commit_staged
            order_by_first_use(staged[-1], data_name)
            manifest.weights = external_weight_records(staged[-1], data_name)
        written_parts = []
        if parts and artifact_format == "onnx":
            written_parts = write_parts(staged[-1], manifest, out_path)
        elif parts:
            written_parts = _ort_format_parts(ort, staged_onnx, manifest, out_path, save_config)
        if stages is not None:
            written_parts += write_stages(staged[-1], manifest, out_path, stages)
        manifest = finish_manifest(
            manifest,
            fused,
            out_path,
            staged,
            backend="onnxruntime",
            build_options={
                "format": artifact_format,
                "graph_optimization_level": "all",
                "aot": True,
            },
            device=this_cpu(ort.__version__).to_record(),
            staging=staging,
        )
        commit_staged(
            [*staged, *written_parts, staging / manifest_path_for(out_path).name],
            out_path.parent,
        )
    if data_name and len(staged) == 1:
        (out_path.parent / data_name).unlink(missing_ok=True)
    remove_stale_parts(out_path, manifest)
    for path in stale_stages(out_path, [stage.path for stage in manifest.stages]):
        path.unlink(missing_ok=True)
    return manifest


def _save_optimised(
    ort: Any, source: Path, target: Path, save_config: Mapping[str, str], out_path: Path
) -> None:
    """Have ONNX Runtime optimise `source` fully for this CPU and save the result at `target`."""
    options = ort.SessionOptions()
    options.log_severity_level = LOG_ERRORS_ONLY
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.optimized_model_filepath = str(target)
    for key, value in save_config.items():
        options.add_session_config_entry(key, value)
    try:
        ort.InferenceSession(str(source), options, providers=[CPU_PROVIDER])
    except Exception as error:  # onnxruntime raises its own exception types per failure
        raise UserInputError(
            f"{out_path}: ONNX Runtime cannot load the fused model to optimise it "
            f"({first_line(error)})"
        ) from None


def _ort_format_parts(
    ort: Any, staged_onnx: Path, manifest: Manifest, out_path: Path, save_config: Mapping[str, str]
) -> list[Path]:
    """Each model's part of an `.ort` artifact, itself an `.ort` file. The ORT format keeps its
    weights inline and cannot be cut from Python, so each part is cut from the fused model
    and optimised on its own: a part holds its own copy of its weights, on disk and, like the
    whole, in memory (the loader counts it)."""
    cuts = write_parts(staged_onnx, manifest, out_path.with_suffix(".onnx"))
    parts = []
    for record, cut in zip(manifest.parts, cuts, strict=True):
        part = cut.with_name(part_file_name(out_path, record.model))
        _save_optimised(ort, cut, part, save_config, out_path)
        record.path, record.weights = part.name, []
        record.sha256, record.size_bytes = sha256_file(part), part.stat().st_size
        parts.append(part)
    return parts


class OnnxRuntimeTarget:
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

    def check(self, options: BuildOptions) -> None:
        return None  # every option this target takes is checked where it is parsed

    def build(
        self, fused: FusedModel, out_path: Path, options: BuildOptions | None = None
    ) -> Manifest:
        options = options or BuildOptions()
        if out_path.suffix == ORT_FORMAT_SUFFIX:
            return build_ort_format(fused, out_path, parts=options.parts)
        if options.aot:
            return build_aot_onnx(fused, out_path, parts=options.parts, stages=options.stages)
        return write_fused(fused, out_path, single_file=options.single_file, parts=options.parts)
