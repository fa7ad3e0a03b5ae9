"""The `fusedinf-cc` command: parses arguments, calls the library, renders results. Nothing else.

`app` builds the Typer application from one module per command group (`fuse`, `measure`,
`plan`, `run`, `bundle`, `serve`); each command imports the library it calls when it runs, so
`--help` and `run` do not load the compiler. `tables` renders reports. `main` is the console
entry point; it imports `app` itself, so that Ctrl-C while the libraries load is handled too.
"""

from __future__ import annotations

import os
import signal
import sys
import warnings
from types import FrameType

INTERRUPTED_EXIT_CODE = 130


def main() -> None:
    """Run the command. Ctrl-C or SIGTERM at any moment, the imports included, ends with one
    line and exit code 130; the staging folders of what was being written are removed on the
    way out, and a previous output stays as it was."""
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGALRM):
        signal.signal(signum, _interrupt)
    warnings.showwarning = _one_line_warning
    try:
        from fusedinf_cc.cli.app import app

        app(prog_name="fusedinf-cc")
    except KeyboardInterrupt:
        _interrupted()
    except SystemExit as exit:  # Typer (and every command) ends an interrupt with exit 130
        if exit.code == INTERRUPTED_EXIT_CODE:
            _interrupted()
        raise
    finally:  # the command is over: a signal now must not turn its exit code into a crash
        signal.setitimer(signal.ITIMER_REAL, 0)
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGALRM):
            signal.signal(signum, signal.SIG_IGN)


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """The project's own warnings as one line on stderr; any other as Python prints it."""
    from fusedinf_cc.common.errors import FusedInfWarning

    if issubclass(category, FusedInfWarning):
        print(f"warning: {message}", file=sys.stderr)
    else:
        sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))


def _interrupted() -> None:
    """Say so and end now. What was being written is already cleaned (every staging folder is
    removed as the interrupt unwinds); ending here also keeps a KeyboardInterrupt that a
    library met during the imports from making Python end the process with SIGINT instead."""
    print("error: interrupted", file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(INTERRUPTED_EXIT_CODE)


# While a module is being imported, an interrupt waits this long and is tried again: raised
# inside a C extension's initialisation (onnx, onnx-ir, numpy), a KeyboardInterrupt can leave
# it half-built, and the process then crashed (SIGSEGV) instead of ending in one line.
_IMPORT_RETRY_S = 0.02


def _interrupt(signum: int, frame: FrameType | None) -> None:
    """SIGINT and SIGTERM (and SIGALRM, the retry of one held back) end the command, except
    in the middle of an import, where the interrupt is held back until the import is over."""
    if _importing(frame):
        signal.setitimer(signal.ITIMER_REAL, _IMPORT_RETRY_S)
        return
    raise KeyboardInterrupt


def _importing(frame: FrameType | None) -> bool:
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib"):
            return True
        frame = frame.f_back
    return False
