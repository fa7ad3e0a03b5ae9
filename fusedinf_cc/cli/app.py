"""The Typer application: every command registered from its group's module.

Registering a command imports only its module (Typer, Rich and the `common` helpers); the
library a command calls is imported when it runs, so `--help` and `run` stay light.
"""

from __future__ import annotations

from typing import Annotated

import typer

from fusedinf_cc import __version__
from fusedinf_cc.cli import bundle, fuse, measure, plan, run, serve
from fusedinf_cc.cli.base import console

app = typer.Typer(
    help="Fuse several ONNX models into one graph, build it, verify it, benchmark it.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


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


app.command()(fuse.fuse)
app.command()(measure.bench)
app.command()(measure.verify)
app.command("run")(run.run_command)
app.command()(measure.simulate)
app.command("plan")(plan.plan_command)
app.command("check")(fuse.check_command)

bundle_app = typer.Typer(
    help="Precompile bundles from a fusedinf.toml spec; check, pack and unpack them.",
    no_args_is_help=True,
)
app.add_typer(bundle_app, name="bundle")
bundle_app.command("build")(bundle.bundle_build)
bundle_app.command("verify")(bundle.bundle_verify)
bundle_app.command("pack")(bundle.bundle_pack)
bundle_app.command("unpack")(bundle.bundle_unpack)

export_app = typer.Typer(help="Export built bundles to other servers.", no_args_is_help=True)
app.add_typer(export_app, name="export")
export_app.command("triton")(bundle.export_triton_command)

app.command("serve")(serve.serve_command)
app.command("inspect")(fuse.inspect_command)

if __name__ == "__main__":
    app()
