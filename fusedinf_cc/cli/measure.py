"""`bench`, `verify` and `simulate`: measurements of fused artifacts against their sources."""

from __future__ import annotations

import json
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from fusedinf_cc.backends.runtimes import DEFAULT_RUNTIME, TENSORRT, check_runtime, is_engine
from fusedinf_cc.cli.base import (
    AOT,
    BACKEND,
    CPUS,
    DEVICE_PROFILE,
    KEEP_PAGE_CACHE,
    LOADING_HELP,
    MEMORY_LIMIT,
    NO_CSE,
    NO_DEDUP,
    READ_AHEAD,
    READ_BANDWIDTH,
    SHARE_INPUT,
    SHARE_INPUTS,
    SINGLE_FILE,
    STACK,
    WORK_DIR_HELP,
    console,
    error_console,
    fusion_options,
    model_specs,
    progress_bar,
    reports_errors,
    run_as_on_device,
    run_folder,
    work_folder,
)
from fusedinf_cc.common.errors import UserInputError
from fusedinf_cc.common.files import check_output_file, write_text_atomic
from fusedinf_cc.common.shapes import parse_shapes
from fusedinf_cc.common.tolerances import DEFAULT_ATOL, DEFAULT_RTOL, FP16_ATOL, FP16_RTOL

if TYPE_CHECKING:
    from fusedinf_cc.workload.layout import Layout


@reports_errors
def bench(
    models: Annotated[
        list[str] | None, typer.Argument(help="[NAME=]MODEL.onnx to fuse first (or use --fused).")
    ] = None,
    fused: Annotated[
        Path | None,
        typer.Option("--fused", help="Fused model to bench; with MODELS, where to write it."),
    ] = None,
    share_input: SHARE_INPUT = None,
    share_inputs: SHARE_INPUTS = "none",
    no_dedup: NO_DEDUP = False,
    no_cse: NO_CSE = False,
    stack: STACK = False,
    single_file: SINGLE_FILE = False,
    aot: AOT = False,
    backend: BACKEND = DEFAULT_RUNTIME,
    threads: Annotated[int, typer.Option("--threads", help="Intra-op threads; 0: default.")] = 0,
    runs: Annotated[int, typer.Option("--runs", help="Timed requests per configuration.")] = 50,
    warmup: Annotated[int, typer.Option("--warmup", help="Untimed requests first.")] = 5,
    rounds: Annotated[
        int,
        typer.Option(
            "--rounds",
            help="Fresh processes per configuration, both sides alternating (median round).",
        ),
    ] = 3,
    shapes: Annotated[
        str | None, typer.Option("--shapes", help="Dynamic dims: NAME:1x3x224x224,...")
    ] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the report here.")] = None,
    plot: Annotated[
        Path | None, typer.Option("--plot", help="Draw the report as a PNG (needs matplotlib).")
    ] = None,
    inputs: Annotated[
        Path | None,
        typer.Option("--inputs", help=".npz of inputs by fused name (default: random ones)."),
    ] = None,
    separate_side_files: Annotated[
        bool,
        typer.Option(
            "--separate-side-files",
            help="Run the separate models re-saved with the fused artifact's weight layout "
            "(a side file above 8 MiB), so that only fusion differs.",
        ),
    ] = False,
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            help="Bench one model's request: what the fused artifact runs for it (its part) "
            "against the model built alone as the same kind of artifact.",
        ),
    ] = None,
    device_profile: DEVICE_PROFILE = None,
    memory_limit: MEMORY_LIMIT = None,
    read_bandwidth: READ_BANDWIDTH = None,
    cpus: CPUS = None,
    read_ahead: READ_AHEAD = None,
) -> None:
    """Fused vs separate: cold load, latency p50/p90/p99, throughput, peak memory, bytes."""
    from fusedinf_cc.cli.tables import bench_configs_table, bench_summary_table
    from fusedinf_cc.compiler.build import build_fused
    from fusedinf_cc.limits.run import inside_a_run_group
    from fusedinf_cc.measure.bench import bench_artifact, default_configs, one_model_configs
    from fusedinf_cc.measure.plot import plot_report, pyplot

    check_runtime(backend)
    if backend == TENSORRT and (models or fused is None or not is_engine(fused)):
        raise UserInputError(
            "--backend tensorrt benches an engine: build it with `fusedinf-cc fuse ... -o "
            "fused.engine`, then bench --fused fused.engine (the separate engines are built "
            "with the same options)"
        )
    if runs < 1 or warmup < 0 or rounds < 1 or threads < 0:
        raise UserInputError(
            "--runs and --rounds must be at least 1, --warmup and --threads at least 0"
        )
    for written in (json_out, plot):
        if written is not None:
            check_output_file(written)
    if not models and fused is None:
        raise UserInputError("give the models to fuse, or --fused FUSED.onnx")
    if aot and not models:
        raise UserInputError("--aot applies when bench fuses MODELS; --fused X is benched as built")
    if plot is not None:
        pyplot()  # fail now, not after the benchmark, when matplotlib is missing
    where = fused.parent if fused is not None else Path(tempfile.gettempdir())
    run_as_on_device(device_profile, memory_limit, read_bandwidth, cpus, read_ahead, where)
    with tempfile.TemporaryDirectory(prefix="fusedinf-bench-") as scratch:
        artifact = fused or Path(scratch) / "fused.onnx"
        if models:
            build_fused(
                models,
                artifact,
                **fusion_options(
                    share_input, share_inputs, no_dedup, no_cse, stack, single_file, aot
                ),
            )
        configs = default_configs(threads, backend)
        if model is not None:
            configs = one_model_configs(configs)
        with progress_bar() as progress:
            task = progress.add_task("benchmarking", total=len(configs) * rounds)
            report = bench_artifact(
                artifact,
                runs=runs,
                warmup=warmup,
                threads=threads,
                shapes=parse_shapes(shapes),
                configs=configs,
                on_config_done=lambda result: progress.update(
                    task, advance=1, description=result.config.label
                ),
                runtime=backend,
                scratch=Path(scratch),
                rounds=rounds,
                separate_side_files=separate_side_files,
                feeds_path=inputs,
                model=model,
                cold=inside_a_run_group(),
            )
    if model is not None:
        console.print(
            f"model {model}: fused = what {artifact.name} runs for it "
            f"({report.environment['runs_in_fused']}); separate = the model built alone"
        )
    console.print(bench_configs_table(report))
    console.print(bench_summary_table(report))
    if json_out is not None:
        write_text_atomic(json_out, json.dumps(report.to_dict(), indent=2) + "\n")
        console.print(f"wrote {json_out}")
    if plot is not None:
        plot_report(report.to_dict(), plot)
        console.print(f"wrote {plot}")


@reports_errors
def verify(
    artifact: Annotated[Path, typer.Argument(help="A fused model written by `fuse`.")],
    inputs: Annotated[
        Path | None, typer.Option("--inputs", help=".npz of inputs, by fused name.")
    ] = None,
    shapes: Annotated[
        str | None, typer.Option("--shapes", help="Dynamic dims: NAME:1x3x224x224,...")
    ] = None,
    rtol: Annotated[
        float | None,
        typer.Option(
            "--rtol", help=f"Relative tolerance [default: {DEFAULT_RTOL:g}; FP16: {FP16_RTOL:g}]."
        ),
    ] = None,
    atol: Annotated[
        float | None,
        typer.Option(
            "--atol", help=f"Absolute tolerance [default: {DEFAULT_ATOL:g}; FP16: {FP16_ATOL:g}]."
        ),
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the random inputs.")] = 0,
    backend: BACKEND = DEFAULT_RUNTIME,
) -> None:
    """Check that every fused output equals the separate source model's output.

    The sources always run on ONNX Runtime's CPU provider, the reference; the fused artifact
    runs on --backend (an engine on TensorRT). An FP16 engine is checked at FP16 tolerances
    unless --rtol/--atol say otherwise.
    """
    from fusedinf_cc.cli.tables import verify_table
    from fusedinf_cc.measure.verify import verify_artifact

    report = verify_artifact(
        artifact,
        feeds_path=inputs,
        shapes=parse_shapes(shapes),
        rtol=rtol,
        atol=atol,
        seed=seed,
        runtime=backend,
    )
    console.print(verify_table(report))
    if not report.ok:
        names = ", ".join(f"{c.model}.{c.output}" for c in report.failures)
        error_console.print(f"[bold red]mismatch:[/] {names}", highlight=False)
        raise typer.Exit(1)
    parts = sum(comparison.part for comparison in report.comparisons)
    also = f", and so do the {parts} model parts" if parts else ""
    outputs = len(report.comparisons) - parts
    console.print(f"all {outputs} outputs match{also} (rtol={report.rtol:g}, atol={report.atol:g})")


@reports_errors
def simulate(
    models: Annotated[
        list[str], typer.Argument(help="[NAME=]MODEL.onnx: the models functions use.")
    ],
    budget: Annotated[
        str,
        typer.Option(
            "--budget",
            help="Memory budget: 512MiB, 2GiB, or 50% of all models (at least the largest bundle).",
        ),
    ] = "50%",
    policy: Annotated[
        str,
        typer.Option(
            "--policy",
            help="Policies to compare: lru, gdsf, and belady (clairvoyant: knows the trace).",
        ),
    ] = "lru,gdsf",
    trace: Annotated[
        Path | None, typer.Option("--trace", help="CSV timestamp,function (else --synthetic).")
    ] = None,
    synthetic: Annotated[
        bool, typer.Option("--synthetic", help="Zipf popularity, Poisson arrivals.")
    ] = False,
    functions: Annotated[
        Path | None,
        typer.Option("--functions", help='JSON {"fn": ["model", ...]} (default: drawn at random).'),
    ] = None,
    requests: Annotated[int, typer.Option("--requests", help="Synthetic trace length.")] = 400,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the synthetic workload.")] = 0,
    rate: Annotated[
        float, typer.Option("--rate", help="Synthetic arrivals per second (Poisson).")
    ] = 4.0,
    work_dir: Annotated[Path | None, typer.Option("--work-dir", help=WORK_DIR_HELP)] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the results here.")] = None,
    save_trace: Annotated[
        Path | None, typer.Option("--save-trace", help="Write the replayed trace as CSV.")
    ] = None,
    fused_groups: Annotated[
        str | None,
        typer.Option(
            "--fused-groups",
            help="Also replay a bundle per group: auto (models always called together), "
            'JSON {"group": ["model", ...]}, or a fusedinf.toml (e.g. one `plan` wrote).',
        ),
    ] = None,
    aot: Annotated[
        bool,
        typer.Option("--aot", help="Build every deployment's bundles with fuse --aot."),
    ] = False,
    stack: Annotated[
        bool, typer.Option("--stack", help="Build the fused and grouped bundles with --stack.")
    ] = False,
    keep_page_cache: KEEP_PAGE_CACHE = False,
    loading: Annotated[
        str | None,
        typer.Option(
            "--loading",
            help=f"{LOADING_HELP} Several, comma-separated (bulk,linear,interleaved), are "
            "replayed side by side.",
        ),
    ] = None,
    prefetch: Annotated[
        bool,
        typer.Option(
            "--prefetch",
            help="Replay each deployment again with the loader reading ahead the bundle that "
            "usually follows (its loading labelled +prefetch), side by side.",
        ),
    ] = False,
    device_profile: DEVICE_PROFILE = None,
    memory_limit: MEMORY_LIMIT = None,
    read_bandwidth: READ_BANDWIDTH = None,
    cpus: CPUS = None,
    read_ahead: READ_AHEAD = None,
) -> None:
    """Replay a request trace on the real loader: fused vs unfused (vs grouped), per policy."""
    from fusedinf_cc.cli.tables import simulation_table
    from fusedinf_cc.limits.cgroups import device_record
    from fusedinf_cc.measure.simulate import simulate as simulate_workload
    from fusedinf_cc.runtime.budget import parse_budget
    from fusedinf_cc.runtime.loading import check_loading
    from fusedinf_cc.workload.replay import check_policies
    from fusedinf_cc.workload.requests import TraceSpec
    from fusedinf_cc.workload.traces import load_workload, write_trace

    if (trace is None) == (not synthetic):
        raise UserInputError("give --trace TRACE.csv or --synthetic (one of them)")
    for written in (json_out, save_trace):
        if written is not None:
            check_output_file(written)
    specs = model_specs(models)
    run_as_on_device(
        device_profile, memory_limit, read_bandwidth, cpus, read_ahead, run_folder(work_dir)
    )
    if rate <= 0 or requests < 1:
        raise UserInputError("--rate must be positive and --requests at least 1")
    policies = [p.strip() for p in policy.split(",") if p.strip()]
    check_policies(policies)
    named = [name.strip() for name in (loading or "").split(",") if name.strip()]
    loadings = [check_loading(name) for name in named] or [check_loading(None)]
    asked = parse_budget(budget)
    spec = TraceSpec(requests=requests, seed=seed, rate_per_s=rate)
    workload = load_workload(trace, functions, lambda: sorted(specs), spec)
    groups = fused_groups_layout(fused_groups, workload.functions, specs)
    with work_folder(work_dir, "simulate") as folder, progress_bar() as progress:
        task = progress.add_task("replaying", total=None)
        report = simulate_workload(
            specs,
            workload,
            asked,
            policies,
            folder,
            groups=groups,
            aot=aot,
            stack=stack,
            keep_page_cache=keep_page_cache,
            loadings=loadings,
            prefetch=prefetch,
            progress=lambda done, total: progress.update(task, completed=done, total=total),
        )
    if report.notice:
        error_console.print(report.notice, highlight=False)
    console.print(simulation_table(report.results))
    for name, why in report.left_out.items():
        console.print(f"{name}: left out, {why}")
    for name, ratios in report.loading_ratios.items():
        against = ", ".join(f"{deployment} {ratio:.2f}x" for deployment, ratio in ratios.items())
        console.print(f"loading seconds over unfused, {name}: {against}")
    if save_trace is not None:
        write_trace(workload.requests, save_trace)
    if json_out is not None:
        extra = {
            "functions": workload.functions,
            "workload": asdict(spec),
            "groups": groups.lists() if groups is not None else None,
            "aot": aot,
            "stack": stack,
            "keep_page_cache": keep_page_cache,
            "loading": loadings,
            "prefetch": prefetch,
            "device": device_record(),
        }
        write_text_atomic(json_out, report.to_json(extra))
        console.print(f"wrote {json_out}")


def fused_groups_layout(
    given: str | None, functions: dict[str, list[str]], models: dict[str, Path]
) -> Layout | None:
    """The layout `--fused-groups` names: `auto` (models always called together), a
    fusedinf.toml's bundles (e.g. one `plan` wrote), or a JSON object of groups."""
    from fusedinf_cc.precompile.spec import read_spec
    from fusedinf_cc.workload.layout import Layout, auto_groups, check_groups
    from fusedinf_cc.workload.traces import read_name_lists

    if given is None:
        return None
    if given == "auto":
        groups = auto_groups(functions)
        if not groups:
            error_console.print("--fused-groups auto: no models are always called together")
        return groups or None
    if given.endswith(".toml"):
        path = Path(given)
        bundles = read_spec(path).groups()
        unknown = sorted({m for members in bundles.values() for m in members} - set(models))
        if unknown:
            raise UserInputError(f"--fused-groups {path}: models not given: {', '.join(unknown)}")
        return Layout(bundles)  # a model may sit in several bundles
    groups = read_name_lists(Path(given), "--fused-groups (auto or a file)", "group")
    check_groups(groups, models)
    return Layout(groups)
