"""Fixtures: a footprint cache of each test's own, small models, and zoo models (exported once,
cached). Helpers live in `tests/support/`."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.commands import ZOO_CACHE


@pytest.fixture(scope="session", autouse=True)
def fixtures_footprint_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """What fixtures wider than one test measure (a server a module shares) goes to a cache of
    the session's own, never the user's."""
    folder = tmp_path_factory.mktemp("footprints")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FUSEDINF_CACHE_DIR", str(folder))
        yield folder


@pytest.fixture(autouse=True)
def footprint_cache(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """Each test measures into a cache of its own (and the commands it starts do too): no test
    passes because another measured a footprint first, in any order (the suite runs shuffled)."""
    folder = tmp_path_factory.mktemp("footprints")
    monkeypatch.setenv("FUSEDINF_CACHE_DIR", str(folder))
    return folder


@pytest.fixture(scope="module")
def small_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Four small distinct models (m0..m3) for replays: fast to build, load and run."""
    from tests.support import builders

    folder = tmp_path_factory.mktemp("small-models")
    return {
        f"m{i}": builders.save(builders.affine(i, width=128), folder / f"m{i}.onnx")
        for i in range(4)
    }


@pytest.fixture(scope="session")
def zoo() -> Callable[..., Path]:
    """`zoo("resnet18", opset=11)` -> path of that export, made once per cache."""
    pytest.importorskip("torch", reason="the model zoo needs torch (pip install torch==2.13.0)")
    from model_zoo.zoo import export

    def get(name: str, *, opset: int = 17, dynamic_batch: bool = False) -> Path:
        folder = ZOO_CACHE / f"opset{opset}{'-dynamic' if dynamic_batch else ''}"
        return export(name, folder, opset=opset, dynamic_batch=dynamic_batch)

    return get


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A spec beside three small models, in a folder of its own: `pair` (a and b, which share
    their input) and `solo` (c)."""
    from tests.support import builders

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


@pytest.fixture
def pair_dist(tmp_path: Path) -> Path:
    """A dist folder of one built bundle, `pair`: two affine models `a` and `b`."""
    from tests.support.commands import build_pair_dist

    return build_pair_dist(tmp_path)
