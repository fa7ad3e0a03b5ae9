"""Sessions and measurements for the planner's tests, written as numbers."""

from __future__ import annotations

from fusedinf_cc.plan.costs import SessionCost


def session_cost(
    private, load, run, activation=100, weights=(), *, cold=0.0, read=0
) -> SessionCost:
    """A session of `private` bytes (and pooled `weights`), loading in `load` and running in
    `run` seconds (its first run `cold` more), its requests needing `activation` bytes of
    arena, reading `read` bytes from storage when it opens."""
    return SessionCost(
        private,
        tuple(weights),
        activation_bytes=activation,
        load_seconds=load,
        run_seconds=run,
        cold_seconds=cold,
        read_bytes=read,
    )
