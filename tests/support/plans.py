"""Sessions and measurements for the planner's tests, written as numbers."""

from __future__ import annotations

from fusedinf_cc.plan.costs import SessionCost


def session_cost(private, load, run, activation=100, weights=()) -> SessionCost:
    """A session of `private` bytes (and pooled `weights`), loading in `load` and running in
    `run` seconds, its requests needing `activation` bytes of arena."""
    return SessionCost(
        private,
        tuple(weights),
        activation_bytes=activation,
        load_seconds=load,
        run_seconds=run,
    )
