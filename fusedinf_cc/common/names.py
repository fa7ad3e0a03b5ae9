"""Model names: `NAME=PATH` arguments, and the rule a name must follow to prefix fused tensors."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from fusedinf_cc.common.errors import UserInputError

_NAME_PATTERN = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")


def parse_model_spec(spec: str) -> tuple[str, Path]:
    """Split `NAME=PATH` (or a bare `PATH`, named after its stem) into a checked name and a path."""
    name, sep, path_text = spec.partition("=")
    if not sep:
        path_text, name = spec, Path(spec).stem
    if not path_text:
        raise UserInputError(f"model argument {spec!r} has no path after '='")
    check_model_name(name)
    return name, Path(path_text)


def check_model_name(name: str) -> None:
    """Names become the `<name>/` prefix of every fused tensor: plain identifiers only."""
    if not _NAME_PATTERN.match(name):
        raise UserInputError(
            f"model name {name!r} is not allowed: use letters, digits, '_', '.', '-' "
            "(give one with NAME=PATH)"
        )


def check_unique_names(specs: Sequence[tuple[str, Path]]) -> None:
    """A name is a model's prefix in every bundle and its key in every report: one model each."""
    if not specs:
        raise UserInputError("no models given")
    seen: dict[str, Path] = {}
    for name, path in specs:
        if name in seen:
            raise UserInputError(
                f"model name {name!r} is used twice ({seen[name]} and {path}); "
                "name them with NAME=PATH"
            )
        seen[name] = path
