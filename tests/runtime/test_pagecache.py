"""The page cache: an evicted bundle's files leave it, and what a load reads is counted."""

from __future__ import annotations

import numpy as np

from fusedinf_cc.compiler.build import build_fused
from fusedinf_cc.runtime.bundle import open_bundle
from fusedinf_cc.runtime.ledger import least_budget
from fusedinf_cc.runtime.loader import BundleCache
from fusedinf_cc.runtime.pagecache import drop_file_pages, storage_read_bytes
from tests.support import builders
from tests.support.pagecache import cached_bytes


def _two_bundles(tmp_path):
    """Two ahead-of-time bundles of two 1024-wide affine models (8 MiB of weights each)."""
    bundles = []
    for index, name in enumerate(("first", "second")):
        specs = builders.affine_pair_specs(tmp_path / name, seed=index, width=1024)
        out = tmp_path / f"{name}.onnx"
        build_fused(specs, out, aot=True)
        bundles.append(open_bundle(out, name=name))
    return bundles


def _weights(bundle):
    (side,) = [path for path in bundle.files if path.name.endswith(".data")]
    return side


def test_an_evicted_bundles_files_leave_the_page_cache_unless_kept(tmp_path):
    bundles = _two_bundles(tmp_path)
    x = np.ones((1, 1024), np.float32)
    for keep in (False, True):
        cache = BundleCache(
            least_budget(b.footprint.load_need for b in bundles), keep_page_cache=keep
        )
        for bundle in bundles:
            cache.register(bundle)
        cache.run("first", {"a/x": x, "b/x": x})
        assert cached_bytes(_weights(bundles[0])) > 4 * 2**20  # its weights were read
        cache.run("second", {"a/x": x, "b/x": x})
        assert cache.evictions == ["first"]
        left = cached_bytes(_weights(bundles[0]))
        assert (left > 4 * 2**20) if keep else left == 0, (keep, left)
        cache.close()


def test_a_cold_start_reads_every_bundle_from_storage_and_the_reads_are_counted(tmp_path):
    bundles = _two_bundles(tmp_path)
    cache = BundleCache(1 << 30)
    for bundle in bundles:
        cache.register(bundle)
    x = np.ones((1, 1024), np.float32)
    cache.run("first", {"a/x": x, "b/x": x})
    cache.close(cold=True)
    side = _weights(bundles[0])
    assert cached_bytes(side) == 0
    before = storage_read_bytes()
    cache.run("first", {"a/x": x, "b/x": x})
    read = storage_read_bytes() - before
    assert read >= 0.9 * side.stat().st_size, (read, side.stat().st_size)
    cache.close()
    drop_file_pages([side])
    assert cached_bytes(side) == 0
