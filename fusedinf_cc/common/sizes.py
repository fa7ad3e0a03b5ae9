"""Byte sizes as people write them: `512MiB`, `2GiB`, `300MB`, or a plain byte count."""

from __future__ import annotations

import math

from fusedinf_cc.common.errors import UserInputError

_UNITS = {"GiB": 2**30, "MiB": 2**20, "KiB": 2**10, "GB": 10**9, "MB": 10**6, "KB": 10**3, "B": 1}


# No size anyone means is larger (an exbibyte, 2**60); a larger one is a typo or a probe.
MAX_SIZE = 2**62


def parse_size(text: str, what: str) -> int:
    """Bytes in `text`; `what` names the option in the one-line error."""
    value = text.strip()
    try:
        for unit, factor in _UNITS.items():
            if value.endswith(unit):
                number = float(value[: -len(unit)])
                if not math.isfinite(number) or abs(number) * factor >= MAX_SIZE:
                    raise ValueError(value)
                size = int(number * factor)
                break
        else:
            size = int(value)
    except ValueError:
        raise UserInputError(f"{what} {text!r}: use e.g. 512MiB, 2GiB or a byte count") from None
    if size < 0:
        raise UserInputError(f"{what} {text!r}: a size cannot be negative")
    if size >= MAX_SIZE:
        raise UserInputError(f"{what} {text!r}: more bytes than any machine has")
    return size


def format_bytes(count: int) -> str:
    """`count` bytes in the largest binary unit that keeps it at least 1, for people to read."""
    if count < 1024:
        return f"{count} B"
    size = float(count)
    for unit in ("KiB", "MiB", "GiB"):
        size /= 1024
        if size < 1024 or unit == "GiB":
            break
    return f"{size:.1f} {unit}"
