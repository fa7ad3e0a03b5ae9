"""The TensorRT target: fused ONNX -> `.engine`, built by `backends/tensorrt/builder.py`.

What the builder reads is the fused model as TensorRT 10 takes it; TensorRT 11, which takes
precision only from the graph, gets an FP16 copy for `--fp16`, and `--int8` only for a graph
with Q/DQ nodes (`backends/tensorrt/options.py` says why).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx_ir as ir

from fusedinf_cc.artifacts.manifest import Manifest, ModelEntry
from fusedinf_cc.backends.base import TensorSpec
from fusedinf_cc.backends.runtimes import ENGINE_SUFFIXES
from fusedinf_cc.backends.tensorrt.builder import build_engine
from fusedinf_cc.backends.tensorrt.names import parse_version
from fusedinf_cc.backends.tensorrt.options import (
    EngineOptions,
    ShapeProfile,
    build_profiles,
    check_for_tensorrt,
)
from fusedinf_cc.backends.tensorrt.runtime import INSTALL_HINT, import_tensorrt, tensorrt_version
from fusedinf_cc.common.errors import UserInputError
from fusedinf_cc.common.files import staging_dir
from fusedinf_cc.compiler.pipeline import FusedModel, embed_manifest, finish_manifest
from fusedinf_cc.compiler.targets.base import BuildOptions
from fusedinf_cc.onnx_io.model_io import load_model, save_model_atomic
from fusedinf_cc.passes.half import float16_copy, has_quantize_nodes


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

    def check(self, options: BuildOptions) -> None:
        """Before any model is read: a supported TensorRT, and options it can build."""
        import_tensorrt()  # a supported version, or one line saying which are
        version = str(tensorrt_version())
        check_for_tensorrt(options.engine or EngineOptions(), version)

    def build(
        self, fused: FusedModel, out_path: Path, options: BuildOptions | None = None
    ) -> Manifest:
        options = options or BuildOptions()
        engine_options = options.engine or EngineOptions()
        # Profiles are checked against the fused inputs before TensorRT spends minutes.
        profiles = build_profiles(graph_input_specs(fused.model), engine_options)
        version = str(tensorrt_version())
        for_builder = model_for_builder(fused.model, engine_options, version, out_path.name)
        manifest = embed_manifest(fused, out_path)
        with staging_dir(out_path) as staging:
            staged_onnx = staging / "fused.onnx"
            save_model_atomic(for_builder, staged_onnx)
            built = build_engine(staged_onnx, out_path, engine_options, profiles, options.progress)
        record = engine_options.to_record() | precision_record(engine_options, version)
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
    version = str(tensorrt_version())
    with staging_dir(engine_path) as staging:
        for_builder = source
        if parse_version(version)[0] > 10 and options.fp16:
            for_builder = staging / source.name
            model = model_for_builder(load_model(source), options, version, source.name)
            save_model_atomic(model, for_builder)
        build_engine(for_builder, engine_path, options, profiles)
    return engine_path


def model_for_builder(model: ir.Model, options: EngineOptions, version: str, name: str) -> ir.Model:
    """The graph this TensorRT should parse for these options (the module's docstring)."""
    if parse_version(version)[0] == 10:
        return model
    if options.int8 and not has_quantize_nodes(model):
        raise UserInputError(
            f"{name}: --int8 on TensorRT {version} takes its scales from Q/DQ nodes, and the "
            "fused graph has none; quantize the sources first (NVIDIA's Model Optimizer, "
            "`python -m modelopt.onnx.quantization`, or ONNX Runtime's quantize_static with "
            "QuantFormat.QDQ), then fuse them"
        )
    return float16_copy(model) if options.fp16 else model


def precision_record(options: EngineOptions, version: str) -> dict[str, str]:
    """How the engine's precision was chosen, for the manifest (`verify` reads `fp16`)."""
    if parse_version(version)[0] > 10:
        return {"precision_from": "fp16 graph" if options.fp16 else "graph types"}
    if options.fp16 or options.int8:
        return {"precision_from": "builder flags"}
    return {"precision_from": "graph types" if options.strongly_typed else "fp32"}
