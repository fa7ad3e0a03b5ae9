"""`serve`: every bundle of a dist folder over HTTP (KServe v2), loading on demand."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fusedinf_cc.backends.runtimes import DEFAULT_RUNTIME, check_runtime
from fusedinf_cc.cli.base import BACKEND, reports_errors
from fusedinf_cc.common.errors import BackendUnavailableError, UserInputError
from fusedinf_cc.common.sizes import parse_size


@reports_errors
def serve_command(
    dist: Annotated[Path, typer.Argument(help="A folder of built bundles (bundle build --out).")],
    budget: Annotated[
        str, typer.Option("--budget", help="Memory budget for resident bundles: 2GiB, 512MiB.")
    ] = "2GiB",
    policy: Annotated[str, typer.Option("--policy", help="Eviction policy: lru or gdsf.")] = "gdsf",
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port to listen on.")] = 8000,
    workers: Annotated[
        int, typer.Option("--workers", help="Processes; each gets budget / workers.")
    ] = 1,
    backend: BACKEND = DEFAULT_RUNTIME,
    max_body: Annotated[
        str, typer.Option("--max-body", help="Largest request body accepted.")
    ] = "64MiB",
) -> None:
    """Serve every bundle over HTTP (KServe v2 / Triton protocol), loading on demand."""
    try:
        from fusedinf_cc.serve.app import ServeConfig
        from fusedinf_cc.serve.server import serve
    except ImportError:
        from fusedinf_cc.serve import SERVE_HINT

        raise BackendUnavailableError(SERVE_HINT) from None
    if workers < 1:
        raise UserInputError("--workers must be at least 1")
    config = ServeConfig(
        dist=dist,
        budget_bytes=parse_size(budget, "--budget"),
        policy=policy,
        runtime=check_runtime(backend),
        max_body_bytes=parse_size(max_body, "--max-body"),
    )
    serve(config, host=host, port=port, workers=workers)
