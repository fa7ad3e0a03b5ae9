"""The TensorRT target: fused ONNX -> `.engine`, built by `backends/tensorrt/builder.py`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx_ir as ir

from fusedinf_cc.artifacts.manifest import Manifest, ModelEntry
from fusedinf_cc.backends.base import TensorSpec
from fusedinf_cc.backends.runtimes import ENGINE_SUFFIXES
from fusedinf_cc.backends.tensorrt.builder import build_engine
from fusedinf_cc.backends.tensorrt.options import EngineOptions, ShapeProfile, build_profiles
from fusedinf_cc.backends.tensorrt.runtime import INSTALL_HINT, tensorrt_version
from fusedinf_cc.common.errors import UserInputError
from fusedinf_cc.common.files import staging_dir
from fusedinf_cc.compiler.pipeline import FusedModel, embed_manifest, finish_manifest
from fusedinf_cc.compiler.targets.base import BuildOptions
from fusedinf_cc.onnx_io.model_io import save_model_atomic


def graph_input_specs(model: ir.Model) -> list[TensorSpec]:
    """The fused graph's inputs as the builder sees them (dims: int, or a name where dynamic)."""
    specs = []
    for value in model.graph.inputs:
        if value.name in model.graph.initializers:
            continue
        dims = value.shape.dims if value.shape is not None else ()
        shape = tuple(dim if isinstance(dim, int) else (dim.value or None) for dim in dims)
        dtype = value.dtype.numpy() if value.dtype is not None else np.dtype(np.float32)
        specs.append(TensorSpec(name=value.name or "", dtype=np.dtype(dtype), shape=shape))
    return specs


class TensorRTTarget:
    """`.engine`/`.plan`: a serialized TensorRT engine for this machine's GPU and TensorRT."""

    name = "tensorrt"
    suffixes = ENGINE_SUFFIXES
    install_hint = INSTALL_HINT

    def available(self) -> bool:
        return tensorrt_version() is not None

    def build(
        self, fused: FusedModel, out_path: Path, options: BuildOptions | None = None
    ) -> Manifest:
        options = options or BuildOptions()
        engine_options = options.engine or EngineOptions()
        # Profiles are checked against the fused inputs before TensorRT spends minutes.
        profiles = build_profiles(graph_input_specs(fused.model), engine_options)
        manifest = embed_manifest(fused, out_path)
        with staging_dir(out_path) as staging:
            staged_onnx = staging / "fused.onnx"
            save_model_atomic(fused.model, staged_onnx)
            built = build_engine(staged_onnx, out_path, engine_options, profiles, options.progress)
        record = engine_options.to_record()
        record["profiles"] = [
            {"input": p.name, "min": list(p.min), "opt": list(p.opt), "max": list(p.max)}
            for p in profiles
        ]
        return finish_manifest(
            manifest,
            fused,
            out_path,
            [out_path],
            backend=self.name,
            build_options={"format": "engine", **record},
            device=built.target.to_record() | {"gpu_memory_bytes": built.gpu_memory_bytes},
            footprint={
                "device_memory_bytes": built.device_memory_bytes,
                "streamable_weight_bytes": built.streamable_weight_bytes,
                "engine_bytes": built.engine_bytes,
            },
        )


def build_source_engine(
    manifest: Manifest, entry: ModelEntry, source: Path, engine_path: Path
) -> Path:
    """One source model built alone with the fused engine's options: the separate baseline
    that `bench` compares a fused engine with. Profiles follow the manifest's input map."""
    record = manifest.build_options
    if record.get("int8"):
        raise UserInputError(
            "bench cannot rebuild INT8 engines for the separate models (their calibration "
            "caches differ); bench an FP16 or FP32 engine"
        )
    options = EngineOptions(
        fp16=bool(record.get("fp16")),
        strongly_typed=bool(record.get("strongly_typed")),
        mem_pool_sizes=dict(record.get("mem_pool_sizes") or {}),
        builder_opt_level=record.get("builder_opt_level"),
        version_compatible=bool(record.get("version_compatible")),
        hardware_compatibility=str(record.get("hardware_compatibility", "none")),
        weight_streaming=bool(record.get("weight_streaming")),
    )
    original_of = {fused: original for original, fused in entry.inputs.items()}
    profiles = [
        ShapeProfile(original_of[p["input"]], tuple(p["min"]), tuple(p["opt"]), tuple(p["max"]))
        for p in record.get("profiles", [])
        if p["input"] in original_of
    ]
    build_engine(source, engine_path, options, profiles)
    return engine_path
