"""`plan`: choose the bundles for a request trace and a memory budget."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from fusedinf_cc.cli.base import (
    AOT,
    CPUS,
    DEVICE_PROFILE,
    KEEP_PAGE_CACHE,
    MEMORY_LIMIT,
    PLAN_LOADING,
    READ_AHEAD,
    READ_BANDWIDTH,
    STACK,
    WORK_DIR_HELP,
    console,
    error_console,
    model_specs,
    progress_bar,
    reports_errors,
    run_as_on_device,
    run_folder,
    work_folder,
)
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
    work_dir: Annotated[Path | None, typer.Option("--work-dir", help=WORK_DIR_HELP)] = None,
    keep_page_cache: KEEP_PAGE_CACHE = False,
    loading: PLAN_LOADING = None,
    device_profile: DEVICE_PROFILE = None,
    memory_limit: MEMORY_LIMIT = None,
    read_bandwidth: READ_BANDWIDTH = None,
    cpus: CPUS = None,
    read_ahead: READ_AHEAD = None,
) -> None:
    """Group models into bundles for a trace and a budget; write them as a fusedinf.toml.

    Measures every model alone and the hottest functions fused, fits a cost model on them,
    searches groupings on predicted replays of the first part of the trace, then replays the
    plan, unfused and one bundle per function on the rest with real bundles.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn

    from fusedinf_cc.cli.tables import plan_bundles_table, plan_lines, plan_table
    from fusedinf_cc.common.sizes import format_bytes
    from fusedinf_cc.limits.cgroups import device_record
    from fusedinf_cc.limits.profiles import DeviceProfile
    from fusedinf_cc.plan.planner import AUTO_LOADING, PlanSettings, plan
    from fusedinf_cc.plan.spec_file import spec_text, write_plan_spec
    from fusedinf_cc.runtime.budget import parse_budget
    from fusedinf_cc.runtime.loading import check_loading
    from fusedinf_cc.workload.replay import check_policies
    from fusedinf_cc.workload.requests import TraceSpec
    from fusedinf_cc.workload.traces import load_workload

    check_output_file(out)
    if json_out is not None:
        check_output_file(json_out)
    if out.suffix != ".toml":
        raise UserInputError(f"-o {out}: a bundle spec is a .toml file")
    specs = model_specs(models)
    check_policies([policy])
    loading = AUTO_LOADING if loading == AUTO_LOADING else check_loading(loading)
    if replays < 0 or search_seconds <= 0:
        raise UserInputError("--replays is 0 or more and --search-seconds positive")
    asked = parse_budget(budget)
    run_as_on_device(
        device_profile, memory_limit, read_bandwidth, cpus, read_ahead, run_folder(work_dir)
    )
    workload = load_workload(
        trace, functions, lambda: sorted(specs), TraceSpec(), functions_required=True
    )
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
    with work_folder(work_dir, "plan") as folder, progress_bar(*columns) as progress:
        settings = PlanSettings(
            budget=asked,
            policy=policy,
            loading=loading,
            aot=aot,
            stack=stack,
            holdout=holdout,
            replays=replays,
            search_seconds=search_seconds,
            work_dir=folder,
            keep_page_cache=keep_page_cache,
        )
        tasks: dict[str, int] = {}

        def report(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = progress.add_task(stage, total=total or None)
            progress.update(tasks[stage], completed=done, total=total or None)

        chosen = plan(specs, workload.functions, workload.requests, settings, report)
    for notice in chosen.notices:
        error_console.print(notice, highlight=False)
    device = device_record()
    profile = DeviceProfile(**device["profile"]).describe() if device else None
    header = (
        f"Written by `fusedinf-cc plan` for {trace.name}: budget "
        f"{format_bytes(chosen.budget_bytes)}, policy {policy}, loading {chosen.loading}"
        f"{f', on {profile}' if profile else ''}.\n"
        f"Build it with `fusedinf-cc bundle build {out.name}`; serve it with "
        f"`--loading {chosen.loading}`."
    )
    text = spec_text(chosen.bundles, specs, out.parent, aot=aot, stack=stack, header=header)
    write_plan_spec(out, text, chosen.bundles)
    console.print(plan_bundles_table(chosen))
    console.print(plan_table(chosen, profile))
    for line in plan_lines(chosen):
        console.print(line)
    console.print(f"wrote {out}")
    if json_out is not None:
        record = {
            "trace": str(trace),
            "policy": policy,
            "loading": chosen.loading,
            "aot": aot,
            "keep_page_cache": keep_page_cache,
            "device": device_record(),  # what the group used by now
            **chosen.to_record(),
        }
        write_text_atomic(json_out, json.dumps(record, indent=2) + "\n")
        console.print(f"wrote {json_out}")
