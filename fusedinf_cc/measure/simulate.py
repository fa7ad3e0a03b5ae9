"""simulate: replay a request trace against the real loader, deployment by deployment, per policy.

A *function* (a serverless handler) invokes a set of models per request. The same models are
deployed unfused, fused, and optionally grouped (`deployments.py`); a trace is replayed on each
through a `BundleCache` holding real bundles (`LoaderServer`), in the one replay loop
(`workload/replay.py`): a request's latency is its wait for the server plus the loads and
inference it really took. A deployment whose bundles cannot load under the budget is left out,
named with why, never given more memory than was asked for.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from fusedinf_cc.common.errors import UserInputError
from fusedinf_cc.measure.deployments import Deployment, deployments
from fusedinf_cc.runtime.budget import Budget
from fusedinf_cc.runtime.feeds import random_feeds
from fusedinf_cc.runtime.loader import BundleCache, CacheStats
from fusedinf_cc.runtime.loading import DEFAULT_LOADING, check_loading
from fusedinf_cc.runtime.pagecache import storage_read_bytes
from fusedinf_cc.runtime.procmem import status_bytes
from fusedinf_cc.workload.layout import Layout
from fusedinf_cc.workload.replay import (
    FutureUses,
    ReplayResult,
    check_policies,
    loading_ratios,
    new_policy,
    serve_trace,
)
from fusedinf_cc.workload.requests import Request
from fusedinf_cc.workload.routing import Call
from fusedinf_cc.workload.traces import Workload


class LoaderServer:
    """A replay's server: the real loader, each call's seconds measured, RSS sampled, the
    bytes its loads read from storage counted."""

    def __init__(self, cache: BundleCache, feeds: Mapping[Call, dict[str, np.ndarray]]):
        self.cache = cache
        self.feeds = feeds
        self.baseline_rss = status_bytes().get("VmRSS", 0)
        self.peak_rss = self.baseline_rss
        self._read_at_start = storage_read_bytes() or 0

    @property
    def bytes_read(self) -> int:
        return max(0, (storage_read_bytes() or 0) - self._read_at_start)

    @property
    def stats(self) -> CacheStats:
        return self.cache.stats

    def serve(self, call: Call) -> float:
        started = time.perf_counter()
        self.cache.run(call.name, self.feeds[call], bundle=call.bundle)
        return time.perf_counter() - started

    def request_done(self) -> None:
        self.peak_rss = max(self.peak_rss, status_bytes().get("VmRSS", 0))


def replay(
    requests: Sequence[Request],
    deployment: Deployment,
    budget_bytes: int,
    policy: str,
    *,
    keep_page_cache: bool = False,
    loading: str = DEFAULT_LOADING,
    prefetch: bool = False,
) -> ReplayResult:
    """`requests` served by a loader holding `deployment`'s bundles under the budget, started
    cold (no bundle loaded; their files out of the page cache unless `keep_page_cache`), new
    sessions' weights read by the `loading` policy, the likely next bundle read ahead where
    `prefetch`: raises `UserInputError` where a bundle cannot load under the budget."""
    future = FutureUses.of(requests, deployment.calls)
    cache = BundleCache(
        budget_bytes,
        lambda: new_policy(policy, future),
        keep_page_cache=keep_page_cache,
        loading=loading,
        prefetch=prefetch,
    )
    try:  # a bundle that does not fit raises, from registering or from a request
        for bundle in deployment.bundles.values():
            cache.register(bundle)
        called = dict.fromkeys(call for calls in deployment.calls.values() for call in calls)
        feeds = {
            call: random_feeds(cache.input_specs(call.name, bundle=call.bundle)) for call in called
        }
        cache.close(cold=True)  # reading input specs loaded bundles: start the replay cold
        cache.reset_stats()
        server = LoaderServer(cache, feeds)
        latencies = serve_trace(requests, deployment.calls, server, future)
        stats = replace(cache.stats)  # as the replay left them: closing evicts what stays
        read = server.bytes_read
    finally:
        cache.close()
    growth = server.peak_rss - server.baseline_rss
    return ReplayResult.of(
        deployment.name,
        policy,
        budget_bytes,
        stats,
        latencies,
        growth,
        read,
        server.baseline_rss,
        f"{loading}{PREFETCH_LABEL}" if prefetch else loading,
    )


@dataclass
class Replays:
    """Each deployment's replays, and why any was left out."""

    results: dict[str, list[ReplayResult]] = field(default_factory=dict)
    left_out: dict[str, str] = field(default_factory=dict)

    def flat(self) -> list[ReplayResult]:
        return [result for results in self.results.values() for result in results]


def replay_deployments(
    requests: Sequence[Request],
    plans: Sequence[Deployment],
    budgets: Mapping[str, int],
    policies: Sequence[str],
    *,
    rounds: int = 1,
    required: Sequence[str] = (),
    keep_page_cache: bool = False,
    loadings: Sequence[str] = (DEFAULT_LOADING,),
    prefetches: Sequence[bool] = (False,),
    done: Callable[[], None] | None = None,
) -> Replays:
    """Replay each deployment under its budget, each policy, each loading policy and each of
    `prefetches` (without and with reading ahead), `rounds` times, the deployments taking
    turns (drift in the machine's speed falls on all alike). A
    deployment with a bundle that cannot load under its budget is left out, with why; a
    `required` one (a model alone must load) raises instead."""
    replays = Replays({plan.name: [] for plan in plans})
    for _ in range(rounds):
        for plan in plans:
            if plan.name in replays.left_out:
                continue
            for policy, loading, prefetch in itertools.product(policies, loadings, prefetches):
                try:
                    replays.results[plan.name].append(
                        replay(
                            requests,
                            plan,
                            budgets[plan.name],
                            policy,
                            keep_page_cache=keep_page_cache,
                            loading=loading,
                            prefetch=prefetch,
                        )
                    )
                except UserInputError as error:
                    if plan.name in required:
                        raise
                    replays.left_out[plan.name] = str(error)
                    replays.results[plan.name].clear()
                    break
                finally:
                    if done:
                        done()
    return replays


# A replay that read ahead has its loading policy labelled with this.
PREFETCH_LABEL = "+prefetch"


@dataclass(frozen=True)
class Simulation:
    """What `simulate` reports."""

    budget_bytes: int
    notice: str | None
    results: list[ReplayResult]
    left_out: dict[str, str]

    @property
    def loading_ratios(self) -> dict[str, dict[str, float]]:
        return loading_ratios(self.results)

    def to_json(self, extra: dict) -> str:
        report = {
            **extra,
            "left_out": self.left_out,
            "results": [asdict(r) for r in self.results],
            "loading_seconds_over_unfused": self.loading_ratios,
        }
        return json.dumps(report, indent=2) + "\n"


def simulate(
    models: Mapping[str, Path],
    workload: Workload,
    budget: Budget,
    policies: Sequence[str],
    work_dir: Path,
    *,
    groups: Layout | None = None,
    aot: bool = False,
    stack: bool = False,
    keep_page_cache: bool = False,
    loadings: Sequence[str] = (DEFAULT_LOADING,),
    prefetch: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> Simulation:
    """Build the deployments, resolve the budget against the models alone (unfused), and
    replay each under each policy and loading policy, and where `prefetch` each of those again
    reading ahead (its loading labelled `+prefetch`); `progress(done, total)` after each
    replay."""
    check_policies(policies)
    for loading in loadings:
        check_loading(loading)
    plans = deployments(models, workload.functions, work_dir, groups, aot=aot, stack=stack)
    budget_bytes, notice = budget.resolve(plans[0].footprints)
    prefetches = (False, True) if prefetch else (False,)
    total, finished = len(plans) * len(policies) * len(loadings) * len(prefetches), [0]

    def done() -> None:
        finished[0] += 1
        if progress:
            progress(finished[0], total)

    replays = replay_deployments(
        workload.requests,
        plans,
        {plan.name: budget_bytes for plan in plans},
        policies,
        required=("unfused",),
        keep_page_cache=keep_page_cache,
        loadings=loadings,
        prefetches=prefetches,
        done=done,
    )
    return Simulation(budget_bytes, notice, replays.flat(), replays.left_out)
