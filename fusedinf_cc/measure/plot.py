"""A bench report as a picture a person reads at a glance (matplotlib, an optional extra).

Left: fused / separate for every metric, with the break-even line at 1. Right: p50 latency of every
configuration tried, so the fairness of the baseline is visible too.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from fusedinf_cc.common.errors import BackendUnavailableError
from fusedinf_cc.common.files import staging_dir

# (key, label, higher_is_better)
_METRICS = (
    ("load_s", "cold load", False),
    ("p50_ms", "latency p50", False),
    ("p99_ms", "latency p99", False),
    ("throughput_rps", "throughput", True),
    ("peak_rss_bytes", "peak RSS", False),
    ("artifact_bytes", "artifact bytes", False),
)
_BETTER, _WORSE = "#2a9d8f", "#e76f51"
_VARIANT_COLOURS = {"separate": "#8d99ae", "fused": "#264653"}


def pyplot() -> Any:
    """matplotlib's pyplot on a file-only backend, or a one-line error saying what to install."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise BackendUnavailableError(
            "--plot needs matplotlib: pip install 'fusedinf-cc[plot]'"
        ) from None
    return plt


def plot_report(report: dict[str, Any], path: Path, title: str = "fused vs separate") -> None:
    """Draw `report` (as written by `bench --json`) into a PNG at `path`, atomically."""
    plt = pyplot()
    ratios = report["ratios_fused_over_separate"]
    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.6), width_ratios=(1, 1.3))

    labels = [label for _, label, _ in _METRICS]
    values = [ratios[key] for key, _, _ in _METRICS]
    colours = [
        _BETTER if (value > 1) == higher_is_better else _WORSE
        for value, (_, _, higher_is_better) in zip(values, _METRICS, strict=True)
    ]
    bars = left.barh(labels, values, color=colours)
    left.axvline(1.0, color="black", linewidth=1)
    left.invert_yaxis()
    left.bar_label(bars, labels=[f"{v:.2f}x" for v in values], padding=3)
    left.set_xlim(0, max(1.3, max(values) * 1.2))
    left.set_xlabel("fused / separate (green: fused is better)")
    left.set_title("fastest fused vs fastest separate")

    configs = report["configs"]
    names = [config["label"] for config in configs]
    p50 = [config["p50_ms"] for config in configs]
    colours = [_VARIANT_COLOURS[config["config"]["variant"]] for config in configs]
    right.barh(names, p50, color=colours)
    right.invert_yaxis()
    right.set_xlabel("latency p50 (ms) of one request that runs every model")
    right.set_title("every configuration tried")

    environment = report.get("environment", {})
    versions = environment.get("versions", {})
    figure.suptitle(
        f"{title} ({environment.get('cpus', '?')} CPUs, {environment.get('processor', '')}, "
        f"onnxruntime {versions.get('onnxruntime') or versions.get('onnxruntime-gpu', '?')})"
    )
    figure.tight_layout()
    save_figure(figure, path)


def save_figure(figure: Any, path: Path) -> None:
    """Write a figure as PNG via a staging folder and a rename, then free it."""
    try:
        with staging_dir(path) as staging:
            figure.savefig(staging / path.name, dpi=110)
            os.replace(staging / path.name, path)
    finally:
        pyplot().close(figure)
