"""Opening a bundle: checked against its manifest, its footprint known, a changed file refused."""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import pytest

from fusedinf_cc.artifacts.manifest import manifest_path_for
from fusedinf_cc.common.errors import UserInputError
from fusedinf_cc.compiler.build import build_fused
from fusedinf_cc.runtime.bundle import WHOLE, open_bundle
from fusedinf_cc.runtime.loader import BundleCache
from tests.support import builders
from tests.support.bundles import fused_pair_bundle


def test_an_engine_manifest_with_a_negative_size_is_refused(tmp_path):
    engine = tmp_path / "fused.engine"
    engine.write_bytes(b"not a real plan")
    manifest = {
        "format": "fusedinf-bundle/1",
        "models": [],
        "footprint": {"engine_bytes": 10, "device_memory_bytes": -(10**15)},
    }
    manifest_path_for(engine).write_text(json.dumps(manifest))
    with pytest.raises(UserInputError, match="not a number of bytes"):
        open_bundle(engine)


def test_a_changed_artifact_is_refused(tmp_path):
    path = fused_pair_bundle(tmp_path, "solo", 8, width=64)
    model = onnx.load(path)
    model.doc_string = "edited after the build"
    onnx.save(model, path)
    with pytest.raises(UserInputError, match="sha256 differs from its manifest"):
        open_bundle(path)


def test_a_side_file_replaced_after_registration_is_never_loaded(tmp_path):
    """Another build's weights of the same layout copied over a served bundle's: refused at the
    next load; the same bytes written again (a copy that changed nothing) load as before."""
    served, other = tmp_path / "served.onnx", tmp_path / "other" / "served.onnx"
    build_fused(builders.affine_pair_specs(tmp_path / "m1", seed=1, width=256), served, aot=True)
    other.parent.mkdir()
    build_fused(builders.affine_pair_specs(tmp_path / "m2", seed=2, width=256), other, aot=True)
    cache = BundleCache(1 << 30)
    cache.register(served)
    x = np.ones((1, 256), np.float32)
    before = cache.run("a", {"x": x})["y"]
    side = served.with_name("served.onnx.data")
    kept = side.read_bytes()
    cache.unload("served")
    side.unlink()
    side.write_bytes(kept)  # a new file, the same bytes
    assert cache.run("a", {"x": x})["y"].tobytes() == before.tobytes()
    cache.unload("served")
    shutil.copyfile(other.with_name("served.onnx.data"), side)
    with pytest.raises(UserInputError, match=r"served\.onnx\.data changed since the bundle was"):
        cache.run("a", {"x": x})
    assert cache.resident() == []


def test_a_session_reads_its_files_and_a_part_only_the_weights_it_maps(tmp_path):
    """What a cold open reads from storage: the whole, its artifact and side file; a part, its
    own small file and its share of the side file's weights."""
    bundle = open_bundle(fused_pair_bundle(tmp_path, "pair", 3, width=128, aot=True))
    side = bundle.artifact.with_name("pair.onnx.data")
    assert bundle.read_bytes(WHOLE) == bundle.artifact.stat().st_size + side.stat().st_size
    shares = []
    for part in bundle.parts.values():
        # What the part maps, from its manifest record (what the loader counts for its session
        # also depends on the footprints measured, whose noise can count a part as the whole).
        weights = sum(r.length for r in bundle.manifest.weights if r.name in part.weights)
        assert 0 < weights < side.stat().st_size
        assert bundle.read_bytes(part.model) == part.size_bytes + weights
        shares.append(weights)
    assert sum(shares) == sum(bundle.shared_weights.values())  # the two share no weight
