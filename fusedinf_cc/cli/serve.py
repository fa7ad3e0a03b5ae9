"""`serve`: every bundle of a dist folder over HTTP (KServe v2), loading on demand."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fusedinf_cc.backends.runtimes import DEFAULT_RUNTIME, check_runtime
from fusedinf_cc.cli.base import (
    BACKEND,
    KEEP_PAGE_CACHE,
    LOADING,
    error_console,
    reports_errors,
)
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
    max_json_body: Annotated[
        str,
        typer.Option(
            "--max-json-body",
            help="Largest JSON part of a request (JSON tensors take ~15x their text to parse).",
        ),
    ] = "8MiB",
    max_inflight: Annotated[
        str,
        typer.Option(
            "--max-inflight",
            help="Memory the requests being decoded may take at once (503 past it).",
        ),
    ] = "512MiB",
    header_timeout: Annotated[
        float,
        typer.Option("--header-timeout", help="Seconds a client has to send its request head."),
    ] = 10.0,
    body_timeout: Annotated[
        float, typer.Option("--body-timeout", help="Seconds a request body may stall (408).")
    ] = 30.0,
    max_connections: Annotated[
        int | None,
        typer.Option(
            "--max-connections",
            help="Open connections at most (default: from the file-descriptor limit).",
        ),
    ] = None,
    on: Annotated[
        str,
        typer.Option(
            "--on", help="uvicorn (this process) or ray (Ray Serve replicas, docs/ray.md)."
        ),
    ] = "uvicorn",
    engine: Annotated[
        str | None,
        typer.Option("--engine", hidden=True, help="The former name of --on."),
    ] = None,
    keep_page_cache: KEEP_PAGE_CACHE = False,
    loading: LOADING = None,
    prefetch: Annotated[
        bool,
        typer.Option(
            "--prefetch",
            help="While a request computes, read the bundle that has usually come next into "
            "the page cache (where it is not resident).",
        ),
    ] = False,
    replicas: Annotated[
        int, typer.Option("--replicas", help="[ray] Replicas, each with --budget of its own.")
    ] = 1,
    max_replicas: Annotated[
        int | None,
        typer.Option("--max-replicas", help="[ray] Autoscale from --replicas up to this many."),
    ] = None,
    replica_cpus: Annotated[
        float | None, typer.Option("--replica-cpus", help="[ray] CPUs Ray reserves per replica.")
    ] = None,
    ray_address: Annotated[
        str | None,
        typer.Option("--ray-address", help="[ray] Join this cluster (default: start one here)."),
    ] = None,
) -> None:
    """Serve every bundle over HTTP (KServe v2 / Triton protocol), loading on demand."""
    from fusedinf_cc.runtime.budget import parse_budget
    from fusedinf_cc.runtime.loading import check_loading

    try:
        from fusedinf_cc.serve.app import ServeConfig
        from fusedinf_cc.serve.server import serve
    except ImportError:
        from fusedinf_cc.serve import SERVE_HINT

        raise BackendUnavailableError(SERVE_HINT) from None
    if engine is not None:
        error_console.print(
            "warning: --engine is now --on; --engine goes in the next release", highlight=False
        )
        on = engine
    if workers < 1:
        raise UserInputError("--workers must be at least 1")
    ray_given = replicas != 1 or any(
        value is not None for value in (max_replicas, replica_cpus, ray_address)
    )
    if on not in ("uvicorn", "ray"):
        raise UserInputError(f"--on {on!r}: use uvicorn or ray")
    if on == "uvicorn" and ray_given:
        raise UserInputError(
            "--replicas, --max-replicas, --replica-cpus, --ray-address need --on ray"
        )
    if on == "ray":
        if workers != 1:
            raise UserInputError("--on ray runs replicas, not workers: use --replicas")
        if replicas < 1 or (max_replicas is not None and max_replicas < replicas):
            raise UserInputError("--replicas must be at least 1, and --max-replicas at least that")
        if replica_cpus is not None and replica_cpus < 0:
            raise UserInputError("--replica-cpus must be >= 0")
    if not (header_timeout > 0 and body_timeout > 0):
        raise UserInputError("--header-timeout and --body-timeout must be positive")
    if max_connections is not None and max_connections < 1:
        raise UserInputError("--max-connections must be at least 1")
    config = ServeConfig(
        dist=dist,
        budget_bytes=parse_budget(budget).in_bytes(),
        policy=policy,
        runtime=check_runtime(backend),
        max_body_bytes=parse_size(max_body, "--max-body"),
        max_json_bytes=parse_size(max_json_body, "--max-json-body"),
        max_inflight_bytes=parse_size(max_inflight, "--max-inflight"),
        body_timeout_s=body_timeout,
        header_timeout_s=header_timeout,
        max_connections=max_connections,
        keep_page_cache=keep_page_cache,
        loading=check_loading(loading),
        prefetch=prefetch,
    )
    if on == "ray":
        from fusedinf_cc.serve.ray_replicas import serve_on_ray
        from fusedinf_cc.serve.server import check_address

        check_address(host, port)
        serve_on_ray(
            config,
            host=host,
            port=port,
            replicas=replicas,
            max_replicas=max_replicas,
            replica_cpus=replica_cpus,
            address=ray_address,
        )
        return
    serve(config, host=host, port=port, workers=workers)
