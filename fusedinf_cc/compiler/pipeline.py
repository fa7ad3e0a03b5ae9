"""Fuse N source models into one multi-input, multi-output ONNX model plus its manifest.

The pipeline is declared once, in `PIPELINE`; `fuse` runs it and measures every pass, and
`write_fused` writes the model and its manifest atomically.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import onnx_ir as ir

from fusedinf_cc.artifacts.manifest import (
    METADATA_KEY,
    Artifact,
    Manifest,
    ModelEntry,
    PassRecord,
    manifest_path_for,
)
from fusedinf_cc.common.errors import UserInputError
from fusedinf_cc.common.files import (
    commit_staged,
    external_data_name,
    sha256_file,
    staging_dir,
    write_text_atomic,
)
from fusedinf_cc.common.versions import tool_versions
from fusedinf_cc.compiler.parts import stale_parts, write_parts
from fusedinf_cc.onnx_io.index_bounds import index_bounds
from fusedinf_cc.onnx_io.model_io import (
    SourceModel,
    node_count,
    save_model_atomic,
    weight_bytes,
)
from fusedinf_cc.passes.base import FusionOptions, FusionPass, FusionState, PassContext
from fusedinf_cc.passes.cleanup import Cleanup
from fusedinf_cc.passes.cse import Cse
from fusedinf_cc.passes.dedup import Dedup
from fusedinf_cc.passes.merge import Merge
from fusedinf_cc.passes.normalize import Normalize
from fusedinf_cc.passes.prefix import Prefix
from fusedinf_cc.passes.share import Share
from fusedinf_cc.passes.stack import Stack

PIPELINE: tuple[FusionPass, ...] = (
    Normalize(),
    Prefix(),
    Merge(),
    Share(),
    Dedup(),
    Cse(),
    Stack(),
    Cleanup(),
)


@dataclass
class FusedModel:
    """The fused graph and the manifest that maps it back to its source models."""

    model: ir.Model
    manifest: Manifest


def pipeline_for(options: FusionOptions) -> list[FusionPass]:
    """`PIPELINE` less the optional passes the user switched off (or did not switch on)."""
    skipped = {"dedup"} if not options.dedup else set()
    if not options.cse:
        skipped.add("cse")
    if not options.stack:
        skipped.add("stack")
    return [fusion_pass for fusion_pass in PIPELINE if fusion_pass.name not in skipped]


def fuse(sources: Sequence[SourceModel], options: FusionOptions | None = None) -> FusedModel:
    """Run the pipeline over the source models (which it consumes: their graphs are moved)."""
    options = options or FusionOptions()
    members = list(sources)
    state = FusionState(members=members)
    ctx = PassContext.for_sources(members, options)
    records = []
    for fusion_pass in pipeline_for(options):
        nodes, initializers, weights = _measure(state)
        started = time.perf_counter()
        outcome = fusion_pass.run(state, ctx)
        seconds = time.perf_counter() - started
        nodes_after, initializers_after, weights_after = _measure(state)
        records.append(
            PassRecord(
                name=fusion_pass.name,
                changed=outcome.changed,
                detail=outcome.detail,
                nodes_before=nodes,
                nodes_after=nodes_after,
                initializers_before=initializers,
                initializers_after=initializers_after,
                weight_bytes_before=weights,
                weight_bytes_after=weights_after,
                seconds=seconds,
            )
        )
    fused = state.require_fused()
    manifest = Manifest(
        models=[
            ModelEntry(
                name=member.name,
                source=str(member.path.resolve()),
                sha256=member.sha256,
                inputs=ctx.inputs[member.name],
                outputs=ctx.outputs[member.name],
            )
            for member in members
        ],
        shared_inputs=ctx.shared_inputs,
        passes=records,
        opset=ctx.opset,
        ir_version=ctx.ir_version,
        input_bounds=index_bounds(fused.graph),
    )
    return FusedModel(model=fused, manifest=manifest)


def _measure(state: FusionState) -> tuple[int, int, int]:
    models = state.models()
    return (
        sum(node_count(model) for model in models),
        sum(len(graph.initializers) for model in models for graph in model.graphs()),
        sum(weight_bytes(model) for model in models),
    )


def write_fused(
    fused: FusedModel, out_path: Path, *, single_file: bool = False, parts: bool = True
) -> Manifest:
    """Write the fused ONNX model and `<out>.manifest.json`; return the manifest as written.

    Weights go to `<out>.data` once they are large enough for that to pay off at load time (see
    `model_io.EXTERNAL_DATA_THRESHOLD_BYTES`), unless `single_file` asks for one file. With
    `parts` (and not one file), each model's part is written beside it (`compiler/parts.py`).
    """
    manifest = embed_manifest(fused, out_path)
    with staging_dir(out_path) as staging:
        staged = save_model_atomic(
            fused.model, out_path, external_data=False if single_file else None, staging=staging
        )
        # One file was asked for: no parts beside it (a model's request then runs the whole).
        written_parts = (
            write_parts(staged[-1], manifest, out_path) if parts and not single_file else []
        )
        manifest = finish_manifest(
            manifest, fused, out_path, staged, backend="onnxruntime", staging=staging
        )
        commit_staged(
            [*staged, *written_parts, staging / manifest_path_for(out_path).name],
            out_path.parent,
        )
    if len(staged) == 1:  # one file now: a side file of an earlier build is no longer its own
        out_path.with_name(external_data_name(out_path)).unlink(missing_ok=True)
    remove_stale_parts(out_path, manifest)
    return manifest


def remove_stale_parts(out_path: Path, manifest: Manifest) -> None:
    """Part files an earlier build left at `out_path` that this build did not write."""
    for path in stale_parts(out_path, (part.path for part in manifest.parts)):
        path.unlink(missing_ok=True)


def embed_manifest(fused: FusedModel, out_path: Path) -> Manifest:
    """The manifest for an artifact at `out_path`, also embedded in the model's metadata.

    Source paths are stored relative to the output's folder, so a bundle moved together with its
    sources still verifies. The embedded copy leaves out what changes from run to run, so the same
    sources and options give a byte-identical model.
    """
    out_folder = out_path.resolve().parent
    manifest = dataclasses.replace(
        fused.manifest,
        models=[
            dataclasses.replace(entry, source=os.path.relpath(entry.source, out_folder))
            for entry in fused.manifest.models
        ],
        parts=[],  # each artifact's own: one fused model may be built into several
    )
    fused.model.metadata_props[METADATA_KEY] = manifest.to_json(reproducible=True)
    return manifest


def finish_manifest(
    manifest: Manifest,
    fused: FusedModel,
    out_path: Path,
    written: list[Path],
    *,
    backend: str,
    build_options: dict[str, object] | None = None,
    device: dict[str, object] | None = None,
    footprint: dict[str, int] | None = None,
    staging: Path | None = None,
) -> Manifest:
    """Record the built artifact (hash, size, tools, the device it is for) and write
    `<out>.manifest.json` beside it; with `staging`, into that folder, for the caller to rename
    with the files `written` there (which are then staged, not yet at `out_path`)."""
    model_file = written[-1] if staging is not None else out_path
    side_file = model_file.with_name(external_data_name(out_path)) if len(written) > 1 else None
    manifest.artifact = Artifact(
        path=out_path.name,
        sha256=sha256_file(model_file),
        size_bytes=sum(path.stat().st_size for path in written),
        backend=backend,
        external_data=side_file.name if side_file else None,
        external_data_sha256=sha256_file(side_file) if side_file else None,
    )
    manifest.build_options = dict(build_options or {})
    manifest.tools = tool_versions()
    manifest.footprint = {"weight_bytes": weight_bytes(fused.model), **(footprint or {})}
    manifest.device = dict(device or {})
    if staging is not None:
        try:
            (staging / manifest_path_for(out_path).name).write_text(manifest.to_json())
        except OSError as error:
            raise UserInputError(
                f"{out_path.parent}: cannot write the manifest there ({error.strerror})"
            ) from None
    else:
        write_text_atomic(manifest_path_for(out_path), manifest.to_json())
    return manifest
