"""Prefetch: the loader learns which bundle follows which, and reads the likely next one into
the page cache while a request computes, counting nothing against the budget."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from fusedinf_cc.runtime.bundle import open_bundle
from fusedinf_cc.runtime.loader import BundleCache
from fusedinf_cc.runtime.prefetch import Prefetcher, Successors
from tests.support import builders
from tests.support.bundles import fused_pair_bundle
from tests.support.pagecache import cached_bytes


def test_a_successor_is_guessed_once_it_is_a_pattern():
    seen = Successors()
    for name in ["det", "cls", "det"]:
        seen.saw(name)
    assert seen.likely_after("det") is None  # once is a coincidence
    seen.saw("cls")
    assert seen.likely_after("det") == "cls"
    assert seen.likely_after("cls") is None  # followed by det once so far
    for name in ["seg", "det", "other", "det", "more", "det", "third"]:
        seen.saw(name)  # det is followed by cls 2 times in 5: no pattern
    assert seen.likely_after("det") is None
    assert seen.likely_after("nobody") is None


def test_a_prefetcher_reads_a_file_into_the_page_cache_and_a_cancel_stops_it(tmp_path):
    from fusedinf_cc.runtime.pagecache import drop_file_pages

    path = tmp_path / "weights.bin"
    path.write_bytes(b"\1" * (4 << 20))
    drop_file_pages([path])
    assert cached_bytes(path) < path.stat().st_size
    prefetcher = Prefetcher()
    prefetcher.fetch([path])
    assert _cached_within(path, 10) >= path.stat().st_size  # whole pages
    prefetcher.cancel()  # nothing under way: returns at once
    prefetcher.fetch([tmp_path / "gone.bin"])  # a file that went away is skipped
    prefetcher.cancel()


def _side_file(bundle_path: Path) -> Path:
    return bundle_path.with_name(bundle_path.name + ".data")


def _cached_within(path: Path, seconds: float) -> int:
    deadline = time.monotonic() + seconds
    while cached_bytes(path) < path.stat().st_size and time.monotonic() < deadline:
        time.sleep(0.01)
    return cached_bytes(path)


@pytest.mark.parametrize("prefetch", [False, True])
def test_the_bundle_that_usually_comes_next_is_read_while_a_request_computes(tmp_path, prefetch):
    """Two bundles that alternate, under a budget that holds one: each miss evicts the other and
    drops its pages. With prefetch, once the alternation is learnt, a request for one reads the
    other back into the page cache (nothing of it counted or opened); without, it stays out."""
    first = fused_pair_bundle(tmp_path, "first", 1, width=512, aot=True)
    second = fused_pair_bundle(tmp_path, "second", 2, width=512, aot=True)
    bundles = [open_bundle(first), open_bundle(second)]
    sizing = BundleCache(1 << 40)
    for bundle in bundles:
        sizing.register(bundle)
    sizing.load("first")
    alone = sizing.accounted_bytes
    sizing.load("second")
    one_at_a_time = (alone + sizing.accounted_bytes) // 2  # one, never both
    sizing.close()
    cache = BundleCache(one_at_a_time, prefetch=prefetch)
    for bundle in bundles:
        cache.register(bundle)
    x = builders.random_feeds(512)
    for name in ["first", "second"] * 3:
        cache.run(name, {f"{name}_a/x": x["x"], f"{name}_b/x": x["x"]})
    assert cache.evictions[-1] == "first"  # second is resident, first's pages dropped
    side = _side_file(first)
    if prefetch:
        assert _cached_within(side, 10) >= side.stat().st_size  # whole pages
        assert cache.stats.prefetches >= 2
        # Every guess was right but the last, whose request has not come.
        assert cache.stats.prefetches_used == cache.stats.prefetches - 1
    else:
        time.sleep(0.2)
        assert cached_bytes(side) < side.stat().st_size // 2
        assert cache.stats.prefetches == 0
    assert cache.accounted_bytes <= one_at_a_time  # the page cache is not the budget's
    assert cache.sessions("first") == []  # nothing of it opened
    cache.close(cold=True)
    assert cached_bytes(side) < side.stat().st_size // 2  # a cold close leaves nothing read
