"""Run the app on uvicorn: one process, or several workers that split the memory budget."""

from __future__ import annotations

import dataclasses
import os
import sys

from fusedinf_cc.common.errors import BackendUnavailableError
from fusedinf_cc.serve import SERVE_HINT
from fusedinf_cc.serve.app import ServeConfig, create_app

GRACEFUL_SHUTDOWN_S = 30


def serve(config: ServeConfig, *, host: str, port: int, workers: int = 1) -> None:
    """Serve until SIGTERM/SIGINT; uvicorn then stops accepting and lets in-flight requests end.

    With several workers each process has its own cache, so each gets budget / workers.
    """
    try:
        import uvicorn
    except ImportError:
        raise BackendUnavailableError(SERVE_HINT) from None
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
    }
    if workers == 1:
        uvicorn.run(app, **options)
        return
    del app  # each worker builds its own
    os.environ["FUSEDINF_SERVE_CONFIG"] = share.to_env()
    uvicorn.run(
        "fusedinf_cc.serve.app:app_from_environment", factory=True, workers=workers, **options
    )
