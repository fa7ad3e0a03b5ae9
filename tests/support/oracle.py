"""The independent check: run sources and fused model with plain onnxruntime, compare outputs.

Written against onnxruntime directly (not fusedinf_cc.measure.verify) so that tests of the
compiler do not lean on the code that `verify` itself is.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from fusedinf_cc.artifacts.manifest import Manifest

_TYPES = {
    "tensor(float)": np.float32,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(bool)": np.bool_,
}


def session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: unused initializers in sources are expected
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def feeds_for(sess: ort.InferenceSession, seed: int = 0, dims: dict[str, int] | None = None):
    rng = np.random.default_rng(seed)
    feeds = {}
    for arg in sess.get_inputs():
        shape = [d if isinstance(d, int) else (dims or {}).get(str(d), 1) for d in arg.shape]
        dtype = _TYPES[arg.type]
        if np.issubdtype(dtype, np.floating):
            feeds[arg.name] = rng.standard_normal(shape).astype(dtype)
        else:
            feeds[arg.name] = rng.integers(0, 8, shape).astype(dtype)
    return feeds


def compare_fused(
    fused_path: Path, manifest: Manifest, seed: int = 0, dims: dict[str, int] | None = None
) -> dict[str, tuple[float, bool]]:
    """{"model.output": (max abs error, bitwise)} for every output of every source model."""
    fused = session(fused_path)
    feeds = feeds_for(fused, seed, dims)
    fused_outputs = dict(
        zip([o.name for o in fused.get_outputs()], fused.run(None, feeds), strict=True)
    )
    results = {}
    for entry in manifest.models:
        source = session(fused_path.parent / entry.source)
        expected = source.run(None, {orig: feeds[name] for orig, name in entry.inputs.items()})
        for arg, want in zip(source.get_outputs(), expected, strict=True):
            got = fused_outputs[entry.outputs[arg.name]]
            assert got.shape == want.shape, f"{entry.name}.{arg.name}: shape {got.shape}"
            error = float(np.max(np.abs(got.astype(np.float64) - want))) if want.size else 0.0
            results[f"{entry.name}.{arg.name}"] = (error, got.tobytes() == want.tobytes())
    return results


def assert_bitwise(fused_path: Path, manifest: Manifest, **kwargs) -> None:
    results = compare_fused(fused_path, manifest, **kwargs)
    assert results, "no outputs compared"
    differing = {name: err for name, (err, bitwise) in results.items() if not bitwise}
    assert not differing, f"outputs differ from the separate models: {differing}"


def assert_within_rounding(fused_path: Path, manifest: Manifest, atol: float = 1e-4) -> None:
    """Every output equal to the separate model's up to float32 rounding. For graphs whose
    layers the fused model computes in another form (a stacked, grouped convolution in place
    of K convolutions): ONNX Runtime's AVX-512 kernels may sum such a convolution in another
    order than the K separate ones, so the outputs are not always bitwise equal."""
    results = compare_fused(fused_path, manifest)
    assert results, "no outputs compared"
    differing = {name: err for name, (err, _) in results.items() if not err <= atol}
    assert not differing, f"outputs differ from the separate models: {differing}"


def outputs(path: Path, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """What ONNX Runtime's CPU provider gives for `path` on `feeds`, by output name."""
    sess = session(path)
    names = [output.name for output in sess.get_outputs()]
    return dict(zip(names, sess.run(None, feeds), strict=True))
