"""The bundle spec (fusedinf.toml): what it asks for, and its mistakes named by line."""

from __future__ import annotations

from pathlib import Path

import pytest

from fusedinf_cc.common.errors import UserInputError
from fusedinf_cc.precompile.spec import read_spec
from tests.support import builders
from tests.support.commands import run_cli


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


def test_bad_spec_exits_2_and_writes_nothing(project):
    (project / "fusedinf.toml").write_text('[bundles.x]\nmodels = { a = "models/missing.onnx" }\n')
    result = run_cli("bundle", "build", "fusedinf.toml", "--out", "dist", cwd=project)
    assert result.returncode == 2 and "fusedinf.toml:2" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (project / "dist").exists() or not any((project / "dist").iterdir())
