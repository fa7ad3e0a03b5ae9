"""From model files to a built artifact in one call: what `fuse` (and `bench` without --fused) do.

from fusedinf_cc.compiler.build import build_fused
manifest = build_fused(["det=det.onnx", "cls.onnx"], Path("fused.onnx"), share_inputs="auto")
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from fusedinf_cc.artifacts.manifest import Manifest
from fusedinf_cc.backends.runtimes import ENGINE_SUFFIXES
from fusedinf_cc.backends.tensorrt.options import EngineOptions
from fusedinf_cc.common.errors import FusedInfWarning, MergeError, UserInputError
from fusedinf_cc.common.files import as_path
from fusedinf_cc.common.names import parse_model_spec
from fusedinf_cc.compiler.pipeline import FusedModel, fuse
from fusedinf_cc.compiler.runtime_support import (
    installed_kernels,
    operators_without_kernels,
    refuse_what_will_not_load,
)
from fusedinf_cc.compiler.stages import parse_stages
from fusedinf_cc.compiler.targets import BuildOptions, target_for_output
from fusedinf_cc.onnx_io.model_io import check_output_path, load_sources
from fusedinf_cc.passes.base import FusionOptions
from fusedinf_cc.passes.normalize import default_opset
from fusedinf_cc.passes.share import parse_share_spec

SHARE_MODES = ("auto", "none")


def build_fused(
    model_specs: Sequence[str | os.PathLike[str]], output: str | os.PathLike[str], **options: Any
) -> Manifest:
    """Fuse `[NAME=]PATH` models into `output` (its suffix picks the backend); return the manifest.
    `options` are `build_fused_all`'s keywords (sharing, dedup, cse, stack, opset,
    single_file, aot, parts, stages, engine)."""
    (manifest,) = build_fused_all(model_specs, [output], **options)
    return manifest


def build_fused_all(
    model_specs: Sequence[str | os.PathLike[str]],
    outputs: Sequence[str | os.PathLike[str]],
    *,
    share_input: Sequence[str] = (),
    share_inputs: str = "none",
    dedup: bool = True,
    cse: bool = True,
    stack: bool = False,
    opset: int | None = None,
    single_file: bool = False,
    aot: bool = False,
    parts: bool = True,
    stages: int | str | None = None,
    engine: EngineOptions | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> list[Manifest]:
    """Fuse once and build every output from the one fused model (a bundle's targets: .onnx,
    .ort, .engine), so the sources are loaded and the passes run once, not once per target.

    Everything cheap is checked before any model is read: the output suffixes, that their
    backends are installed, the paths, the names. `engine` holds TensorRT options, for `.engine`
    outputs only; `aot` optimises `.onnx` outputs for this CPU.
    """
    if isinstance(model_specs, str | os.PathLike) or isinstance(outputs, str | os.PathLike):
        raise UserInputError('models and outputs are lists: ["a.onnx", ...], ["fused.onnx"]')
    outputs = [as_path(output, "output") for output in outputs]
    model_specs = [str(as_path(spec, "model")) for spec in model_specs]
    check_aot(outputs, aot=aot, single_file=single_file)
    stages = parse_stages(stages)
    if stages is not None and not aot:
        raise UserInputError(
            "--stages cuts an ahead-of-time artifact, whose stages share its side file: add --aot"
        )
    targets = [target_for_output(output) for output in outputs]
    engines = [o for o in outputs if o.suffix.lower() in ENGINE_SUFFIXES]
    if engine is not None and not engines:
        raise UserInputError(
            f"{outputs[0]}: TensorRT options (--fp16, --shapes, ...) apply to .engine outputs only"
        )
    build_options = BuildOptions(
        single_file=single_file,
        aot=aot,
        parts=parts,
        stages=stages,
        engine=engine,
        progress=progress,
    )
    for target in targets:
        target.check(build_options)
    specs = [parse_model_spec(spec) for spec in model_specs]
    for output in outputs:
        check_output_path(output, [path for _, path in specs])
        check_bundle_name(output, [name for name, _ in specs])
    if share_inputs not in SHARE_MODES:
        raise UserInputError(f"--share-inputs must be auto or none, not {share_inputs!r}")
    sources = load_sources(specs)
    runs_here = any(output.suffix.lower() in (".onnx", ".ort") for output in outputs)
    options = FusionOptions(
        share_inputs="auto" if share_inputs == "auto" else "none",
        explicit_shares=tuple(parse_share_spec(text, sources) for text in share_input),
        dedup=dedup,
        cse=cse,
        stack=stack,
        opset=opset,
    )
    used = [default_opset(source.model) for source in sources]  # before fusing converts them
    lowest = min((opset for opset in used if opset > 0), default=0)
    fused = fuse(sources, options)
    kernels = installed_kernels() if runs_here else None
    if kernels is not None and opset is None:
        fused = fused_at_an_opset_that_runs(fused, specs, options, kernels, lowest)
    if runs_here:
        refuse_what_will_not_load(fused.model)
    return [
        target.build(fused, output, build_options)
        for target, output in zip(targets, outputs, strict=True)
    ]


def fused_at_an_opset_that_runs(
    fused: FusedModel,
    specs: Sequence[tuple[str, Path]],
    options: FusionOptions,
    kernels: dict[tuple[str, str], tuple[tuple[int, int], ...]],
    lowest: int,
) -> FusedModel:
    """The fused model at the models' highest opset where the runtime's `kernels` (the
    installed ONNX Runtime's) run every operator there; else fused again at the highest lower
    opset, down to `lowest` (the lowest a source uses), where they do (said in a warning);
    else as it is, for `refuse_what_will_not_load`. Only this case pays for fusing again: the
    passes change the sources they fuse, so each try reads them anew."""
    if not operators_without_kernels(fused.model, kernels):
        return fused
    highest = fused.model.opset_imports.get("", 0)
    for opset in range(highest - 1, max(lowest, 1) - 1, -1):
        try:
            tried = fuse(load_sources(specs), replace(options, opset=opset))
        except MergeError:
            continue  # a model this opset cannot express
        if not operators_without_kernels(tried.model, kernels):
            warnings.warn(
                f"ONNX Runtime here has no CPU kernel for "
                f"{', '.join(operators_without_kernels(fused.model, kernels))} at the models' "
                f"opset {highest}; fused at opset {opset}, the highest it runs every operator "
                "at (--opset chooses)",
                FusedInfWarning,
                stacklevel=3,
            )
            return tried
    return fused


def check_bundle_name(output: Path, models: Sequence[str]) -> None:
    """A bundle is named after its file (`fused.onnx`: `fused`), and a bundle of several models
    may not share its name with one of them: a request for that name could mean either."""
    if len(models) > 1 and output.stem in models:
        raise UserInputError(
            f"{output}: the bundle would be named {output.stem!r}, like one of its models; "
            f"name the file otherwise (e.g. {output.stem}-bundle{output.suffix}) or the model "
            "(NAME=MODEL.onnx)"
        )


def check_aot(outputs: Sequence[Path], *, aot: bool, single_file: bool) -> None:
    """`--aot` optimises `.onnx` outputs for this CPU, with the weights in a side file that
    loading memory-maps; refuse it where it means nothing."""
    if not aot:
        return
    if single_file:
        raise UserInputError("--aot keeps the weights in a side file; drop --single-file")
    if not any(output.suffix.lower() == ".onnx" for output in outputs):
        raise UserInputError(
            f"{outputs[0]}: --aot applies to .onnx outputs (.ort is always optimised ahead of "
            "time; TensorRT optimises every .engine)"
        )
