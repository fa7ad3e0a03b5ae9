"""The tables and lines the CLI prints: each command's results as rich renderables."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from rich.console import RenderableType
from rich.table import Table
from rich.text import Text

from fusedinf_cc.backends.cpu_target import CpuTarget
from fusedinf_cc.common.sizes import format_bytes

if TYPE_CHECKING:  # the reports' types only: a table module must not load what made them
    from fusedinf_cc.artifacts.manifest import Manifest, PassRecord
    from fusedinf_cc.compiler.inspection import ModelSummary
    from fusedinf_cc.measure.bench import BenchReport
    from fusedinf_cc.measure.verify import VerifyReport
    from fusedinf_cc.plan.report import Evaluation, Plan
    from fusedinf_cc.workload.replay import ReplayResult


def simulation_table(results: list[ReplayResult]) -> Table:
    """One row per deployment and policy replayed."""
    table = Table(
        "deployment",
        "policy",
        "loading",
        "misses",
        "models loaded",
        "evictions",
        "loading s",
        "p50 ms",
        "p99 ms",
        "peak accounted",
        "RSS growth",
        "read",
        title=f"{results[0].requests} requests, budget {format_bytes(results[0].budget_bytes)}",
    )
    for r in results:
        table.add_row(
            r.deployment,
            r.policy,
            r.loading or "-",
            str(r.misses),
            str(r.models_loaded),
            str(r.evictions),
            f"{r.seconds_loading:.2f}",
            f"{r.p50_ms:.1f}",
            f"{r.p99_ms:.1f}",
            format_bytes(r.peak_accounted_bytes),
            format_bytes(r.peak_rss_growth_bytes),
            format_bytes(r.bytes_read),
        )
    return table


def plan_bundles_table(plan: Plan) -> Table:
    """The plan's bundles: their models and predicted footprints (with an arena)."""
    table = Table("bundle", "models", "footprint", title="plan")
    for name, members in plan.bundles.lists().items():
        table.add_row(name, ", ".join(members), format_bytes(plan.bundle_bytes[name]))
    return table


def plan_table(plan: Plan, device: str | None = None) -> Table:
    """Each deployment on the held-out requests: predicted, then replayed (the median, and the
    range over the replays); `device`: the profile the command ran under."""
    on = f", on {device}" if device else ""
    table = Table(
        "deployment",
        "bundles",
        "misses",
        "MiB read",
        "loading s",
        "p50 ms",
        "p99 ms",
        title=(
            f"{plan.held_out_requests} held-out requests (planned on {plan.planning_requests}), "
            f"budget {format_bytes(plan.budget_bytes)}, {plan.search.best.result.policy}, "
            f"loading {plan.loading}{on}: predicted / replayed"
        ),
    )
    for evaluation in plan.evaluations:
        if evaluation.predicted is None or evaluation.left_out:
            why = evaluation.left_out or "not judged"
            table.add_row(evaluation.deployment, str(evaluation.bundles), Text(why), "", "", "", "")
            continue
        table.add_row(
            evaluation.deployment,
            str(evaluation.bundles),
            _predicted_replayed(evaluation, lambda r: r.misses, "{:.0f}"),
            _predicted_replayed(evaluation, lambda r: r.bytes_read / 2**20, "{:.0f}"),
            _predicted_replayed(evaluation, lambda r: r.seconds_loading, "{:.2f}"),
            _predicted_replayed(evaluation, lambda r: r.p50_ms, "{:.1f}"),
            _predicted_replayed(evaluation, lambda r: r.p99_ms, "{:.1f}"),
        )
    return table


def plan_lines(plan: Plan) -> list[str]:
    """What the plan gains over the better baseline, how low any grouping could go, why the
    plan is a baseline where it is one, and what the search judged."""
    lines = []
    ratios = plan.over_baselines()
    if ratios:
        measured = "replayed" if plan.replayed else "predicted"
        lines.append(
            f"plan over the better baseline ({measured}): loading seconds "
            f"{ratios['loading_seconds']:.2f}x, p99 {ratios['p99_ms']:.2f}x"
        )
        if "p99_nothing_evicted" in ratios:
            lines.append(
                f"with nothing evicted, p99 is {ratios['p99_nothing_evicted']:.2f}x the better "
                "baseline's (the lower of unfused and fused): about the least any grouping "
                "reaches, since it wins back what swapping adds and what fused sessions gain"
            )
    if plan.kept_baseline:
        lines.append(f"the plan is {plan.kept_baseline}: {plan.kept_because}")
    if plan.loading_scores:
        weighed = ", ".join(f"{name} {score:.2f}" for name, score in plan.loading_scores.items())
        lines.append(
            f"loading {plan.loading}, predicted best of each policy's best grouping (p50 plus "
            f"p99, each over the best baseline's; lower is better): {weighed}"
        )
    lines.append(f"searched {plan.search.evaluated} groupings in {plan.search.seconds:.1f} s")
    return lines


def _predicted_replayed(evaluation: Evaluation, value: Callable, form: str) -> str:
    predicted = form.format(value(evaluation.predicted)) if evaluation.predicted else "-"
    median, spread = evaluation.median(value), evaluation.spread(value)
    if median is None or spread is None:
        return f"{predicted} / -"
    low, high = spread
    ranged = f" ({form.format(low)}-{form.format(high)})" if len(evaluation.replayed) > 1 else ""
    return f"{predicted} / {form.format(median)}{ranged}"


def summary_lines(summary: ModelSummary) -> list[RenderableType]:
    """What `inspect` prints: the model's header and tensors, then a fused model's map."""
    lines: list[RenderableType] = []
    if summary.nodes is not None:
        opsets = ", ".join(
            f"{domain or 'ai.onnx'}:{v}" for domain, v in sorted(summary.opsets.items())
        )
        lines.append(
            Text(
                f"{summary.path}: IR {summary.ir_version}, opsets {opsets}, {summary.nodes} "
                f"nodes, {format_bytes(summary.parameter_bytes or 0)} of parameters"
            )
        )
        table = Table("", "name", "dtype", "shape", title="inputs and outputs")
        for kind, infos in (("in", summary.inputs), ("out", summary.outputs)):
            for info in infos:
                table.add_row(kind, info.name, info.dtype, info.shape)
        lines.append(table)
    if summary.manifest is not None:
        lines.append(map_table(summary.manifest))
        target = CpuTarget.from_record(summary.manifest.device)
        if target is not None:
            lines.append(
                Text(
                    f"optimised ahead of time for {target.describe()}; runs on that CPU class only"
                )
            )
    return lines


def map_table(manifest: Manifest) -> Table:
    table = Table("model", "", "source name", "fused name", title="per-model map")
    for entry in manifest.models:
        for kind, mapping in (("in", entry.inputs), ("out", entry.outputs)):
            for original, fused in mapping.items():
                table.add_row(entry.name, kind, original, fused)
    return table


def pass_table(records: list[PassRecord]) -> Table:
    table = Table(
        "pass", "changed", "nodes", "initializers", "weights", "ms", "detail", title="passes"
    )
    for record in records:
        table.add_row(
            record.name,
            "yes" if record.changed else "no",
            delta(record.nodes_before, record.nodes_after),
            delta(record.initializers_before, record.initializers_after),
            delta(record.weight_bytes_before, record.weight_bytes_after, format_bytes),
            f"{record.seconds * 1000:.1f}",
            record.detail,
        )
    return table


def verify_table(report: VerifyReport) -> Table:
    table = Table(
        "model",
        "output",
        "fused name",
        "shape",
        "max abs",
        "max rel",
        "result",
        title="fused vs separate",
    )
    for c in report.comparisons:
        verdict = "bitwise" if c.bitwise else ("ok" if c.ok else "[red]MISMATCH[/]")
        table.add_row(
            c.model,
            c.output,
            c.fused_name,
            "x".join(map(str, c.shape)) or "scalar",
            f"{c.max_abs:.3g}",
            f"{c.max_rel:.3g}",
            verdict + (f" {c.note}" if c.note else ""),
        )
    return table


def bench_configs_table(report: BenchReport) -> Table:
    table = Table(
        "configuration",
        "load s",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "req/s",
        "peak RSS",
        "rounds' peaks MiB",
        title="every configuration (a fresh process per round)",
    )
    for result in report.results:
        row = result.summary()
        table.add_row(
            row["label"],
            f"{row['load_s']:.3f}",
            f"{row['p50_ms']:.2f}",
            f"{row['p90_ms']:.2f}",
            f"{row['p99_ms']:.2f}",
            f"{row['throughput_rps']:.1f}",
            format_bytes(row["peak_rss_bytes"]),
            _range_mib(row["peak_rss_bytes_by_round"]),
        )
    return table


def _range_mib(values: list[int]) -> str:
    """Lowest-highest of the rounds' figures: how far the same configuration moved."""
    low, high = (f"{value / 2**20:.1f}" for value in (min(values), max(values)))
    return low if low == high else f"{low}-{high}"


def bench_summary_table(report: BenchReport) -> Table:
    separate, fused = report.best("separate").summary(), report.best("fused").summary()
    ratios = report.ratios()
    table = Table(
        "metric",
        f"separate ({separate['label']})",
        f"fused ({fused['label']})",
        "fused / separate",
        title="fastest separate vs fastest fused",
    )
    rows = [
        ("cold load", "load_s", lambda v: f"{v:.3f} s"),
        ("latency p50", "p50_ms", lambda v: f"{v:.2f} ms"),
        ("latency p90", "p90_ms", lambda v: f"{v:.2f} ms"),
        ("latency p99", "p99_ms", lambda v: f"{v:.2f} ms"),
        ("throughput", "throughput_rps", lambda v: f"{v:.1f} req/s"),
        ("peak RSS", "peak_rss_bytes", format_bytes),
        ("artifact bytes", "artifact_bytes", format_bytes),
    ]
    if "gpu_bytes" in ratios:
        rows.append(("GPU memory", "gpu_bytes", format_bytes))
    if "load_read_bytes" in ratios:
        rows.insert(1, ("read by the cold load", "load_read_bytes", format_bytes))
    for label, key, fmt in rows:
        table.add_row(label, fmt(separate[key]), fmt(fused[key]), f"{ratios[key]:.2f}x")
    return table


def delta(before: int, after: int, fmt: Callable[[int], str] = str) -> str:
    return fmt(after) if before == after else f"{fmt(before)} -> {fmt(after)}"
