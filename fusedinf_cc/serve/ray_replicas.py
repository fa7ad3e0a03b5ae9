"""Serve a dist folder on Ray Serve: the same KServe v2 app as `serve`, on every replica.

Ray Serve runs replicas on one machine or across a cluster, routes HTTP requests to them and
scales their number. Each replica builds the app `serve` runs (`serve/app.py`) over a
`BundleCache` of its own, within its own budget, so a request names a bundle or a model exactly
as it does with `serve`.

What is resident is the loader's choice, not Ray's model multiplexing
(`@serve.multiplexed`): multiplexing caps a replica by a count of models, not by their bytes,
evicts only the least recently used, and on eviction deletes the model at once even while
requests still use it (closing a session there failed 16 to 36 of 200 requests under churn).
The loader budgets bytes with GDSF or LRU and closes a bundle only when no request holds it.
What Ray's multiplexing would add, routing a request to a replica that already holds its bundle,
is left to Ray's default routing.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from fusedinf_cc.common.errors import BackendUnavailableError, UserInputError
from fusedinf_cc.serve.app import ServeConfig, create_app

RAY_HINT = "serving on Ray needs Ray Serve: pip install 'fusedinf-cc[ray]'"
DEPLOYMENT_NAME = "fusedinf"
# A response header naming the process that answered ("host:pid"): which replica, for a person
# reading a trace or a test checking each replica's own budget.
REPLICA_HEADER = "fusedinf-replica"

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def import_serve() -> Any:
    try:
        from ray import serve
    except ImportError:
        raise BackendUnavailableError(RAY_HINT) from None
    return serve


def application(config: ServeConfig, **deployment_options: Any) -> Any:
    """A Ray Serve application for `serve.run`: one deployment whose replicas each serve
    `config.dist` within `config.budget_bytes`. `deployment_options` go to Ray unchanged
    (`num_replicas`, `autoscaling_config`, `ray_actor_options`, `max_ongoing_requests`, ...)."""
    serve = import_serve()
    create_app(config).state.cache.close()  # a mistake fails here, not in every replica

    def build_app() -> ASGIApp:  # runs on each replica
        return tag_replica(create_app(config), f"{socket.gethostname()}:{os.getpid()}")

    @serve.ingress(build_app)
    class FusedInfReplica:
        """One replica: the app and its own loader."""

    deployment = serve.deployment(name=DEPLOYMENT_NAME)(FusedInfReplica)
    return deployment.options(**deployment_options).bind()


def app_builder(args: dict[str, Any]) -> Any:
    """For Ray's own `serve run` and `serve deploy` (a config file's `import_path`):
    `args` holds `dist` and `budget` ("2GiB", each replica's), and optionally `policy` and
    `backend`. Replica counts and autoscaling come from the config file's `deployments`."""
    from pathlib import Path

    from fusedinf_cc.backends.runtimes import DEFAULT_RUNTIME, check_runtime
    from fusedinf_cc.runtime.budget import parse_budget

    if "dist" not in args:
        raise UserInputError("the application's args need dist: the folder of built bundles")
    config = ServeConfig(
        dist=Path(str(args["dist"])),
        budget_bytes=parse_budget(str(args.get("budget", "2GiB")), "budget").in_bytes(),
        policy=str(args.get("policy", "gdsf")),
        runtime=check_runtime(str(args.get("backend", DEFAULT_RUNTIME))),
    )
    return application(config)


def tag_replica(app: ASGIApp, replica: str) -> ASGIApp:
    """`app` with the REPLICA_HEADER on every HTTP response."""
    header = (REPLICA_HEADER.encode(), replica.encode())

    async def tagged(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return

        async def send_tagged(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), header]}
            await send(message)

        await app(scope, receive, send_tagged)

    return tagged


def serve_on_ray(
    config: ServeConfig,
    *,
    host: str,
    port: int,
    replicas: int = 1,
    max_replicas: int | None = None,
    replica_cpus: float | None = None,
    address: str | None = None,
) -> None:
    """Start (or join, with `address`) a Ray cluster, run the application until SIGTERM or
    SIGINT, then shut Serve and the cluster this process started down."""
    serve = import_serve()
    import ray

    options: dict[str, Any] = {}
    if max_replicas is not None:
        options["autoscaling_config"] = {"min_replicas": replicas, "max_replicas": max_replicas}
    else:
        options["num_replicas"] = replicas
    if replica_cpus is not None:
        options["ray_actor_options"] = {"num_cpus": replica_cpus}
    app = application(config, **options)
    ray.init(address=address, include_dashboard=False, logging_level="warning")
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    try:
        serve.start(http_options={"host": host, "port": port})
        serve.run(app, name=DEPLOYMENT_NAME, route_prefix="/", blocking=False)
        count = f"{replicas}-{max_replicas}" if max_replicas is not None else str(replicas)
        print(
            f"serving {config.dist} on http://{host}:{port} through Ray Serve ({count} "
            f"replicas, budget {config.budget_bytes / 2**20:.0f} MiB each, {config.policy})",
            file=sys.stderr,
            flush=True,
        )
        stop.wait()
    finally:
        if address is None:  # the cluster is this process's own: stop all of it
            serve.shutdown()
        else:  # leave the cluster and its other applications running
            serve.delete(DEPLOYMENT_NAME)
        ray.shutdown()
