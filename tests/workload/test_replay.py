"""The replay loop: one server, requests in arrival order, a latency that is wait plus service."""

from __future__ import annotations

import pytest

from fusedinf_cc.common.errors import UserInputError
from fusedinf_cc.runtime.loader import CacheStats
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


class TimedServer:
    """Serves each call in the seconds given for its bundle, and notes what it was asked."""

    def __init__(self, seconds: dict[str, float], future: FutureUses):
        self.seconds = seconds
        self.future = future
        self.stats = CacheStats()
        self.calls: list[tuple[Call, int]] = []  # with the step the future was at
        self.requests_done = 0

    def serve(self, call: Call) -> float:
        self.calls.append((call, self.future.now))
        return self.seconds[call.bundle]

    def request_done(self) -> None:
        self.requests_done += 1


def test_a_request_waits_for_the_server_then_runs_its_calls_in_order():
    routes = {"ab": [Call("a"), Call("b", "m")], "b": [Call("b")]}
    requests = [Request(0.0, "ab"), Request(0.1, "b"), Request(1.0, "b")]
    future = FutureUses.of(requests, routes)
    server = TimedServer({"a": 0.2, "b": 0.05}, future)
    latencies = serve_trace(requests, routes, server, future)
    # The first takes 0.25 s; the second arrives at 0.1, waits until 0.25 and runs 0.05; the
    # third finds the server free.
    assert latencies == pytest.approx([250.0, 200.0, 50.0])
    assert [call for call, _ in server.calls] == [Call("a"), Call("b", "m"), Call("b"), Call("b")]
    assert [step for _, step in server.calls] == [0, 1, 2, 3]  # the clairvoyant policy's clock
    assert server.requests_done == 3


def test_the_clairvoyant_policy_reads_the_future_the_loop_advances():
    routes = {"a": [Call("a")], "b": [Call("b")]}
    requests = [Request(0.0, name) for name in "abba"]
    future = FutureUses.of(requests, routes)
    assert new_policy("belady", future).name == "belady"
    assert future.until_next_use("a") == 3
    future.now = 1
    assert future.until_next_use("a") == 2 and future.until_next_use("b") == 1
    with pytest.raises(UserInputError, match="choose from lru, gdsf, belady"):
        check_policies(["fifo"])
    with pytest.raises(UserInputError, match="none given"):
        check_policies([])


def test_a_result_reads_the_servers_counts_and_the_ratios_compare_with_unfused():
    stats = CacheStats(hits=3, misses=2, evictions=1, seconds_loading=0.5, models_opened=4)
    stats.peak_accounted_bytes = 1234
    unfused = ReplayResult.of("unfused", "lru", 2000, stats, [10.0, 20.0, 30.0])
    assert (unfused.requests, unfused.hits, unfused.misses, unfused.models_loaded) == (3, 3, 2, 4)
    assert unfused.p50_ms == 20.0 and unfused.peak_accounted_bytes == 1234
    fused = ReplayResult.of("fused", "lru", 2000, CacheStats(seconds_loading=0.25), [5.0])
    assert loading_ratios([unfused, fused]) == {"lru": {"fused": 0.5}}
