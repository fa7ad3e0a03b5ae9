"""`fuse`, `check` and `inspect`: the compiler's commands."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from fusedinf_cc.backends.runtimes import TENSORRT
from fusedinf_cc.cli.base import (
    AOT,
    NO_CSE,
    NO_DEDUP,
    NO_PARTS,
    OPSET,
    SHARE_INPUT,
    SHARE_INPUTS,
    SINGLE_FILE,
    STACK,
    STAGES,
    console,
    error_console,
    fusion_options,
    progress_bar,
    reports_errors,
)
from fusedinf_cc.common.errors import UserInputError


@reports_errors
def fuse(
    models: Annotated[
        list[str], typer.Argument(help="[NAME=]MODEL.onnx; NAME defaults to the stem.")
    ],
    output: Annotated[Path, typer.Option("-o", "--output", help="Fused model to write (.onnx).")],
    share_input: SHARE_INPUT = None,
    share_inputs: SHARE_INPUTS = "none",
    no_dedup: NO_DEDUP = False,
    no_cse: NO_CSE = False,
    stack: STACK = False,
    single_file: SINGLE_FILE = False,
    aot: AOT = False,
    no_parts: NO_PARTS = False,
    stages: STAGES = None,
    opset: OPSET = None,
    explain: Annotated[bool, typer.Option("--explain", help="Print what every pass did.")] = False,
    fp16: Annotated[
        bool, typer.Option("--fp16", help="[engine] FP16 (TensorRT 11: the graph made FP16).")
    ] = False,
    int8: Annotated[
        bool, typer.Option("--int8", help="[engine] INT8 (10: --calib-cache; 11: Q/DQ nodes).")
    ] = False,
    calib_cache: Annotated[
        Path | None, typer.Option("--calib-cache", help="[engine] INT8 calibration cache.")
    ] = None,
    strongly_typed: Annotated[
        bool, typer.Option("--strongly-typed", help="[engine] Precisions from the model's types.")
    ] = False,
    mem_pool_size: Annotated[
        str | None,
        typer.Option("--mem-pool-size", help="[engine] POOL:SIZE,... e.g. workspace:2GiB."),
    ] = None,
    shapes: Annotated[
        str | None, typer.Option("--shapes", help="[engine] Fixed dynamic dims: NAME:1x3x224x224.")
    ] = None,
    min_shapes: Annotated[
        str | None, typer.Option("--min-shapes", help="[engine] Profile minimum per input.")
    ] = None,
    opt_shapes: Annotated[
        str | None, typer.Option("--opt-shapes", help="[engine] Profile optimum per input.")
    ] = None,
    max_shapes: Annotated[
        str | None, typer.Option("--max-shapes", help="[engine] Profile maximum per input.")
    ] = None,
    timing_cache: Annotated[
        Path | None, typer.Option("--timing-cache", help="[engine] Read and update this cache.")
    ] = None,
    builder_opt_level: Annotated[
        int | None, typer.Option("--builder-opt-level", help="[engine] 0-5 (default 3).")
    ] = None,
    version_compatible: Annotated[
        bool,
        typer.Option("--version-compatible", help="[engine] Runs on later TensorRT of its major."),
    ] = False,
    hardware_compatibility: Annotated[
        str,
        typer.Option(
            "--hardware-compatibility", help="[engine] none, ampere+ or same-compute-capability."
        ),
    ] = "none",
    weight_streaming: Annotated[
        bool,
        typer.Option(
            "--weight-streaming", help="[engine] Stream weights (10: needs --strongly-typed)."
        ),
    ] = False,
) -> None:
    """Fuse MODELS into one multi-input, multi-output model and write its manifest beside it.

    The output's suffix picks the backend: .onnx or .ort for ONNX Runtime, .engine for TensorRT
    (the [engine] options use trtexec's names).
    """
    from fusedinf_cc.backends.tensorrt.options import parse_engine_options
    from fusedinf_cc.cli.tables import pass_table
    from fusedinf_cc.common.sizes import format_bytes
    from fusedinf_cc.compiler.build import build_fused

    engine_flags = {
        "fp16": fp16,
        "int8": int8,
        "calib_cache": calib_cache,
        "strongly_typed": strongly_typed,
        "mem_pool_size": mem_pool_size,
        "shapes": shapes,
        "min_shapes": min_shapes,
        "opt_shapes": opt_shapes,
        "max_shapes": max_shapes,
        "timing_cache": timing_cache,
        "builder_opt_level": builder_opt_level,
        "version_compatible": version_compatible,
        "hardware_compatibility": hardware_compatibility,
        "weight_streaming": weight_streaming,
    }
    # Every flag at its default (None, False, "none") means no engine options were given.
    given = any(
        not (value is None or value is False or value == "none") for value in engine_flags.values()
    )
    engine = parse_engine_options(**engine_flags) if given else None
    with progress_bar() as progress:
        tasks: dict[str, Any] = {}

        def on_phase(phase: str, done: int, total: int) -> None:
            if phase not in tasks:
                tasks[phase] = progress.add_task(phase, total=max(total, 1))
            progress.update(tasks[phase], completed=done)

        manifest = build_fused(
            models,
            output,
            engine=engine,
            progress=on_phase,
            **fusion_options(
                share_input,
                share_inputs,
                no_dedup,
                no_cse,
                stack,
                single_file,
                aot,
                no_parts,
                opset,
                stages,
            ),
        )
    if explain:
        console.print(pass_table(manifest.passes))
    elif stack:  # what --stack did, and why the rest was left as merged
        for record in manifest.passes:
            if record.name == "stack":
                console.print(f"--stack: {record.detail}", highlight=False)
    assert manifest.artifact is not None
    console.print(
        f"wrote {output} ({format_bytes(manifest.artifact.size_bytes)}, "
        f"{counted(len(manifest.models), 'model')}, "
        f"{counted(sum(len(m.outputs) for m in manifest.models), 'output')}) and "
        f"{output.name}.manifest.json",
        highlight=False,
    )


def counted(count: int, noun: str) -> str:
    """`1 model`, `2 models`."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


@reports_errors
def check_command(
    model: Annotated[Path, typer.Argument(help="An ONNX model (fused or not).")],
    target: Annotated[str, typer.Option("--target", help="What to check for: tensorrt.")],
) -> None:
    """Find what a target will reject before a build: operators, attributes, types, profiles.

    Exit 1 when something would fail the build; warnings and profile notes alone exit 0.
    """
    from rich.table import Table

    from fusedinf_cc.compiler.tensorrt_support import check_tensorrt_support

    if target != TENSORRT:
        raise UserInputError(f"--target {target!r}: only tensorrt can be checked")
    report = check_tensorrt_support(model)
    low, high = report.opset_range
    title = (
        f"{model.name} against TensorRT {report.tensorrt}'s ONNX parser (opsets {low}-{high}), "
        f"{report.nodes} nodes"
    )
    if report.findings:
        table = Table("severity", "node", "op", "finding", title=title)
        for finding in report.findings:
            style = {"error": "red", "warning": "yellow"}.get(finding.severity, "cyan")
            table.add_row(
                f"[{style}]{finding.severity}[/]", finding.node, finding.op, finding.message
            )
        console.print(table)
    else:
        console.print(title, highlight=False)
    if not report.ok:
        error_console.print(
            f"[bold red]unsupported:[/] {len(report.errors)} findings would fail a TensorRT build",
            highlight=False,
        )
        raise typer.Exit(1)
    console.print("nothing TensorRT would reject")


@reports_errors
def inspect_command(
    path: Annotated[Path, typer.Argument(help="An ONNX model or a .manifest.json.")],
) -> None:
    """Show inputs, outputs, opsets, parameter bytes and, for fused models, the per-model map."""
    from fusedinf_cc.cli.tables import summary_lines
    from fusedinf_cc.compiler.inspection import inspect_path

    for line in summary_lines(inspect_path(path)):
        console.print(line)
