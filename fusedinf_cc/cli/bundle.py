"""`bundle build|verify|pack|unpack` and `export triton`: dist folders and what they ship to."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from fusedinf_cc.cli.base import console, error_console, progress_bar, reports_errors
from fusedinf_cc.common.errors import UserInputError
from fusedinf_cc.common.files import check_output_file, write_text_atomic
from fusedinf_cc.common.sizes import format_bytes


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
    from rich.table import Table

    from fusedinf_cc.precompile.build import build_bundles, results_json, select
    from fusedinf_cc.precompile.spec import read_spec

    if jobs < 1:
        raise UserInputError("--jobs must be at least 1")
    if json_out is not None:
        check_output_file(json_out)
    chosen = select(
        read_spec(spec),
        only or (),
        [t.strip() for t in targets.split(",") if t.strip()] if targets else (),
    )
    with progress_bar() as progress:
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


@reports_errors
def bundle_verify(
    dist: Annotated[Path, typer.Argument(help="A folder of built bundles.")],
) -> None:
    """Check every artifact's sha256 against its manifest and bundle.json; exit 1 on damage."""
    from fusedinf_cc.artifacts.index import verify_dist

    bundles, problems = verify_dist(dist)
    for problem in problems:
        console.print(f"[red]damaged:[/] {escape(problem)}", highlight=False)
    if problems:
        raise typer.Exit(1)
    console.print(f"{len(bundles)} bundles intact: {', '.join(bundles)}")


@reports_errors
def bundle_pack(
    dist: Annotated[Path, typer.Argument(help="A folder of built bundles.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="The .tar.gz to write.")],
) -> None:
    """Pack every bundle into one reproducible tar.gz."""
    from fusedinf_cc.artifacts.archive import pack

    members = pack(dist, output)
    console.print(f"wrote {output} ({len(members)} files)")


@reports_errors
def bundle_unpack(
    archive: Annotated[Path, typer.Argument(help="A .tar.gz written by bundle pack.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Folder to unpack into.")],
) -> None:
    """Unpack, refusing unsafe or unlisted entries, and check every file's sha256."""
    from fusedinf_cc.artifacts.archive import unpack

    bundles = unpack(archive, output)
    console.print(f"unpacked {len(bundles)} bundles into {output}: {', '.join(bundles)}")


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
