"""Small pieces with sharp edges: shape unification, option parsing, the manifest format."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx_ir as ir
import pytest

from fusedinf_cc.artifacts.manifest import Manifest, ModelEntry, read_manifest
from fusedinf_cc.artifacts.weight_records import WeightRecord
from fusedinf_cc.backends.base import TensorSpec
from fusedinf_cc.common.errors import UserInputError
from fusedinf_cc.common.names import parse_model_spec
from fusedinf_cc.common.shapes import parse_shapes
from fusedinf_cc.common.sizes import format_bytes, parse_size
from fusedinf_cc.onnx_io.model_io import SourceModel
from fusedinf_cc.passes.share import parse_share_spec, unify_shapes
from fusedinf_cc.runtime.feeds import load_feeds


def shape(*dims):
    return ir.Shape([ir.SymbolicDim(d) if isinstance(d, str) else d for d in dims])


def test_unify_shapes_prefers_fixed_dims_and_common_symbols():
    unified, problems = unify_shapes([shape("a/batch", 3), shape("b/batch", 3), shape(1, 3)])
    assert problems == [] and unified == shape(1, 3)
    unified, problems = unify_shapes([shape("a/n", 3), shape("b/n", 3)])
    assert unified == shape("n", 3)
    unified, problems = unify_shapes([shape("a/n", 3), shape("b/m", 3)])
    assert unified == shape("a/n", 3)


def test_unify_shapes_reports_every_difference():
    _, problems = unify_shapes([shape(1, 3, 224), shape(1, 4, 256)])
    assert problems == ["dim 1: 3 vs 4", "dim 2: 224 vs 256"]
    _, problems = unify_shapes([shape(1, 3), shape(1, 3, 1)])
    assert problems == ["ranks 2 vs 3"]


def _source(name: str, *inputs: str) -> SourceModel:
    return SourceModel(name, Path(f"{name}.onnx"), "", None, inputs, ("y",))  # type: ignore[arg-type]


def test_share_spec_resolves_model_names_that_contain_dots():
    sources = [_source("det.v2", "image"), _source("det", "v2.scan"), _source("cls", "image")]
    spec = parse_share_spec("img=det.v2.image,cls.image", sources)
    assert spec.members == (("det.v2", "image"), ("cls", "image"))
    spec = parse_share_spec("img=det.v2.scan,cls.image", sources)
    assert spec.members == (("det", "v2.scan"), ("cls", "image"))
    ambiguous = [_source("det.v2", "image"), _source("det", "v2.image")]
    with pytest.raises(UserInputError, match="ambiguous"):
        parse_share_spec("img=det.v2.image,det.v2.image", ambiguous)
    with pytest.raises(UserInputError, match="at least two"):
        parse_share_spec("img=det.v2.image", sources)
    with pytest.raises(UserInputError, match="expected FUSED="):
        parse_share_spec("det.v2.image,det.v2.image", sources)


def test_model_spec_names_default_to_the_stem():
    assert parse_model_spec("models/resnet18.onnx") == ("resnet18", Path("models/resnet18.onnx"))
    assert parse_model_spec("cls=a/b.onnx") == ("cls", Path("a/b.onnx"))
    with pytest.raises(UserInputError):
        parse_model_spec("cls=")


def test_parse_shapes():
    assert parse_shapes("a/x:1x3x224x224,tokens:1x64") == {
        "a/x": (1, 3, 224, 224),
        "tokens": (1, 64),
    }
    for bad in ("x", "x:1xa", "x:-1"):
        with pytest.raises(UserInputError):
            parse_shapes(bad)


def test_manifest_round_trips_and_refuses_unknown_formats(tmp_path):
    manifest = Manifest(
        models=[ModelEntry("a", "a.onnx", "00", {"x": "a/x"}, {"y": "a/y"})],
        weights=[WeightRecord("w", "d0", 4096, 64, "float32", (4, 4), packable=True)],
    )
    path = tmp_path / "m.json"
    path.write_text(manifest.to_json())
    assert read_manifest(path) == manifest
    data = json.loads(path.read_text())
    data["weights"][0]["shape"] = ["four", 4]
    path.write_text(json.dumps(data))
    with pytest.raises(UserInputError, match="manifest is malformed"):
        read_manifest(path)
    data["weights"] = manifest.to_dict()["weights"]
    data["format"] = "fusedinf-bundle/99"
    path.write_text(json.dumps(data))
    with pytest.raises(UserInputError, match="fusedinf-bundle/99"):
        read_manifest(path)
    path.write_text("[1, 2]")
    with pytest.raises(UserInputError, match="not a JSON manifest"):
        read_manifest(path)


@pytest.mark.parametrize(
    ("given", "complaint"),
    [
        ({"image": np.zeros((2, 3, 8, 8), np.float32)}, None),  # the batch dim is dynamic
        (
            {"image": np.zeros((2, 3, 8, 9), np.float32)},
            "image is 2x3x8x9, the model wants ?x3x8x8",
        ),
        ({"image": np.zeros((3,), np.float32)}, "image is 3, the model wants ?x3x8x8"),
        ({"image": np.zeros((1, 3, 8, 8), np.int64)}, "image is int64, the model wants float32"),
        ({"frame": np.zeros((1, 3, 8, 8), np.float32)}, "missing ['image'], unexpected ['frame']"),
    ],
)
def test_feeds_from_a_file_must_fit_the_model(tmp_path, given, complaint):
    """A mistake in the user's .npz is theirs to fix: a one-line error, not a runtime failure."""
    spec = TensorSpec(name="image", dtype=np.dtype(np.float32), shape=(None, 3, 8, 8))
    path = tmp_path / "feeds.npz"
    np.savez(path, **given)
    if complaint is None:
        assert load_feeds(path, [spec])["image"].shape == (2, 3, 8, 8)
        return
    with pytest.raises(UserInputError) as raised:
        load_feeds(path, [spec])
    assert complaint in str(raised.value)


@pytest.mark.parametrize(
    ("text", "count", "shown"),
    [
        ("512", 512, "512 B"),
        ("1KiB", 1024, "1.0 KiB"),
        ("1.5MiB", 3 * 2**19, "1.5 MiB"),
        ("300MB", 300 * 10**6, "286.1 MiB"),
        ("2GiB", 2 * 2**30, "2.0 GiB"),
        ("5000GiB", 5000 * 2**30, "5000.0 GiB"),
    ],
)
def test_sizes_read_as_written_and_print_in_the_largest_fitting_unit(text, count, shown):
    assert parse_size(text, "--budget") == count
    assert format_bytes(count) == shown


@pytest.mark.parametrize(
    ("text", "complaint"), [("lots", "use e.g. 512MiB"), ("-1MiB", "negative")]
)
def test_a_size_that_is_not_one_names_the_option(text, complaint):
    with pytest.raises(UserInputError, match=f"--budget '{text}': .*{complaint}"):
        parse_size(text, "--budget")
