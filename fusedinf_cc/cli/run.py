"""`run`: one request through the loader, its outputs summarised (and saved with -o)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Annotated

import typer

from fusedinf_cc.backends.runtimes import DEFAULT_RUNTIME, check_runtime
from fusedinf_cc.cli.base import BACKEND, LOADING, console, reports_errors
from fusedinf_cc.common.files import check_output_file, staging_dir
from fusedinf_cc.common.sizes import parse_size


@reports_errors
def run_command(
    bundle: Annotated[
        Path, typer.Argument(help="A fused artifact (with its manifest) or a model.")
    ],
    inputs: Annotated[
        Path | None, typer.Option("--inputs", help=".npz of inputs (default: random ones).")
    ] = None,
    model: Annotated[
        str | None, typer.Option("--model", help="Run one model of the bundle, by its name.")
    ] = None,
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="Write the outputs to this .npz.")
    ] = None,
    backend: BACKEND = DEFAULT_RUNTIME,
    weight_streaming_budget: Annotated[
        str | None,
        typer.Option(
            "--weight-streaming-budget",
            help="Engines built with --weight-streaming: GPU bytes for weights (e.g. 256MiB).",
        ),
    ] = None,
    loading: LOADING = None,
) -> None:
    """Run one request through the loader and print each output's shape and checksum."""
    import numpy as np
    from rich.table import Table

    from fusedinf_cc.runtime.loader import run_once
    from fusedinf_cc.runtime.loading import check_loading

    if output is not None:
        check_output_file(output)
    results = run_once(
        bundle,
        model=model,
        feeds_path=inputs,
        runtime=check_runtime(backend),
        weight_streaming_budget=(
            parse_size(weight_streaming_budget, "--weight-streaming-budget")
            if weight_streaming_budget is not None
            else None
        ),
        loading=check_loading(loading),
    )
    table = Table("output", "dtype", "shape", "sum", "sha256", title=f"{model or bundle.name}")
    for name, value in results.items():
        digest = hashlib.sha256(np.ascontiguousarray(value).tobytes()).hexdigest()[:16]
        table.add_row(
            name,
            str(value.dtype),
            "x".join(map(str, value.shape)) or "scalar",
            f"{float(value.astype(np.float64).sum()):.6g}",
            digest,
        )
    console.print(table)
    if output is not None:
        with staging_dir(output) as staging:
            np.savez(staging / "outputs.npz", **results)
            os.replace(staging / "outputs.npz", output)
        console.print(f"wrote {output}")
