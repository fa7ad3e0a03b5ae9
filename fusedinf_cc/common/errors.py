"""One exception family. The CLI prints any of them as a single line and exits with its code."""

from __future__ import annotations


def first_line(error: BaseException) -> str:
    """A library's error message without the detail lines (C++ stacks, hints) that follow it."""
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]


class FusedInfError(Exception):
    """A failure the user can act on; the message is one line that says what and why."""

    exit_code = 2


class UserInputError(FusedInfError):
    """Bad files, names or options given by the user (exit 2)."""


class MergeError(FusedInfError):
    """The models cannot be fused as asked: opsets, shapes or names that do not fit (exit 2)."""


class BackendUnavailableError(FusedInfError):
    """The backend a target needs is not installed here (exit 2)."""


class FusedInfWarning(UserWarning):
    """Something the user should know that does not stop the command: the CLI prints it as
    one line; a library caller gets it through `warnings`."""
