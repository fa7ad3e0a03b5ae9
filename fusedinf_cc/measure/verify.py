"""verify: run the fused artifact and every source model on the same inputs, compare all outputs.

Like Polygraphy's comparisons, the report says what differs and by how much (max abs and max
rel error per output), never just "failed".
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from fusedinf_cc.artifacts.manifest import Manifest, ModelEntry, manifest_for_artifact
from fusedinf_cc.backends.onnxruntime import OnnxRuntimeSession
from fusedinf_cc.backends.runtimes import DEFAULT_RUNTIME
from fusedinf_cc.backends.sessions import open_session
from fusedinf_cc.common.errors import UserInputError
from fusedinf_cc.common.files import as_path, sha256_file
from fusedinf_cc.common.tolerances import check_tolerance, default_tolerances
from fusedinf_cc.runtime.feeds import load_feeds, random_feeds, refusing_random_inputs, with_bounds


@dataclass(frozen=True)
class OutputComparison:
    model: str
    output: str
    fused_name: str
    shape: tuple[int, ...]
    max_abs: float
    max_rel: float
    bitwise: bool
    ok: bool
    note: str = ""
    part: bool = False  # the model's part (what a request for it runs), not the whole


@dataclass(frozen=True)
class VerifyReport:
    comparisons: list[OutputComparison]
    rtol: float
    atol: float

    @property
    def ok(self) -> bool:
        return all(comparison.ok for comparison in self.comparisons)

    @property
    def failures(self) -> list[OutputComparison]:
        return [comparison for comparison in self.comparisons if not comparison.ok]


def verify_artifact(
    artifact_path: str | os.PathLike[str],
    *,
    feeds_path: str | os.PathLike[str] | None = None,
    shapes: Mapping[str, tuple[int, ...]] | None = None,
    rtol: float | None = None,
    atol: float | None = None,
    seed: int = 0,
    runtime: str = DEFAULT_RUNTIME,
) -> VerifyReport:
    """Compare each fused output with the output of the separate source model it came from.

    A tolerance not given is the artifact's default: FP16 engines get FP16's."""
    artifact_path = as_path(artifact_path, "artifact")
    feeds_path = as_path(feeds_path, "feeds") if feeds_path is not None else None
    manifest = manifest_for_artifact(artifact_path)
    default_rtol, default_atol = default_tolerances(manifest.build_options)
    rtol = check_tolerance(default_rtol if rtol is None else rtol, "--rtol")
    atol = check_tolerance(default_atol if atol is None else atol, "--atol")
    if not manifest.models:
        raise UserInputError(f"{artifact_path}: its manifest names no model; nothing to verify")
    fused = open_session(artifact_path, runtime)
    claimed = {name for entry in manifest.models for name in entry.outputs.values()}
    unclaimed = sorted({spec.name for spec in fused.outputs} - claimed)
    if unclaimed:
        fused.close()
        raise UserInputError(
            f"{artifact_path}: outputs {unclaimed} belong to no model of its manifest"
        )
    if feeds_path is not None:
        feeds = load_feeds(feeds_path, fused.inputs)
    else:
        feeds = random_feeds(with_bounds(fused.inputs, manifest.input_bounds), shapes, seed=seed)
    with refusing_random_inputs(artifact_path, "verify", random=feeds_path is None):
        try:
            fused_outputs = fused.run(feeds)
        finally:
            fused.close()  # before the parts and sources open: one session at a time
        part_outputs = _run_parts(artifact_path, manifest, feeds, runtime)
        sources = [_run_source(artifact_path, manifest, entry, feeds) for entry in manifest.models]
    comparisons = []
    for entry, expected in zip(manifest.models, sources, strict=True):
        for original, fused_name in entry.outputs.items():
            args = (entry.name, original, fused_name, expected[original])
            comparisons.append(compare(*args, fused_outputs[fused_name], rtol, atol))
            if entry.name in part_outputs:
                comparisons.append(
                    _as_part(
                        compare(*args, part_outputs[entry.name][fused_name], rtol, atol),
                        part_outputs[entry.name][fused_name],
                        fused_outputs[fused_name],
                    )
                )
    return VerifyReport(comparisons=comparisons, rtol=rtol, atol=atol)


def _run_source(
    artifact_path: Path, manifest: Manifest, entry: ModelEntry, feeds: Mapping[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """The source model's outputs on the fused inputs it takes, as tensors."""
    source = OnnxRuntimeSession(source_path(artifact_path, manifest, entry))
    try:
        expected = source.run({original: feeds[name] for original, name in entry.inputs.items()})
    finally:
        source.close()
    return {name: _as_tensor(value) for name, value in expected.items()}


def _as_tensor(value: object) -> np.ndarray:
    """A source output as the fused model gives it: a classifier's sequence of maps (ZipMap,
    carried as its tensor by `onnx_io/zipmap.py`) as the probabilities, one column per label
    in the maps' order."""
    if isinstance(value, list) and value and all(isinstance(row, dict) for row in value):
        return np.asarray([list(row.values()) for row in value], dtype=np.float32)
    return np.asarray(value)


def _run_parts(
    artifact_path: Path, manifest: Manifest, feeds: Mapping[str, np.ndarray], runtime: str
) -> dict[str, dict[str, np.ndarray]]:
    """Each model's part (what a request for that model runs) on the same inputs."""
    outputs = {}
    for part in manifest.parts:
        session = open_session(artifact_path, runtime, part=part)
        outputs[part.model] = session.run({spec.name: feeds[spec.name] for spec in session.inputs})
        session.close()
    return outputs


def _as_part(
    comparison: OutputComparison, part_output: np.ndarray, whole_output: np.ndarray
) -> OutputComparison:
    """A part's comparison with the source, marked as the part's and as bitwise equal to the
    whole's output or not (the same kernels should give the same bits)."""
    same = part_output.tobytes() == whole_output.tobytes()
    notes = [comparison.note] if comparison.note else []
    notes += [] if same else ["not bitwise the whole's"]
    return replace(comparison, model=f"{comparison.model} (part)", note="; ".join(notes), part=True)


def source_path(artifact_path: Path, manifest: Manifest, entry: ModelEntry) -> Path:
    """The source model as recorded (relative to the artifact's folder), checked by sha256."""
    path = Path(entry.source)
    if not path.is_absolute():
        path = artifact_path.resolve().parent / path
    if not path.is_file():
        raise UserInputError(f"source model {entry.name!r} is not at {path} any more")
    if sha256_file(path) != entry.sha256:
        raise UserInputError(
            f"source model {entry.name!r} at {path} changed since it was fused (sha256 differs)"
        )
    return path


def compare(
    model: str,
    output: str,
    fused_name: str,
    expected: np.ndarray,
    actual: np.ndarray,
    rtol: float,
    atol: float,
) -> OutputComparison:
    """Max abs/rel error and the allclose verdict; NaNs must sit in the same places."""
    common = dict(model=model, output=output, fused_name=fused_name, shape=tuple(expected.shape))
    if expected.shape != actual.shape or expected.dtype != actual.dtype:
        note = f"{actual.dtype}{list(actual.shape)} vs {expected.dtype}{list(expected.shape)}"
        return OutputComparison(
            **common, max_abs=float("inf"), max_rel=float("inf"), bitwise=False, ok=False, note=note
        )
    bitwise = expected.tobytes() == actual.tobytes()
    if bitwise or expected.size == 0:
        return OutputComparison(**common, max_abs=0.0, max_rel=0.0, bitwise=True, ok=True)
    exp = expected.astype(np.float64)
    act = actual.astype(np.float64)
    nan_mismatch = bool(np.any(np.isnan(exp) != np.isnan(act)))
    diff = np.abs(np.nan_to_num(exp - act, nan=0.0))
    scale = np.maximum(np.abs(exp), np.finfo(np.float64).tiny)
    max_abs = float(diff.max())
    max_rel = float((diff / scale).max())
    within = bool(np.all(diff <= atol + rtol * np.abs(np.nan_to_num(exp))))
    return OutputComparison(
        **common,
        max_abs=max_abs,
        max_rel=max_rel,
        bitwise=False,
        ok=within and not nan_mismatch,
        note="NaNs differ" if nan_mismatch else "",
    )
