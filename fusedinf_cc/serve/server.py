"""Run the app on uvicorn: one process, or several workers that split the memory budget."""

from __future__ import annotations

import dataclasses
import os
import socket
import sys

from fusedinf_cc.common.errors import BackendUnavailableError, UserInputError
from fusedinf_cc.serve import SERVE_HINT
from fusedinf_cc.serve.app import ServeConfig, create_app

GRACEFUL_SHUTDOWN_S = 30
KEEP_ALIVE_S = 5  # an idle keep-alive connection is closed after this long


def check_address(host: str, port: int) -> None:
    """Refuse, in one line and before any worker starts, an address this machine cannot
    listen on: a port out of range, a host that is no address of it, a port in use."""
    if not 0 <= port < 65536:
        raise UserInputError(f"--port {port}: use a port from 0 (any free one) to 65535")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as error:
        raise UserInputError(f"--host {host}: not an address here ({error})") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as error:
            raise UserInputError(f"cannot listen on {host}:{port} ({error.strerror})") from None


def serve(config: ServeConfig, *, host: str, port: int, workers: int = 1) -> None:
    """Serve until SIGTERM/SIGINT; uvicorn then stops accepting and lets in-flight requests end.

    With several workers each process has its own cache, so each gets budget / workers.
    """
    try:
        import uvicorn

        from fusedinf_cc.serve.connections import GuardedH11Protocol, quiet_repeats
    except ImportError:
        raise BackendUnavailableError(SERVE_HINT) from None
    check_address(host, port)
    share = dataclasses.replace(config, budget_bytes=config.budget_bytes // workers)
    # Built here first, so that a mistake (no bundles, a bad policy, a bundle over the budget)
    # fails once, in this process; in a worker, uvicorn would restart it forever.
    app = create_app(share)
    print(
        f"serving {config.dist} on http://{host}:{port} "
        f"(budget {share.budget_bytes / 2**20:.0f} MiB per worker, {config.policy})",
        file=sys.stderr,
    )
    options = {
        "host": host,
        "port": port,
        "log_level": "warning",
        "timeout_graceful_shutdown": GRACEFUL_SHUTDOWN_S,
        "timeout_keep_alive": KEEP_ALIVE_S,
        "http": "fusedinf_cc.serve.connections:GuardedH11Protocol",
    }
    if workers == 1:
        GuardedH11Protocol.configure(share.header_timeout_s, share.max_connections)
        quiet_repeats()
        uvicorn.run(app, **options)
        return
    del app  # each worker builds its own
    os.environ["FUSEDINF_SERVE_CONFIG"] = share.to_env()
    uvicorn.run(
        "fusedinf_cc.serve.app:app_from_environment", factory=True, workers=workers, **options
    )
