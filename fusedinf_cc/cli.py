"""The `fusedinf-cc` command: parses arguments, calls the library, renders results. Nothing else."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import sys
import tempfile
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any, TypeVar

import numpy as np
import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress
from rich.table import Table

from fusedinf_cc import __version__
from fusedinf_cc.backends.tensorrt import parse_engine_options
from fusedinf_cc.backends.tensorrt.support import check_tensorrt_support
from fusedinf_cc.bench import bench_artifact, default_configs
from fusedinf_cc.build import build_fused
from fusedinf_cc.cli_tables import (
    bench_configs_table,
    bench_summary_table,
    pass_table,
    simulation_table,
    summary_lines,
    verify_table,
)
from fusedinf_cc.errors import BackendUnavailableError, FusedInfError, UserInputError
from fusedinf_cc.files import check_output_folder, staging_dir, write_text_atomic
from fusedinf_cc.inspection import inspect_path
from fusedinf_cc.loader import run_once
from fusedinf_cc.model_io import check_unique_names, parse_model_spec
from fusedinf_cc.plot import plot_report, pyplot
from fusedinf_cc.runtimes import DEFAULT_RUNTIME, TENSORRT, check_runtime, is_engine
from fusedinf_cc.shapes import parse_shapes
from fusedinf_cc.simulate import (
    TraceSpec,
    auto_groups,
    check_policies,
    deployments,
    loading_ratios,
    read_name_lists,
    read_trace,
    replay,
    replay_budget,
    results_json,
    synthetic_functions,
    synthetic_trace,
    write_trace,
)
from fusedinf_cc.sizes import format_bytes, parse_size
from fusedinf_cc.verify import DEFAULT_ATOL, DEFAULT_RTOL, verify_artifact

app = typer.Typer(
    help="Fuse several ONNX models into one graph, build it, verify it, benchmark it.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
# Piped output (CI logs, files) gets room for the tables instead of Rich's 80-column default.
_PIPED_WIDTH = 160
# No emoji codes: a path such as `model.onnx:x:` must print as written.
console = Console(width=None if sys.stdout.isatty() else _PIPED_WIDTH, emoji=False)
error_console = Console(
    stderr=True, width=None if sys.stderr.isatty() else _PIPED_WIDTH, emoji=False
)

F = TypeVar("F", bound=Callable[..., None])

SHARE_INPUT = Annotated[
    list[str] | None,
    typer.Option("--share-input", help="FUSED=m1.in,m2.in: these inputs become one. Repeatable."),
]
SHARE_INPUTS = Annotated[
    str, typer.Option("--share-inputs", help="auto: share inputs with one name, dtype, shape.")
]
NO_DEDUP = Annotated[bool, typer.Option("--no-dedup", help="Keep identical weights apart.")]
NO_CSE = Annotated[bool, typer.Option("--no-cse", help="Keep identical subgraphs apart.")]
STACK = Annotated[
    bool,
    typer.Option(
        "--stack",
        help="Run models of one architecture on one input as one wider model (grouped "
        "convolutions): fewer nodes, faster loads; their weights are no longer shared with "
        "bundles that hold the models apart.",
    ),
]
SINGLE_FILE = Annotated[
    bool,
    typer.Option(
        "--single-file",
        help="Keep weights inside the .onnx (default: a .data file "
        "beside it once weights pass 8 MiB, which loads faster and in less memory).",
    ),
]
AOT = Annotated[
    bool,
    typer.Option(
        "--aot",
        help="Store ONNX Runtime's fully optimised .onnx for this CPU class: loading does no "
        "graph work and memory-maps the weights, shared between processes. Not portable.",
    ),
]


BACKEND = Annotated[
    str,
    typer.Option(
        "--backend",
        help="ort-cpu, ort-cuda or ort-trt (ONNX Runtime's providers); .engine files run on "
        "TensorRT.",
    ),
]


def reports_errors(command: F) -> F:
    """Turn the library's errors into one line on stderr and the error's exit code."""

    @functools.wraps(command)
    def wrapper(*args: object, **kwargs: object) -> None:
        try:
            command(*args, **kwargs)
        except FusedInfError as error:
            error_console.print(
                f"[bold red]error:[/] {escape(str(error))}", highlight=False, soft_wrap=True
            )
            raise typer.Exit(error.exit_code) from None
        except KeyboardInterrupt:
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def _version(value: bool) -> None:
    if value:
        console.print(f"fusedinf-cc {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    """fusedinf-cc: an ahead-of-time fusion compiler for DNN inference."""


@app.command()
@reports_errors
def fuse(
    models: Annotated[
        list[str], typer.Argument(help="[NAME=]MODEL.onnx; NAME defaults to the stem.")
    ],
    output: Annotated[Path, typer.Option("-o", "--output", help="Fused model to write (.onnx).")],
    share_input: SHARE_INPUT = None,
    share_inputs: SHARE_INPUTS = "none",
    no_dedup: NO_DEDUP = False,
    no_cse: NO_CSE = False,
    stack: STACK = False,
    single_file: SINGLE_FILE = False,
    aot: AOT = False,
    explain: Annotated[bool, typer.Option("--explain", help="Print what every pass did.")] = False,
    fp16: Annotated[bool, typer.Option("--fp16", help="[engine] Allow FP16 kernels.")] = False,
    int8: Annotated[
        bool, typer.Option("--int8", help="[engine] Allow INT8 kernels (needs --calib-cache).")
    ] = False,
    calib_cache: Annotated[
        Path | None, typer.Option("--calib-cache", help="[engine] INT8 calibration cache.")
    ] = None,
    strongly_typed: Annotated[
        bool, typer.Option("--strongly-typed", help="[engine] Precisions from the model's types.")
    ] = False,
    mem_pool_size: Annotated[
        str | None,
        typer.Option("--mem-pool-size", help="[engine] POOL:SIZE,... e.g. workspace:2GiB."),
    ] = None,
    shapes: Annotated[
        str | None, typer.Option("--shapes", help="[engine] Fixed dynamic dims: NAME:1x3x224x224.")
    ] = None,
    min_shapes: Annotated[
        str | None, typer.Option("--min-shapes", help="[engine] Profile minimum per input.")
    ] = None,
    opt_shapes: Annotated[
        str | None, typer.Option("--opt-shapes", help="[engine] Profile optimum per input.")
    ] = None,
    max_shapes: Annotated[
        str | None, typer.Option("--max-shapes", help="[engine] Profile maximum per input.")
    ] = None,
    timing_cache: Annotated[
        Path | None, typer.Option("--timing-cache", help="[engine] Read and update this cache.")
    ] = None,
    builder_opt_level: Annotated[
        int | None, typer.Option("--builder-opt-level", help="[engine] 0-5 (default 3).")
    ] = None,
    version_compatible: Annotated[
        bool,
        typer.Option("--version-compatible", help="[engine] Runs on later TensorRT 10.x too."),
    ] = False,
    hardware_compatibility: Annotated[
        str,
        typer.Option(
            "--hardware-compatibility", help="[engine] none, ampere+ or same-compute-capability."
        ),
    ] = "none",
    weight_streaming: Annotated[
        bool,
        typer.Option(
            "--weight-streaming", help="[engine] Stream weights (needs --strongly-typed)."
        ),
    ] = False,
) -> None:
    """Fuse MODELS into one multi-input, multi-output model and write its manifest beside it.

    The output's suffix picks the backend: .onnx or .ort for ONNX Runtime, .engine for TensorRT
    (the [engine] options use trtexec's names).
    """
    engine_flags = {
        "fp16": fp16,
        "int8": int8,
        "calib_cache": calib_cache,
        "strongly_typed": strongly_typed,
        "mem_pool_size": mem_pool_size,
        "shapes": shapes,
        "min_shapes": min_shapes,
        "opt_shapes": opt_shapes,
        "max_shapes": max_shapes,
        "timing_cache": timing_cache,
        "builder_opt_level": builder_opt_level,
        "version_compatible": version_compatible,
        "hardware_compatibility": hardware_compatibility,
        "weight_streaming": weight_streaming,
    }
    # Every flag at its default (None, False, "none") means no engine options were given.
    given = any(
        not (value is None or value is False or value == "none") for value in engine_flags.values()
    )
    engine = parse_engine_options(**engine_flags) if given else None
    with Progress(console=error_console, transient=True) as progress:
        tasks: dict[str, Any] = {}

        def on_phase(phase: str, done: int, total: int) -> None:
            if phase not in tasks:
                tasks[phase] = progress.add_task(phase, total=max(total, 1))
            progress.update(tasks[phase], completed=done)

        manifest = build_fused(
            models,
            output,
            engine=engine,
            progress=on_phase,
            **_fusion_options(share_input, share_inputs, no_dedup, no_cse, stack, single_file, aot),
        )
    if explain:
        console.print(pass_table(manifest.passes))
    assert manifest.artifact is not None
    console.print(
        f"wrote {output} ({format_bytes(manifest.artifact.size_bytes)}, "
        f"{len(manifest.models)} models, "
        f"{sum(len(m.outputs) for m in manifest.models)} outputs) and {output.name}.manifest.json",
        highlight=False,
    )


def _fusion_options(
    share_input: list[str] | None,
    share_inputs: str,
    no_dedup: bool,
    no_cse: bool,
    stack: bool,
    single_file: bool,
    aot: bool,
) -> dict[str, Any]:
    """The fusion flags that `fuse` and `bench` share, as `build_fused` keywords."""
    return {
        "share_input": share_input or (),
        "share_inputs": share_inputs,
        "dedup": not no_dedup,
        "cse": not no_cse,
        "stack": stack,
        "single_file": single_file,
        "aot": aot,
    }


@app.command()
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
    separate_side_files: Annotated[
        bool,
        typer.Option(
            "--separate-side-files",
            help="Run the separate models re-saved with the fused artifact's weight layout "
            "(a side file above 8 MiB), so that only fusion differs.",
        ),
    ] = False,
) -> None:
    """Fused vs separate: cold load, latency p50/p90/p99, throughput, peak memory, bytes."""
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
            check_output_folder(written)
    if not models and fused is None:
        raise UserInputError("give the models to fuse, or --fused FUSED.onnx")
    if aot and not models:
        raise UserInputError("--aot applies when bench fuses MODELS; --fused X is benched as built")
    if plot is not None:
        pyplot()  # fail now, not after the benchmark, when matplotlib is missing
    with tempfile.TemporaryDirectory(prefix="fusedinf-bench-") as scratch:
        artifact = fused or Path(scratch) / "fused.onnx"
        if models:
            build_fused(
                models,
                artifact,
                **_fusion_options(
                    share_input, share_inputs, no_dedup, no_cse, stack, single_file, aot
                ),
            )
        configs = default_configs(threads, backend)
        with Progress(console=error_console, transient=True) as progress:
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
            )
    console.print(bench_configs_table(report))
    console.print(bench_summary_table(report))
    if json_out is not None:
        write_text_atomic(json_out, json.dumps(report.to_dict(), indent=2) + "\n")
        console.print(f"wrote {json_out}")
    if plot is not None:
        plot_report(report.to_dict(), plot)
        console.print(f"wrote {plot}")


@app.command()
@reports_errors
def verify(
    artifact: Annotated[Path, typer.Argument(help="A fused model written by `fuse`.")],
    inputs: Annotated[
        Path | None, typer.Option("--inputs", help=".npz of inputs, by fused name.")
    ] = None,
    shapes: Annotated[
        str | None, typer.Option("--shapes", help="Dynamic dims: NAME:1x3x224x224,...")
    ] = None,
    rtol: Annotated[float, typer.Option("--rtol", help="Relative tolerance.")] = DEFAULT_RTOL,
    atol: Annotated[float, typer.Option("--atol", help="Absolute tolerance.")] = DEFAULT_ATOL,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the random inputs.")] = 0,
    backend: BACKEND = DEFAULT_RUNTIME,
) -> None:
    """Check that every fused output equals the separate source model's output.

    The sources always run on ONNX Runtime's CPU provider, the reference; the fused artifact
    runs on --backend (an engine on TensorRT). FP16 engines need looser --rtol/--atol.
    """
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
    console.print(f"all {len(report.comparisons)} outputs match (rtol={rtol:g}, atol={atol:g})")


@app.command("run")
@reports_errors
def run_command(
    bundle: Annotated[
        Path, typer.Argument(help="A fused artifact (with its manifest) or a model.")
    ],
    inputs: Annotated[
        Path | None, typer.Option("--inputs", help=".npz of inputs (default: random ones).")
    ] = None,
    model: Annotated[
        str | None, typer.Option("--model", help="Run one model of the bundle, by its name.")
    ] = None,
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="Write the outputs to this .npz.")
    ] = None,
    backend: BACKEND = DEFAULT_RUNTIME,
    weight_streaming_budget: Annotated[
        str | None,
        typer.Option(
            "--weight-streaming-budget",
            help="Engines built with --weight-streaming: GPU bytes for weights (e.g. 256MiB).",
        ),
    ] = None,
) -> None:
    """Run one request through the loader and print each output's shape and checksum."""
    results = run_once(
        bundle,
        model=model,
        feeds_path=inputs,
        runtime=check_runtime(backend),
        weight_streaming_budget=(
            parse_size(weight_streaming_budget, "--weight-streaming-budget")
            if weight_streaming_budget is not None
            else None
        ),
    )
    table = Table("output", "dtype", "shape", "sum", "sha256", title=f"{model or bundle.name}")
    for name, value in results.items():
        digest = hashlib.sha256(np.ascontiguousarray(value).tobytes()).hexdigest()[:16]
        table.add_row(
            name,
            str(value.dtype),
            "x".join(map(str, value.shape)) or "scalar",
            f"{float(value.astype(np.float64).sum()):.6g}",
            digest,
        )
    console.print(table)
    if output is not None:
        with staging_dir(output) as staging:
            np.savez(staging / "outputs.npz", **results)
            os.replace(staging / "outputs.npz", output)
        console.print(f"wrote {output}")


@app.command()
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
    work_dir: Annotated[
        Path, typer.Option("--work-dir", help="Where the fused bundles are built (reused).")
    ] = Path(".fusedinf-simulate"),
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the results here.")] = None,
    save_trace: Annotated[
        Path | None, typer.Option("--save-trace", help="Write the replayed trace as CSV.")
    ] = None,
    fused_groups: Annotated[
        str | None,
        typer.Option(
            "--fused-groups",
            help="Also replay a bundle per group: auto (models always called together) or "
            'JSON {"group": ["model", ...]}.',
        ),
    ] = None,
    aot: Annotated[
        bool,
        typer.Option("--aot", help="Build every deployment's bundles with fuse --aot."),
    ] = False,
    stack: Annotated[
        bool, typer.Option("--stack", help="Build the fused and grouped bundles with --stack.")
    ] = False,
) -> None:
    """Replay a request trace on the real loader: fused vs unfused (vs grouped), per policy."""
    if (trace is None) == (not synthetic):
        raise UserInputError("give --trace TRACE.csv or --synthetic (one of them)")
    for written in (json_out, save_trace):
        if written is not None:
            check_output_folder(written)
    named = [parse_model_spec(spec) for spec in models]
    check_unique_names(named)
    specs = dict(named)
    if work_dir.exists() and not work_dir.is_dir():
        raise UserInputError(f"--work-dir {work_dir}: not a folder")
    if rate <= 0 or requests < 1:
        raise UserInputError("--rate must be positive and --requests at least 1")
    workload = TraceSpec(requests=requests, seed=seed, rate_per_s=rate)
    if functions is not None:
        function_map = read_name_lists(functions, "--functions", "fn")
    else:
        function_map = synthetic_functions(sorted(specs), workload)
    replayed = read_trace(trace) if trace else synthetic_trace(sorted(function_map), workload)
    missing = {r.function for r in replayed} - set(function_map)
    if missing:
        raise UserInputError(f"the trace names unknown functions: {sorted(missing)}")
    policies = [p.strip() for p in policy.split(",") if p.strip()]
    check_policies(policies)
    groups = None
    if fused_groups == "auto":
        groups = auto_groups(function_map) or None
        if groups is None:
            error_console.print("--fused-groups auto: no models are always called together")
    elif fused_groups is not None:
        groups = read_name_lists(Path(fused_groups), "--fused-groups (auto or a file)", "group")
    plans = deployments(specs, function_map, work_dir, groups, aot=aot, stack=stack)
    budget_bytes, notice = replay_budget(budget, plans)
    if notice:
        error_console.print(notice)
    results = []
    with Progress(console=error_console, transient=True) as progress:
        task = progress.add_task("replaying", total=len(plans) * len(policies))
        for plan in plans:
            for name in policies:
                results.append(replay(replayed, plan, budget_bytes, name))
                progress.update(task, advance=1)
    console.print(simulation_table(results))
    for name, ratios in loading_ratios(results).items():
        against = ", ".join(f"{deployment} {ratio:.2f}x" for deployment, ratio in ratios.items())
        console.print(f"loading seconds over unfused, {name}: {against}")
    if save_trace is not None:
        write_trace(replayed, save_trace)
    if json_out is not None:
        extra = {
            "functions": function_map,
            "workload": asdict(workload),
            "groups": groups,
            "aot": aot,
            "stack": stack,
        }
        write_text_atomic(json_out, results_json(results, extra))
        console.print(f"wrote {json_out}")


@app.command("check")
@reports_errors
def check_command(
    model: Annotated[Path, typer.Argument(help="An ONNX model (fused or not).")],
    target: Annotated[str, typer.Option("--target", help="What to check for: tensorrt.")],
) -> None:
    """Find what a target will reject before a build: operators, attributes, types, profiles.

    Exit 1 when something would fail the build; warnings and profile notes alone exit 0.
    """
    if target != TENSORRT:
        raise UserInputError(f"--target {target!r}: only tensorrt can be checked")
    report = check_tensorrt_support(model)
    low, high = report.opset_range
    title = (
        f"{model.name} against TensorRT {report.tensorrt}'s ONNX parser (opsets {low}-{high}), "
        f"{report.nodes} nodes"
    )
    if report.findings:
        table = Table("severity", "node", "op", "finding", title=title)
        for finding in report.findings:
            style = {"error": "red", "warning": "yellow"}.get(finding.severity, "cyan")
            table.add_row(
                f"[{style}]{finding.severity}[/]", finding.node, finding.op, finding.message
            )
        console.print(table)
    else:
        console.print(title, highlight=False)
    if not report.ok:
        error_console.print(
            f"[bold red]unsupported:[/] {len(report.errors)} findings would fail a TensorRT build",
            highlight=False,
        )
        raise typer.Exit(1)
    console.print("nothing TensorRT would reject")


bundle_app = typer.Typer(
    help="Precompile bundles from a fusedinf.toml spec; check, pack and unpack them.",
    no_args_is_help=True,
)
app.add_typer(bundle_app, name="bundle")
export_app = typer.Typer(help="Export built bundles to other servers.", no_args_is_help=True)
app.add_typer(export_app, name="export")


@bundle_app.command("build")
@reports_errors
def bundle_build(
    spec: Annotated[Path, typer.Argument(help="The spec file, fusedinf.toml.")],
    out: Annotated[Path, typer.Option("--out", help="Where dist/<bundle>/ folders go.")] = Path(
        "dist"
    ),
    jobs: Annotated[int, typer.Option("--jobs", help="Bundles built at once.")] = 1,
    only: Annotated[
        list[str] | None, typer.Option("--only", help="Build this bundle only. Repeatable.")
    ] = None,
    targets: Annotated[
        str | None,
        typer.Option("--targets", help="Build only these targets: onnx,ort,engine."),
    ] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write a report here.")] = None,
) -> None:
    """Build, verify and write every bundle; unchanged bundles (same cache key) are skipped.

    Exit 0 when all are built or cached, 1 when one fails verification, 2 for a bad spec.
    """
    from fusedinf_cc.bundle_spec import read_spec
    from fusedinf_cc.bundles import build_bundles, results_json, select

    if jobs < 1:
        raise UserInputError("--jobs must be at least 1")
    if json_out is not None:
        check_output_folder(json_out)
    chosen = select(
        read_spec(spec),
        only or (),
        [t.strip() for t in targets.split(",") if t.strip()] if targets else (),
    )
    with Progress(console=error_console, transient=True) as progress:
        task = progress.add_task("building bundles", total=len(chosen))
        results = build_bundles(
            chosen, out, jobs=jobs, on_done=lambda r: progress.update(task, advance=1)
        )
    table = Table("bundle", "status", "artifacts", "seconds", "cache key", title=f"{spec} -> {out}")
    for result in results:
        style = {"built": "green", "cached": "cyan"}.get(result.status, "red")
        table.add_row(
            result.name,
            f"[{style}]{result.status}[/]",
            ", ".join(f"{a.path} ({format_bytes(a.size_bytes)})" for a in result.artifacts),
            f"{result.seconds:.1f}",
            result.cache_key[:12],
        )
    console.print(table)
    cached = sum(r.status == "cached" for r in results)
    if cached == len(results):
        console.print(f"all {cached} bundles unchanged: nothing to do")
    if json_out is not None:
        write_text_atomic(json_out, results_json(results, {"spec": str(spec), "out": str(out)}))
    bad = [r for r in results if r.status in ("failed", "error")]
    for result in bad:
        error_console.print(
            f"[bold red]{result.status}:[/] {result.name}: {escape(result.error or '')}",
            highlight=False,
            soft_wrap=True,
        )
    if any(r.status == "error" for r in bad):
        raise typer.Exit(2)
    if bad:
        raise typer.Exit(1)


@bundle_app.command("verify")
@reports_errors
def bundle_verify(
    dist: Annotated[Path, typer.Argument(help="A folder of built bundles.")],
) -> None:
    """Check every artifact's sha256 against its manifest and bundle.json; exit 1 on damage."""
    from fusedinf_cc.bundles import verify_dist

    bundles, problems = verify_dist(dist)
    for problem in problems:
        console.print(f"[red]damaged:[/] {escape(problem)}", highlight=False)
    if problems:
        raise typer.Exit(1)
    console.print(f"{len(bundles)} bundles intact: {', '.join(bundles)}")


@bundle_app.command("pack")
@reports_errors
def bundle_pack(
    dist: Annotated[Path, typer.Argument(help="A folder of built bundles.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="The .tar.gz to write.")],
) -> None:
    """Pack every bundle into one reproducible tar.gz."""
    from fusedinf_cc.bundle_archive import pack

    members = pack(dist, output)
    console.print(f"wrote {output} ({len(members)} files)")


@bundle_app.command("unpack")
@reports_errors
def bundle_unpack(
    archive: Annotated[Path, typer.Argument(help="A .tar.gz written by bundle pack.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Folder to unpack into.")],
) -> None:
    """Unpack, refusing unsafe or unlisted entries, and check every file's sha256."""
    from fusedinf_cc.bundle_archive import unpack

    bundles = unpack(archive, output)
    console.print(f"unpacked {len(bundles)} bundles into {output}: {', '.join(bundles)}")


@export_app.command("triton")
@reports_errors
def export_triton_command(
    bundle: Annotated[Path, typer.Argument(help="A built bundle folder, dist/<bundle>.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="The model repository.")],
    target: Annotated[
        str | None, typer.Option("--target", help="onnx or engine (default: onnx if built).")
    ] = None,
    max_batch_size: Annotated[
        int, typer.Option("--max-batch-size", help="When every tensor has a dynamic batch dim.")
    ] = 8,
    version: Annotated[int, typer.Option("--version", help="The model version folder.")] = 1,
) -> None:
    """Write a Triton model repository entry: config.pbtxt and the model file."""
    from fusedinf_cc.export.triton import export_triton

    folder = export_triton(
        bundle, output, target=target, max_batch_size=max_batch_size, version=version
    )
    console.print(f"wrote {folder}/config.pbtxt and {folder}/{version}/")


@app.command("serve")
@reports_errors
def serve_command(
    dist: Annotated[Path, typer.Argument(help="A folder of built bundles (bundle build --out).")],
    budget: Annotated[
        str, typer.Option("--budget", help="Memory budget for resident bundles: 2GiB, 512MiB.")
    ] = "2GiB",
    policy: Annotated[str, typer.Option("--policy", help="Eviction policy: lru or gdsf.")] = "gdsf",
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port to listen on.")] = 8000,
    workers: Annotated[
        int, typer.Option("--workers", help="Processes; each gets budget / workers.")
    ] = 1,
    backend: BACKEND = DEFAULT_RUNTIME,
    max_body: Annotated[
        str, typer.Option("--max-body", help="Largest request body accepted.")
    ] = "64MiB",
) -> None:
    """Serve every bundle over HTTP (KServe v2 / Triton protocol), loading on demand."""
    try:
        from fusedinf_cc.serve.app import ServeConfig
        from fusedinf_cc.serve.server import serve
    except ImportError:
        from fusedinf_cc.serve import SERVE_HINT

        raise BackendUnavailableError(SERVE_HINT) from None
    if workers < 1:
        raise UserInputError("--workers must be at least 1")
    config = ServeConfig(
        dist=dist,
        budget_bytes=parse_size(budget, "--budget"),
        policy=policy,
        runtime=check_runtime(backend),
        max_body_bytes=parse_size(max_body, "--max-body"),
    )
    serve(config, host=host, port=port, workers=workers)


@app.command("inspect")
@reports_errors
def inspect_command(
    path: Annotated[Path, typer.Argument(help="An ONNX model or a .manifest.json.")],
) -> None:
    """Show inputs, outputs, opsets, parameter bytes and, for fused models, the per-model map."""
    for line in summary_lines(inspect_path(path)):
        console.print(line)


if __name__ == "__main__":
    app()
