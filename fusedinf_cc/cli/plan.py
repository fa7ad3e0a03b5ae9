"""`plan`: choose the bundles for a request trace and a memory budget."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from fusedinf_cc.cli.base import AOT, STACK, console, error_console, reports_errors
from fusedinf_cc.common.errors import UserInputError
from fusedinf_cc.common.files import check_output_file, write_text_atomic


@reports_errors
def plan_command(
    models: Annotated[
        list[str], typer.Argument(help="[NAME=]MODEL.onnx: the models the trace calls.")
    ],
    trace: Annotated[
        Path,
        typer.Option(
            "--trace", help="CSV timestamp,function, or timestamp,models (rows name a+b+c)."
        ),
    ],
    budget: Annotated[
        str,
        typer.Option("--budget", help="Memory budget: 512MiB, 2GiB, or 50% of all models."),
    ],
    functions: Annotated[
        Path | None,
        typer.Option("--functions", help='JSON {"fn": ["model", ...]} for a trace of functions.'),
    ] = None,
    policy: Annotated[
        str, typer.Option("--policy", help="The loader's policy: lru, gdsf, or belady.")
    ] = "gdsf",
    aot: AOT = False,
    stack: STACK = False,
    out: Annotated[Path, typer.Option("-o", "--out", help="The bundle spec to write.")] = Path(
        "fusedinf.toml"
    ),
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the report here.")] = None,
    holdout: Annotated[
        float,
        typer.Option(
            "--holdout", help="Share of the trace, at its end, the plan is judged on (0: none)."
        ),
    ] = 0.5,
    replays: Annotated[
        int,
        typer.Option("--replays", help="Real replays of each deployment on it (0: predict only)."),
    ] = 3,
    search_seconds: Annotated[
        float, typer.Option("--search-seconds", help="Time the search may take.")
    ] = 20.0,
    work_dir: Annotated[
        Path, typer.Option("--work-dir", help="Where bundles are built (reused).")
    ] = Path(".fusedinf-plan"),
) -> None:
    """Group models into bundles for a trace and a budget; write them as a fusedinf.toml.

    Measures every model alone and the hottest functions fused, fits a cost model on them,
    searches groupings on predicted replays of the first part of the trace, then replays the
    plan, unfused and one bundle per function on the rest with real bundles.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from fusedinf_cc.cli.tables import plan_bundles_table, plan_table
    from fusedinf_cc.common.names import check_unique_names, parse_model_spec
    from fusedinf_cc.common.sizes import format_bytes
    from fusedinf_cc.measure.simulate import (
        TraceSpec,
        check_policies,
        read_trace,
        workload_functions,
    )
    from fusedinf_cc.plan.planner import PlanSettings, plan
    from fusedinf_cc.plan.spec_file import spec_text, write_plan_spec

    check_output_file(out)
    if json_out is not None:
        check_output_file(json_out)
    if out.suffix != ".toml":
        raise UserInputError(f"-o {out}: a bundle spec is a .toml file")
    named = [parse_model_spec(spec) for spec in models]
    check_unique_names(named)
    specs = dict(named)
    check_policies([policy])
    if replays < 0 or search_seconds <= 0:
        raise UserInputError("--replays is 0 or more and --search-seconds positive")
    if work_dir.exists() and not work_dir.is_dir():
        raise UserInputError(f"--work-dir {work_dir}: not a folder")
    requests = read_trace(trace)
    if functions is None and not all(r.models for r in requests):
        raise UserInputError(
            f"{trace}: a trace of functions needs --functions (or name the models: "
            "timestamp,models)"
        )
    function_map = workload_functions(requests, functions, lambda: sorted(specs), TraceSpec())
    settings = PlanSettings(
        budget=budget,
        policy=policy,
        aot=aot,
        stack=stack,
        holdout=holdout,
        replays=replays,
        search_seconds=search_seconds,
        work_dir=work_dir,
    )
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
    with Progress(*columns, console=error_console, transient=True) as progress:
        tasks: dict[str, int] = {}

        def report(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = progress.add_task(stage, total=total or None)
            progress.update(tasks[stage], completed=done, total=total or None)

        chosen = plan(specs, function_map, requests, settings, report)
    for notice in chosen.notices:
        error_console.print(notice, highlight=False)
    header = (
        f"Written by `fusedinf-cc plan` for {trace.name}: budget "
        f"{format_bytes(chosen.budget_bytes)}, policy {policy}.\n"
        f"Build it with `fusedinf-cc bundle build {out.name}`."
    )
    text = spec_text(chosen.bundles, specs, out.parent, aot=aot, stack=stack, header=header)
    write_plan_spec(out, text, chosen.bundles)
    console.print(plan_bundles_table(chosen))
    console.print(plan_table(chosen))
    ratios = chosen.over_baselines()
    if ratios:
        measured = "replayed" if chosen.replayed else "predicted"
        console.print(
            f"plan over the better baseline ({measured}): loading seconds "
            f"{ratios['loading_seconds']:.2f}x, p99 {ratios['p99_ms']:.2f}x"
        )
        if "p99_nothing_evicted" in ratios:
            console.print(
                f"with nothing evicted, p99 is {ratios['p99_nothing_evicted']:.2f}x the better "
                "baseline's (the lower of unfused and fused): about the least any grouping "
                "reaches, since it wins back what swapping adds and what fused sessions gain"
            )
    if chosen.kept_baseline:
        console.print(f"the plan is {chosen.kept_baseline}: {chosen.kept_because}")
    console.print(
        f"searched {chosen.search.evaluated} groupings in {chosen.search.seconds:.1f} s; "
        f"wrote {out}"
    )
    if json_out is not None:
        record = {"trace": str(trace), "policy": policy, "aot": aot, **chosen.to_record()}
        write_text_atomic(json_out, json.dumps(record, indent=2) + "\n")
        console.print(f"wrote {json_out}")
