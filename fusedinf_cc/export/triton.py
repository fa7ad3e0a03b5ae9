"""`export triton`: a built bundle as a Triton Inference Server model repository entry.

    model_repository/<bundle>/config.pbtxt
    model_repository/<bundle>/1/model.onnx (+ its external data file) | model.plan

The config is written in protobuf text format for Triton's `ModelConfig` message. Batching: when
every input and output has a dynamic first dim, Triton batches along it (`max_batch_size` > 0 and
dims without it); otherwise `max_batch_size` is 0 and dims are full, -1 where dynamic.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import onnx_ir as ir

from fusedinf_cc.artifacts.index import index_path, read_index
from fusedinf_cc.backends.cpu_target import cpu_built_for
from fusedinf_cc.common.errors import UserInputError
from fusedinf_cc.common.files import external_data_name, make_output_folder, staging_dir
from fusedinf_cc.onnx_io.model_io import load_model

PLATFORMS = {"onnx": "onnxruntime_onnx", "engine": "tensorrt_plan"}
MODEL_FILES = {"onnx": "model.onnx", "engine": "model.plan"}
TRITON_TYPES = {
    ir.DataType.BOOL: "TYPE_BOOL",
    ir.DataType.UINT8: "TYPE_UINT8",
    ir.DataType.UINT16: "TYPE_UINT16",
    ir.DataType.UINT32: "TYPE_UINT32",
    ir.DataType.UINT64: "TYPE_UINT64",
    ir.DataType.INT8: "TYPE_INT8",
    ir.DataType.INT16: "TYPE_INT16",
    ir.DataType.INT32: "TYPE_INT32",
    ir.DataType.INT64: "TYPE_INT64",
    ir.DataType.FLOAT16: "TYPE_FP16",
    ir.DataType.FLOAT: "TYPE_FP32",
    ir.DataType.DOUBLE: "TYPE_FP64",
    ir.DataType.BFLOAT16: "TYPE_BF16",
    ir.DataType.STRING: "TYPE_STRING",
}
DEFAULT_MAX_BATCH = 8


@dataclass(frozen=True)
class TritonTensor:
    name: str
    data_type: str
    dims: tuple[int, ...]  # -1 where dynamic


@dataclass(frozen=True)
class TritonConfig:
    name: str
    platform: str
    max_batch_size: int
    inputs: tuple[TritonTensor, ...]
    outputs: tuple[TritonTensor, ...]
    instance_kind: str

    def to_pbtxt(self) -> str:
        lines = [
            f'name: "{self.name}"',
            f'platform: "{self.platform}"',
            f"max_batch_size: {self.max_batch_size}",
        ]
        for field_name, tensors in (("input", self.inputs), ("output", self.outputs)):
            lines.append(f"{field_name} [")
            for index, tensor in enumerate(tensors):
                comma = "," if index < len(tensors) - 1 else ""
                lines += [
                    "  {",
                    f'    name: "{_escape(tensor.name)}"',
                    f"    data_type: {tensor.data_type}",
                    f"    dims: [ {', '.join(map(str, tensor.dims))} ]",
                    f"  }}{comma}",
                ]
            lines.append("]")
        lines.append(f"instance_group [ {{ count: 1, kind: {self.instance_kind} }} ]")
        return "\n".join(lines) + "\n"


def export_triton(
    bundle_dir: Path,
    repository: Path,
    *,
    target: str | None = None,
    max_batch_size: int = DEFAULT_MAX_BATCH,
    version: int = 1,
) -> Path:
    """Write `repository/<bundle>/` for Triton; returns that folder."""
    index = read_index(bundle_dir)
    if index is None:
        raise UserInputError(f"{bundle_dir}: not a built bundle (no bundle.json); run bundle build")
    artifacts = {a["target"]: a for a in index["artifacts"] if a["target"] in PLATFORMS}
    if not artifacts:
        raise UserInputError(f"{bundle_dir}: Triton serves onnx or engine targets; this has none")
    chosen = target or ("onnx" if "onnx" in artifacts else "engine")
    if chosen not in artifacts:
        raise UserInputError(
            f"{bundle_dir}: no {chosen} target in this bundle (it has {', '.join(artifacts)})"
        )
    if "onnx" not in artifacts:
        raise UserInputError(
            f"{bundle_dir}: exporting needs the bundle's onnx target too (it gives the "
            'tensors\' types and shapes); add "onnx" to its targets'
        )
    if max_batch_size < 0 or version < 1:
        raise UserInputError("--max-batch-size must be >= 0 and --version >= 1")
    onnx_artifact = index_path(bundle_dir, artifacts["onnx"]["path"])
    if chosen == "onnx" and cpu_built_for(onnx_artifact) is not None:
        raise UserInputError(
            f"{bundle_dir}: its onnx target was optimised ahead of time for one CPU class and "
            "ONNX Runtime version (aot = true); Triton runs its own ONNX Runtime, so export a "
            "bundle built with aot = false"
        )
    name = index["name"]
    config = triton_config(
        name,
        load_model(onnx_artifact),
        platform=PLATFORMS[chosen],
        max_batch_size=max_batch_size,
        on_gpu=chosen == "engine",
    )
    make_output_folder(repository)
    target_dir = repository / name
    if target_dir.exists():
        raise UserInputError(f"{target_dir} exists; remove it or export to another repository")
    with staging_dir(target_dir) as staging:
        (staging / "config.pbtxt").write_text(config.to_pbtxt(), encoding="utf-8")
        version_dir = staging / str(version)
        version_dir.mkdir()
        artifact = index_path(bundle_dir, artifacts[chosen]["path"])
        shutil.copyfile(artifact, version_dir / MODEL_FILES[chosen])
        data = artifact.with_name(external_data_name(artifact))
        if chosen == "onnx" and data.is_file():
            # The model names its weights file; it must sit beside model.onnx under that name.
            shutil.copyfile(data, version_dir / data.name)
        os.chmod(staging, 0o755)
        os.replace(staging, target_dir)
    return target_dir


def triton_config(
    name: str, model: ir.Model, *, platform: str, max_batch_size: int, on_gpu: bool
) -> TritonConfig:
    graph = model.graph
    inputs = [v for v in graph.inputs if v.name not in graph.initializers]
    tensors = [*inputs, *graph.outputs]
    batchable = max_batch_size > 0 and all(
        value.shape is not None and len(value.shape) > 0 and not isinstance(value.shape[0], int)
        for value in tensors
    )
    return TritonConfig(
        name=name,
        platform=platform,
        max_batch_size=max_batch_size if batchable else 0,
        inputs=tuple(_tensor(value, batchable) for value in inputs),
        outputs=tuple(_tensor(value, batchable) for value in graph.outputs),
        instance_kind="KIND_GPU" if on_gpu else "KIND_CPU",
    )


def _tensor(value: ir.Value, drop_batch: bool) -> TritonTensor:
    if value.dtype not in TRITON_TYPES:
        raise UserInputError(f"tensor {value.name!r}: type {value.dtype} has no Triton type")
    dims = [] if value.shape is None else [d if isinstance(d, int) else -1 for d in value.shape]
    if drop_batch:
        dims = dims[1:]
    return TritonTensor(value.name or "", TRITON_TYPES[value.dtype], tuple(dims))


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')
