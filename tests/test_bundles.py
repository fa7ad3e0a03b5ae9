"""Bundle builds from a spec, the dist folder's checks, pack/unpack, and the Triton export."""

from __future__ import annotations

import io
import json
import tarfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper

from fusedinf_cc.common.errors import UserInputError
from fusedinf_cc.precompile.build import cache_key
from fusedinf_cc.precompile.spec import read_spec
from tests import builders
from tests.conftest import run_cli

FLOAT = TensorProto.FLOAT


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A spec beside two small models, in a folder of its own."""
    models = tmp_path / "models"
    models.mkdir()
    builders.save(builders.affine(0, batch="n"), models / "a.onnx")
    builders.save(builders.affine(1, batch="n"), models / "b.onnx")
    builders.save(builders.affine(2, width=4), models / "c.onnx")
    (tmp_path / "fusedinf.toml").write_text(
        "[bundles.pair]\n"
        'models = { a = "models/a.onnx", b = "models/b.onnx" }\n'
        'share_inputs = "auto"\n'
        'targets = ["onnx", "ort"]\n'
        "\n"
        "[bundles.solo]\n"
        'models = { c = "models/c.onnx" }\n'
        "verify = { rtol = 1e-4, atol = 1e-4 }\n"
    )
    return tmp_path


def _spec_error(tmp_path: Path, text: str) -> str:
    (tmp_path / "models").mkdir(exist_ok=True)
    builders.save(builders.affine(0), tmp_path / "models" / "a.onnx")
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(UserInputError) as raised:
        read_spec(path)
    return str(raised.value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[bundle.x]\nmodels = { a = "models/a.onnx" }\n', "bad.toml:1: unknown key 'bundle'"),
        (
            '[bundles.x]\nmodels = { a = "models/a.onnx" }\ntarget = ["onnx"]\n',
            "bad.toml:3: unknown key 'target' in bundles.x",
        ),
        (
            '[bundles.x]\nmodels = { a = "models/a.onnx", b = "models/nope.onnx" }\n',
            "bad.toml:2: model 'b': no file",
        ),
        ('[bundles.x]\nshare_inputs = "auto"\n', "bad.toml:1: bundles.x has no models"),
        (
            '[bundles.x]\nmodels = { a = "models/a.onnx" }\n[bundles.x]\nmodels = {}\n',
            "not valid TOML (Cannot declare ('bundles', 'x') twice (at line 3",
        ),
        (
            '[bundles.x]\nmodels = { a = "models/a.onnx" }\ntargets = ["tflite"]\n',
            "bad.toml:3: targets must be a list of onnx, ort, engine",
        ),
        (
            '[bundles.x]\nmodels = { a = "models/a.onnx" }\nengine = { fp17 = true }\n',
            "bad.toml:3: unknown engine option 'fp17'",
        ),
        (
            '[bundles.x]\nmodels = { a = "models/a.onnx" }\n'
            'engine = { mem_pool_size = "workspace:lots" }\n',
            "bad.toml:3: --mem-pool-size workspace 'lots'",
        ),
        ("", "no bundles"),
        (
            '[bundles.x]\nmodels = { a = "models/a.onnx" }\naot = "yes"\n',
            "bad.toml:3: aot is true or false",
        ),
        (
            '[bundles.x]\nmodels = { a = "models/a.onnx" }\nstack = 1\n',
            "bad.toml:3: stack is true or false",
        ),
        (
            '[bundles.x]\nmodels = { a = "models/a.onnx" }\ntargets = ["ort"]\naot = true\n',
            "bad.toml:4: aot optimises the onnx target",
        ),
        (
            '[bundles.a]\nmodels = { a = "models/a.onnx" }\n',
            "bad.toml:2: model 'a' has its bundle's",
        ),
        (
            '[bundles.x]\nmodels = { a = "models/a.onnx" }\nengine = { fp16 = "yes" }\n',
            'bad.toml:3: engine option fp16 is true or false, not "yes"',
        ),
        (
            '[bundles.x]\nmodels = { a = "models/a.onnx" }\nengine = { min_shapes = 3 }\n',
            "bad.toml:3: engine option min_shapes is a string, not 3",
        ),
        (
            '[bundles.x]\nmodels = { a = "models/a.onnx" }\n'
            "engine = { builder_opt_level = true }\n",
            "bad.toml:3: engine option builder_opt_level is an integer, not true",
        ),
        (
            '[bundles.x]\nmodels = { a = "models/a.onnx" }\nengine = "fast"\n',
            "bad.toml:3: engine must be a table of options",
        ),
        (
            '[bundles.x]\nmodels = { a = "models/a.onnx" }\nverify = { rtol = "tight" }\n',
            "bad.toml:3: a tolerance is a number, not 'tight'",
        ),
        (
            '[bundles.x]\nmodels = { a = "models/a.onnx" }\nverify = { atol = -1e-5 }\n',
            "bad.toml:3: a tolerance is a finite number >= 0, not -1e-05",
        ),
    ],
)
def test_spec_mistakes_name_the_line(tmp_path, text, expected):
    assert expected in _spec_error(tmp_path, text)


def test_paths_are_relative_to_the_spec_and_precision_maps_to_engine_flags(project, tmp_path):
    (project / "fusedinf.toml").write_text(
        '[bundles.x]\nmodels = { a = "models/a.onnx" }\nprecision = "fp16"\n'
    )
    spec = read_spec(project / "fusedinf.toml")
    assert spec.bundles["x"].models["a"] == (project / "models" / "a.onnx").resolve()
    assert spec.bundles["x"].engine == {"fp16": True}


def test_build_verifies_writes_and_then_skips_unchanged_bundles(project):
    report = project / "report.json"
    first = run_cli(
        "bundle", "build", "fusedinf.toml", "--out", "dist", "--json", report, cwd=project
    )
    assert first.returncode == 0, first.stderr
    dist = project / "dist"
    assert sorted(p.name for p in (dist / "pair").iterdir()) == [
        "bundle.json",
        "pair.onnx",
        "pair.onnx.manifest.json",
        "pair.ort",
        "pair.ort.manifest.json",
        "pair.part-a.onnx",  # what a request for model a runs
        "pair.part-a.ort",
        "pair.part-b.onnx",
        "pair.part-b.ort",
    ]
    data = json.loads(report.read_text())
    assert data["ok"] and {b["status"] for b in data["bundles"]} == {"built"}
    assert all(v["ok"] for b in data["bundles"] for v in b["verify"])
    stamp = (dist / "pair" / "pair.onnx").stat().st_mtime_ns

    second = run_cli("bundle", "build", "fusedinf.toml", "--out", "dist", cwd=project)
    assert second.returncode == 0 and "nothing to do" in second.stdout
    assert (dist / "pair" / "pair.onnx").stat().st_mtime_ns == stamp

    builders.save(builders.affine(7, batch="n"), project / "models" / "b.onnx")
    third = run_cli(
        "bundle", "build", "fusedinf.toml", "--out", "dist", "--json", report, cwd=project
    )
    assert third.returncode == 0, third.stderr
    statuses = {b["name"]: b["status"] for b in json.loads(report.read_text())["bundles"]}
    assert statuses == {"pair": "built", "solo": "cached"}


def test_an_aot_bundle_is_built_for_this_cpu_and_keyed_by_it(project):
    (project / "fusedinf.toml").write_text(
        '[bundles.pair]\nmodels = { a = "models/a.onnx", b = "models/b.onnx" }\naot = true\n'
    )
    result = run_cli("bundle", "build", "fusedinf.toml", "--out", "dist", cwd=project)
    assert result.returncode == 0, result.stderr
    manifest = json.loads((project / "dist" / "pair" / "pair.onnx.manifest.json").read_text())
    assert manifest["build_options"]["aot"] is True and manifest["device"]["kind"] == "cpu"
    spec = read_spec(project / "fusedinf.toml")
    portable = replace(spec.bundles["pair"], aot=False)
    assert cache_key(spec.bundles["pair"]) != cache_key(portable)
    assert run_cli("bundle", "verify", project / "dist").returncode == 0
    exported = run_cli("export", "triton", "dist/pair", "-o", "repo", cwd=project)
    assert exported.returncode == 2 and "aot = true" in exported.stderr
    assert not (project / "repo" / "pair").exists()


def test_fused_onnx_is_byte_identical_across_builds(project):
    for out in ("one", "two"):
        result = run_cli(
            "bundle", "build", "fusedinf.toml", "--out", out, "--targets", "onnx", cwd=project
        )
        assert result.returncode == 0, result.stderr
    for name in ("pair/pair.onnx", "solo/solo.onnx"):
        assert (project / "one" / name).read_bytes() == (project / "two" / name).read_bytes()


def test_parallel_jobs_build_the_same_bundles(project):
    result = run_cli(
        "bundle", "build", "fusedinf.toml", "--out", "dist", "--jobs", "2", cwd=project
    )
    assert result.returncode == 0, result.stderr
    verify = run_cli("bundle", "verify", "dist", cwd=project)
    assert verify.returncode == 0 and "2 bundles intact" in verify.stdout


def test_a_bundle_that_fails_verification_exits_1_and_is_not_written(project):
    noisy = builders.make_model(
        [
            helper.make_node("RandomUniformLike", ["x"], ["r"], name="noise"),
            helper.make_node("Add", ["x", "r"], ["y"], name="add"),
        ],
        [helper.make_tensor_value_info("x", FLOAT, [1, 8])],
        [helper.make_tensor_value_info("y", FLOAT, [1, 8])],
    )
    builders.save(noisy, project / "models" / "noisy.onnx")
    # Random kernels draw seeds in graph order: fused, the second model's draw differs from
    # the draw it makes alone, as a real fusion bug would make an output differ.
    (project / "fusedinf.toml").write_text(
        '[bundles.noisy]\nmodels = { n = "models/noisy.onnx", m = "models/noisy.onnx" }\n'
    )
    result = run_cli("bundle", "build", "fusedinf.toml", "--out", "dist", cwd=project)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "noisy.onnx differs from its sources:" in result.stderr
    assert not (project / "dist" / "noisy").exists()


def test_bad_spec_exits_2_and_writes_nothing(project):
    (project / "fusedinf.toml").write_text('[bundles.x]\nmodels = { a = "models/missing.onnx" }\n')
    result = run_cli("bundle", "build", "fusedinf.toml", "--out", "dist", cwd=project)
    assert result.returncode == 2 and "fusedinf.toml:2" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (project / "dist").exists() or not any((project / "dist").iterdir())


def test_verify_lists_what_is_damaged(project):
    assert run_cli("bundle", "build", "fusedinf.toml", "--out", "dist", cwd=project).returncode == 0
    dist = project / "dist"
    with open(dist / "pair" / "pair.ort", "r+b") as stream:
        stream.seek(100)
        stream.write(b"\x00\x01\x02")
    (dist / "solo" / "solo.onnx").unlink()
    result = run_cli("bundle", "verify", "dist", cwd=project)
    assert result.returncode == 1
    assert "pair/pair.ort: sha256 differs" in result.stdout
    assert "solo/solo.onnx: missing" in result.stdout


def test_pack_is_reproducible_and_unpack_restores_verified_bundles(project):
    assert run_cli("bundle", "build", "fusedinf.toml", "--out", "dist", cwd=project).returncode == 0
    for name in ("a.tar.gz", "b.tar.gz"):
        assert run_cli("bundle", "pack", "dist", "-o", name, cwd=project).returncode == 0
    assert (project / "a.tar.gz").read_bytes() == (project / "b.tar.gz").read_bytes()
    result = run_cli("bundle", "unpack", "a.tar.gz", "-o", "edge", cwd=project)
    assert result.returncode == 0, result.stderr
    assert run_cli("bundle", "verify", "edge", cwd=project).returncode == 0
    run = run_cli("run", project / "edge" / "pair" / "pair.onnx")
    assert run.returncode == 0, run.stderr


def _archive(path: Path, members: list[tuple[tarfile.TarInfo, bytes]]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for info, data in members:
            info.size = len(data) if info.isfile() else 0
            tar.addfile(info, io.BytesIO(data) if info.isfile() else None)
    return path


def _index(files: dict[str, bytes]) -> bytes:
    import hashlib

    return json.dumps(
        {
            "format": "fusedinf-dist/1",
            "name": "x",
            "cache_key": "k",
            "artifacts": [],
            "files": {name: hashlib.sha256(data).hexdigest() for name, data in files.items()},
        }
    ).encode()


def _link(name: str, target: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.SYMTYPE
    info.linkname = target
    return info


@pytest.mark.parametrize(
    ("members", "expected"),
    [
        ([(tarfile.TarInfo("/etc/x"), b"x")], "absolute path '/etc/x'"),
        ([(tarfile.TarInfo("x/../../evil"), b"x")], "climbs out with '..'"),
        (
            [
                (tarfile.TarInfo("x/bundle.json"), _index({})),
                (_link("x/m.onnx", "/etc/passwd"), b""),
            ],
            "'x/m.onnx' is a link",
        ),
        (
            [
                (tarfile.TarInfo("x/bundle.json"), _index({"m.onnx": b"m"})),
                (tarfile.TarInfo("x/m.onnx"), b"m"),
                (tarfile.TarInfo("x/extra.sh"), b"#!/bin/sh"),
            ],
            "'x/extra.sh' is not named by its bundle's bundle.json",
        ),
        (
            [
                (tarfile.TarInfo("x/bundle.json"), _index({"m.onnx": b"m"})),
                (tarfile.TarInfo("x/m.onnx"), b"tampered"),
            ],
            "x/m.onnx: sha256 differs",
        ),
    ],
)
def test_unpack_refuses_unsafe_or_unlisted_entries(tmp_path, members, expected):
    archive = _archive(tmp_path / "evil.tar.gz", members)
    result = run_cli("bundle", "unpack", archive, "-o", tmp_path / "out")
    assert result.returncode == 2, result.stdout + result.stderr
    assert expected in result.stderr
    out = tmp_path / "out"
    assert not out.exists() or not [p for p in out.iterdir() if not p.name.startswith(".")]
    assert not (tmp_path / "evil").exists()


def test_triton_export_parses_as_triton_model_config(project):
    text_format = pytest.importorskip("google.protobuf.text_format")
    model_config = pytest.importorskip(
        "tritonclient.grpc.model_config_pb2", reason="needs tritonclient (the dev extra)"
    )
    assert run_cli("bundle", "build", "fusedinf.toml", "--out", "dist", cwd=project).returncode == 0
    result = run_cli("export", "triton", "dist/pair", "-o", "repo", cwd=project)
    assert result.returncode == 0, result.stderr
    folder = project / "repo" / "pair"
    config = text_format.Parse((folder / "config.pbtxt").read_text(), model_config.ModelConfig())
    assert config.name == "pair" and config.platform == "onnxruntime_onnx"
    # every tensor has the dynamic batch dim n: Triton batches along it
    assert config.max_batch_size == 8
    fp32 = model_config.DataType.Value("TYPE_FP32")
    assert [(t.name, t.data_type, list(t.dims)) for t in config.input] == [("x", fp32, [8])]
    assert sorted((t.name, t.data_type, list(t.dims)) for t in config.output) == [
        ("a/y", fp32, [8]),
        ("b/y", fp32, [8]),
    ]
    assert config.instance_group[0].kind == model_config.ModelInstanceGroup.Kind.Value("KIND_CPU")
    assert (folder / "1" / "model.onnx").read_bytes() == (
        project / "dist" / "pair" / "pair.onnx"
    ).read_bytes()

    solo = run_cli("export", "triton", "dist/solo", "-o", "repo", cwd=project)
    assert solo.returncode == 0, solo.stderr
    config = text_format.Parse(
        (project / "repo" / "solo" / "config.pbtxt").read_text(), model_config.ModelConfig()
    )
    assert config.max_batch_size == 0 and list(config.input[0].dims) == [1, 4]
    again = run_cli("export", "triton", "dist/solo", "-o", "repo", cwd=project)
    assert again.returncode == 2 and "exists" in again.stderr


def test_triton_export_copies_the_external_weights_file(tmp_path):
    big = builders.affine(0, width=1500, weight=np.ones((1500, 1500), np.float32))
    builders.save(big, tmp_path / "big.onnx")
    (tmp_path / "fusedinf.toml").write_text('[bundles.big]\nmodels = { m = "big.onnx" }\n')
    assert (
        run_cli("bundle", "build", "fusedinf.toml", "--out", "dist", cwd=tmp_path).returncode == 0
    )
    assert (tmp_path / "dist" / "big" / "big.onnx.data").is_file()
    assert run_cli("export", "triton", "dist/big", "-o", "repo", cwd=tmp_path).returncode == 0
    assert (tmp_path / "repo" / "big" / "1" / "big.onnx.data").is_file()
