"""Loading policies: when a newly opened session's mapped weights are read from storage."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from fusedinf_cc.backends.sessions import open_session
from fusedinf_cc.backends.weight_pool import DEFAULT_POOL
from fusedinf_cc.common.errors import UserInputError
from fusedinf_cc.compiler.build import build_fused
from fusedinf_cc.runtime.bundle import WHOLE, open_bundle
from fusedinf_cc.runtime.loader import BundleCache
from fusedinf_cc.runtime.loading import LOADING_POLICIES, check_loading
from fusedinf_cc.runtime.pagecache import drop_file_pages
from tests.support import builders
from tests.support.pagecache import cached_bytes


@pytest.fixture
def bundle(tmp_path):
    """An ahead-of-time bundle of two 1024-wide affine models (8 MiB of mapped weights)."""
    out = tmp_path / "pair.onnx"
    build_fused(builders.affine_pair_specs(tmp_path / "models", seed=3, width=1024), out, aot=True)
    return open_bundle(out, name="pair")


def _side_file(bundle):
    (side,) = [path for path in bundle.files if path.name.endswith(".data")]
    return side


def _loaded_cold(bundle, loading):
    """A cache holding `bundle`, loaded with its side file out of the page cache, no request run."""
    cache = BundleCache(1 << 30, loading=loading)
    cache.register(bundle)
    drop_file_pages(bundle.files)
    cache.load("pair")
    return cache


def _cached_within(path, seconds):
    deadline = time.monotonic() + seconds
    while cached_bytes(path) < path.stat().st_size and time.monotonic() < deadline:
        time.sleep(0.01)
    return cached_bytes(path)


def test_every_policy_answers_bitwise_alike(bundle):
    x = np.linspace(-1, 1, 1024, dtype=np.float32).reshape(1, 1024)
    answers = []
    for loading in LOADING_POLICIES:
        cache = _loaded_cold(bundle, loading)
        answers.append(cache.run("pair", {"a/x": x, "b/x": x}))
        cache.close()
    assert all(a[k].tobytes() == answers[0][k].tobytes() for a in answers for k in a)


def test_bulk_reads_every_weight_before_the_first_request(bundle):
    side = _side_file(bundle)
    cache = _loaded_cold(bundle, "bulk")
    assert cached_bytes(side) >= 0.99 * side.stat().st_size
    cache.close()


def test_interleaved_reads_beside_the_request_and_linear_only_what_runs(bundle):
    side = _side_file(bundle)
    interleaved = _loaded_cold(bundle, "interleaved")
    assert _cached_within(side, 10) >= 0.99 * side.stat().st_size  # no request has run
    interleaved.close()
    linear = _loaded_cold(bundle, "linear")
    assert _cached_within(side, 0.3) < 0.5 * side.stat().st_size  # read as inference needs it
    linear.close()


def test_an_evicted_bundles_reader_stops_and_lets_go(bundle):
    cache = _loaded_cold(bundle, "interleaved")
    cache.unload("pair")  # while its reader may still be reading
    assert cache.resident() == []
    assert not [t for t in threading.enumerate() if t.name == "fusedinf-weight-reader"]
    assert DEFAULT_POOL.live_digests() == set()  # no weight is held by a reader either


def test_the_read_starts_before_the_session_opens(bundle):
    """ONNX Runtime's parsing of the graph overlaps the read: the side file is coming in while
    the session opens (interleaved), already in (bulk), or left to inference (linear)."""
    side = _side_file(bundle)
    cached_while_opening = {}

    def opens(artifact, part=None):
        wait = 0.3 if loading == "linear" else 10
        cached_while_opening[loading] = _cached_within(side, wait) / side.stat().st_size
        return open_session(artifact, part=part)

    for loading in LOADING_POLICIES:
        cache = BundleCache(1 << 30, loading=loading, session_factory=opens)
        cache.register(bundle)
        drop_file_pages(bundle.files)
        cache.load("pair")
        cache.close()
    assert cached_while_opening["bulk"] >= 0.99
    assert cached_while_opening["interleaved"] >= 0.99
    assert cached_while_opening["linear"] < 0.5


def test_a_part_reads_its_own_span_of_the_side_file_and_the_whole_reads_both(bundle):
    side = _side_file(bundle)
    records = {key: bundle.weight_records(key) for key in ("a", "b", WHOLE)}
    assert {path for path, _ in records.values()} == {side}
    spans = {key: [(r.offset, r.length) for r in found] for key, (_, found) in records.items()}
    covered = {key: {(o, o + n) for o, n in found} for key, found in spans.items()}
    assert covered["a"] and covered["b"] and not covered["a"] & covered["b"]
    assert covered[WHOLE] == covered["a"] | covered["b"]
    ends = sorted(covered[WHOLE])
    assert ends[0][0] == 0 and ends[-1][1] <= side.stat().st_size
    assert sum(n for _, n in spans["a"]) > 0.45 * side.stat().st_size


def test_an_unknown_policy_is_one_line():
    with pytest.raises(UserInputError, match="unknown loading policy 'eager'; choose from bulk"):
        check_loading("eager")
    with pytest.raises(UserInputError, match="unknown loading policy"):
        BundleCache(1 << 20, loading="eager")
