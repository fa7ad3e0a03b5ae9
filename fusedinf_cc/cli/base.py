"""What every command shares: the consoles, the error handler, and options used by several."""

from __future__ import annotations

import contextlib
import functools
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from fusedinf_cc.common.errors import FusedInfError
from fusedinf_cc.common.files import check_folder

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
OPSET = Annotated[
    int | None,
    typer.Option(
        "--opset",
        help="Convert every model to this default-domain opset, up or down where onnx's "
        "converter can (default: the highest the models use). Pick one your runtime runs.",
    ),
]
NO_PARTS = Annotated[
    bool,
    typer.Option(
        "--no-parts",
        help="Write no per-model parts: a request for one model then runs the whole bundle "
        "(for bundles only ever asked whole; parts of a portable or .ort bundle hold copies of "
        "their weights in memory, and of an .ort one on disk too).",
    ),
]

STAGES = Annotated[
    str | None,
    typer.Option(
        "--stages",
        help="[--aot] Also cut the bundle into N stages (or auto: one per 64 MiB of weights), "
        "so that a bundle larger than the memory budget runs stage by stage.",
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


WORK_DIR_HELP = (
    "Where bundles are built, and kept for the next run (default: a temporary folder, removed "
    "when the command ends)."
)


@contextlib.contextmanager
def work_folder(given: Path | None, command: str) -> Iterator[Path]:
    """`--work-dir` where it was given; else a temporary folder that goes with the command,
    so that nothing is left in whatever folder the user stands in."""
    if given is not None:
        yield given
        return
    with tempfile.TemporaryDirectory(prefix=f"fusedinf-{command}-") as folder:
        yield Path(folder)


def run_folder(given: Path | None) -> Path:
    """The folder whose disk a run under a device profile throttles: the work folder's
    (`--work-dir`, checked here, before any work), else the temporary folders'."""
    if given is None:
        return Path(tempfile.gettempdir())
    check_folder(given, "--work-dir")
    return given


def progress_bar(*columns: Any) -> Any:
    """A transient progress bar on stderr, shown only on a terminal: in a log or a pipe it
    would leave a blank line before the one-line error or result."""
    from rich.progress import Progress

    return Progress(
        *columns, console=error_console, transient=True, disable=not error_console.is_terminal
    )


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
        except KeyboardInterrupt:  # `cli.main` says so, in one line
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def fusion_options(
    share_input: list[str] | None,
    share_inputs: str,
    no_dedup: bool,
    no_cse: bool,
    stack: bool,
    single_file: bool,
    aot: bool,
    no_parts: bool = False,
    opset: int | None = None,
    stages: str | None = None,
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
        "parts": not no_parts,
        "opset": opset,
        "stages": stages,
    }


KEEP_PAGE_CACHE = Annotated[
    bool,
    typer.Option(
        "--keep-page-cache",
        help="Leave an evicted bundle's files in the page cache (a box with memory to spare); "
        "by default a reload reads them from storage again.",
    ),
]
LOADING_HELP = (
    "When a newly loaded bundle's weights are read from storage (--aot bundles): interleaved "
    "(beside its first request, the default), bulk (all of them, then the request) or linear "
    "(each as inference reaches it)."
)
LOADING = Annotated[str | None, typer.Option("--loading", help=LOADING_HELP)]
PLAN_LOADING = Annotated[
    str | None,
    typer.Option(
        "--loading",
        help=LOADING_HELP + " auto: with --aot, calibrate and search under each, and serve "
        "the plan with the one predicted best.",
    ),
]
DEVICE_PROFILE = Annotated[
    str | None,
    typer.Option(
        "--device-profile",
        help="Run as on this box: orin-nano-nvme or orin-nano-sd (its memory, the read "
        "bandwidth of its storage), in a cgroup made for the run.",
    ),
]
MEMORY_LIMIT = Annotated[
    str | None,
    typer.Option(
        "--memory-limit",
        help="The run's memory limit, page cache included (2GiB); alone or over the profile's.",
    ),
]
READ_BANDWIDTH = Annotated[
    str | None,
    typer.Option(
        "--read-bandwidth",
        help="Read the artifacts' disk at most this fast (67MB/s); alone or over the profile's.",
    ),
]
CPUS = Annotated[float | None, typer.Option("--cpus", help="CPU time the run may take, in cores.")]
READ_AHEAD = Annotated[
    str | None,
    typer.Option(
        "--read-ahead",
        help="Set the disk's read-ahead to this for the run (a Jetson's is the kernel's "
        "128KiB), put back after; one setting for the whole machine, so only when asked.",
    ),
]


def run_as_on_device(
    name: str | None,
    memory_limit: str | None,
    read_bandwidth: str | None,
    cpus: float | None,
    read_ahead: str | None,
    folder: Path,
) -> None:
    """Where a device profile is asked for and this process runs in no group yet: run this
    very command again inside a cgroup made for it (its reads throttled on the disk that holds
    `folder`), say what the kernel counted, and end with its exit code. Returns where nothing
    was asked, or inside the group."""
    from fusedinf_cc.common.sizes import format_bytes
    from fusedinf_cc.limits.profiles import device_profile
    from fusedinf_cc.limits.run import inside_a_run_group, run_limited

    profile = device_profile(name, memory_limit, read_bandwidth, cpus, read_ahead)
    if profile is None or inside_a_run_group():
        return
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    run = run_limited([sys.executable, "-m", "fusedinf_cc", *sys.argv[1:]], profile, existing)
    if run.out_of_memory:
        limit = format_bytes(profile.memory_bytes or 0)
        raise FusedInfError(
            f"the run needed more memory than its limit ({limit}): the kernel killed it out "
            "of memory; give a larger --memory-limit or a smaller --budget"
        )
    error_console.print(run.summary(), highlight=False)
    raise typer.Exit(run.returncode)


def model_specs(specs: list[str]) -> dict[str, Path]:
    """`[NAME=]MODEL.onnx` arguments as name -> path, the names unique."""
    from fusedinf_cc.common.names import check_unique_names, parse_model_spec

    named = [parse_model_spec(spec) for spec in specs]
    check_unique_names(named)
    return dict(named)
