"""inspect: what a model or a manifest holds, as plain data the CLI renders."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import onnx_ir as ir

from fusedinf_cc.artifacts.manifest import METADATA_KEY, Manifest, manifest_path_for, read_manifest
from fusedinf_cc.common.errors import UserInputError
from fusedinf_cc.onnx_io.model_io import load_model, node_count, weight_bytes


@dataclass
class TensorInfo:
    name: str
    dtype: str
    shape: str


@dataclass
class ModelSummary:
    path: Path
    ir_version: int | None = None
    opsets: dict[str, int] = field(default_factory=dict)
    nodes: int | None = None
    parameter_bytes: int | None = None
    inputs: list[TensorInfo] = field(default_factory=list)
    outputs: list[TensorInfo] = field(default_factory=list)
    manifest: Manifest | None = None


def inspect_path(path: Path) -> ModelSummary:
    """Summarise an ONNX model (and its manifest, if fused) or a manifest JSON file."""
    if path.suffix == ".json":
        return ModelSummary(path=path, manifest=read_manifest(path))
    model = load_model(path)
    graph = model.graph
    summary = ModelSummary(
        path=path,
        ir_version=model.ir_version,
        opsets=dict(graph.opset_imports),
        nodes=node_count(model),
        parameter_bytes=weight_bytes(model),
        inputs=[_info(value) for value in graph.inputs if value.name not in graph.initializers],
        outputs=[_info(value) for value in graph.outputs],
    )
    sidecar = manifest_path_for(path)
    if sidecar.is_file():
        summary.manifest = read_manifest(sidecar)
    elif METADATA_KEY in model.metadata_props:
        try:
            summary.manifest = Manifest.from_dict(json.loads(model.metadata_props[METADATA_KEY]))
        except (json.JSONDecodeError, UserInputError):
            summary.manifest = None
    return summary


def _info(value: ir.Value) -> TensorInfo:
    shape = (
        "?"
        if value.shape is None
        else "x".join(
            str(dim) if isinstance(dim, int) else (dim.value or "?") for dim in value.shape.dims
        )
    )
    return TensorInfo(name=value.name or "", dtype=str(value.dtype or "?"), shape=shape or "scalar")
