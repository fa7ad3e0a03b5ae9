"""The replay loop: a trace served by one server, in arrival order, written once.

A request waits for the server, then runs its calls one after another; its latency is that wait
plus its service (loads and inference). The server is the real loader with real bundles
(`measure/simulate.py`: seconds measured) or the loader's ledger on predicted sessions
(`plan/predict.py`: seconds counted). Besides the loader's own policies a replay can run a
clairvoyant one (Belady's, weighed by size), which reads the trace ahead (`FutureUses`): how far
an online policy is from it is what a better policy could still gain.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from fusedinf_cc.common.errors import UserInputError
from fusedinf_cc.runtime.loader import CacheStats
from fusedinf_cc.runtime.policies import POLICIES, CachePolicy, Clairvoyant
from fusedinf_cc.workload.requests import Request
from fusedinf_cc.workload.routing import Call, Routes

# What a replay can compare: the loader's policies and the clairvoyant reference.
SIMULATED_POLICIES = (*POLICIES, Clairvoyant.name)


def check_policies(names: Sequence[str]) -> None:
    unknown = [name for name in names if name not in SIMULATED_POLICIES]
    if unknown or not names:
        raise UserInputError(
            f"--policy: unknown {', '.join(unknown) or 'none given'}; "
            f"choose from {', '.join(SIMULATED_POLICIES)}"
        )


class FutureUses:
    """When each bundle is next called in a replay: what the clairvoyant policy reads."""

    def __init__(self, calls: Sequence[str]):
        """`calls`: the bundle of every call, in replay order; `now` is the current one."""
        self.now = 0
        self._steps: dict[str, list[int]] = {}
        for step, name in enumerate(calls):
            self._steps.setdefault(name, []).append(step)

    @classmethod
    def of(cls, requests: Sequence[Request], routes: Routes) -> FutureUses:
        return cls([call.bundle for r in requests for call in routes[r.function]])

    def until_next_use(self, name: str) -> float:
        """Calls from now until the next call of `name` (infinity: none)."""
        steps = self._steps.get(name, [])
        index = bisect.bisect_right(steps, self.now)
        return steps[index] - self.now if index < len(steps) else math.inf


def new_policy(name: str, future: FutureUses) -> CachePolicy:
    """A fresh policy by name; the clairvoyant one reads `future`."""
    check_policies([name])
    if name == Clairvoyant.name:
        return Clairvoyant(future.until_next_use)
    return POLICIES[name]()


class Server(Protocol):
    """What serves a replay's calls."""

    stats: CacheStats

    def serve(self, call: Call) -> float:
        """Run one call; the seconds it took (measured, or counted)."""
        ...

    def request_done(self) -> None:
        """A request's calls have all run (a real server samples its memory here)."""
        ...


def serve_trace(
    requests: Sequence[Request], routes: Routes, server: Server, future: FutureUses
) -> list[float]:
    """Each request's latency in ms: its wait for the one server, then its calls."""
    server_free_at = 0.0
    latencies = []
    step = 0
    for request in requests:
        service = 0.0
        for call in routes[request.function]:
            future.now = step
            step += 1
            service += server.serve(call)
        start = max(request.arrival_s, server_free_at)
        server_free_at = start + service
        latencies.append((server_free_at - request.arrival_s) * 1000.0)
        server.request_done()
    return latencies


@dataclass(frozen=True)
class ReplayResult:
    deployment: str
    policy: str
    budget_bytes: int
    requests: int
    hits: int
    misses: int
    models_loaded: int  # what the opened sessions serve: a whole bundle all its models, a part one
    evictions: int
    seconds_loading: float
    p50_ms: float
    p99_ms: float
    peak_accounted_bytes: int
    peak_rss_growth_bytes: int
    bytes_read: int = 0  # from storage by the loads (measured, or as predicted)
    baseline_rss_bytes: int = 0  # the process before the replay: runtime up, nothing loaded
    # The loading policy the loader read new sessions' weights with (`+prefetch`: reading
    # the likely next bundle ahead too).
    loading: str = ""
    prefetches: int = 0  # bundles read ahead, and of those the one the next request asked for
    prefetches_used: int = 0

    @property
    def label(self) -> str:
        """The eviction policy and, where it was a real loader's, the loading policy."""
        return f"{self.policy}, {self.loading}" if self.loading else self.policy

    @classmethod
    def of(
        cls,
        deployment: str,
        policy: str,
        budget_bytes: int,
        stats: CacheStats,
        latencies_ms: Sequence[float],
        peak_rss_growth_bytes: int = 0,
        bytes_read: int = 0,
        baseline_rss_bytes: int = 0,
        loading: str = "",
    ) -> ReplayResult:
        return cls(
            deployment=deployment,
            policy=policy,
            budget_bytes=budget_bytes,
            requests=len(latencies_ms),
            hits=stats.hits,
            misses=stats.misses,
            models_loaded=stats.models_opened,
            evictions=stats.evictions,
            seconds_loading=stats.seconds_loading,
            p50_ms=float(np.percentile(latencies_ms, 50)),
            p99_ms=float(np.percentile(latencies_ms, 99)),
            peak_accounted_bytes=int(stats.peak_accounted_bytes),
            peak_rss_growth_bytes=peak_rss_growth_bytes,
            bytes_read=bytes_read,
            baseline_rss_bytes=baseline_rss_bytes,
            loading=loading,
            prefetches=stats.prefetches,
            prefetches_used=stats.prefetches_used,
        )


def loading_ratios(results: Sequence[ReplayResult]) -> dict[str, dict[str, float]]:
    """Per policy (and loading policy), each deployment's seconds spent loading over the
    unfused deployment's; keyed by policy alone where every replay loaded one way."""
    several = len({r.loading for r in results}) > 1

    def key(r: ReplayResult) -> str:
        return r.label if several else r.policy

    unfused = {key(r): r.seconds_loading for r in results if r.deployment == "unfused"}
    ratios: dict[str, dict[str, float]] = {}
    for r in results:
        if r.deployment != "unfused" and unfused.get(key(r)):
            ratios.setdefault(key(r), {})[r.deployment] = r.seconds_loading / unfused[key(r)]
    return ratios
