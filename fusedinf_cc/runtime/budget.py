"""A memory budget as a command takes it (`--budget`): one parser and one rule for every command.

A budget is a size (`512MiB`, `2GiB`, `300MB`, a byte count) or, for the commands that replay a
workload (`simulate`, `plan`), a share of every model alone held at once (`50%`). A share is
raised only as far as the largest model alone needs to load beside the largest arena
(`ledger.least_budget`), with a notice; a size below that is refused in one line. A deployment
whose bundles need more is left out where it is replayed, never given more than was asked for.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from fusedinf_cc.common.errors import UserInputError
from fusedinf_cc.common.sizes import format_bytes, parse_size
from fusedinf_cc.runtime.footprint import Footprint, arena_bytes
from fusedinf_cc.runtime.ledger import least_budget


@dataclass(frozen=True)
class Budget:
    """A budget as given: a size in bytes, or a percentage of a reference."""

    text: str
    flag: str = "--budget"
    size_bytes: int | None = None
    percent: float | None = None

    def in_bytes(self, reference_bytes: int | None = None) -> int:
        """The size, or the percentage of `reference_bytes`; a command with no reference to
        take a share of (`serve`) passes none, and a percentage is refused in one line."""
        if self.percent is not None:
            if reference_bytes is None:
                raise UserInputError(
                    f"{self.flag} {self.text}: give a size here, e.g. 512MiB or 2GiB (a share "
                    "of the models is for simulate and plan)"
                )
            return int(reference_bytes * self.percent / 100)
        assert self.size_bytes is not None
        return self.size_bytes

    def resolve(self, models_alone: Sequence[Footprint]) -> tuple[int, str | None]:
        """In bytes for a replay of these models (each alone: the unfused deployment), and a
        notice where a share was raised: a share is of every model held at once
        (`held_at_once`), raised to the least budget each model loads under; a size below
        that is refused."""
        floor = least_budget(f.load_need for f in models_alone)
        budget_bytes = self.in_bytes(held_at_once(models_alone))
        if budget_bytes >= floor:
            return budget_bytes, None
        below = (
            f"{self.flag} {self.text} is {format_bytes(budget_bytes)}, below the largest model "
            f"beside its activations ({format_bytes(floor)})"
        )
        if self.percent is None:
            raise UserInputError(below)
        return floor, f"{below}; using {format_bytes(floor)}"


# A share past this is a typo: ten thousand times everything loaded at once.
MAX_PERCENT = 1e6


def parse_budget(text: str, flag: str = "--budget") -> Budget:
    """`512MiB`, `2GiB`, `300MB`, a byte count, or a share such as `50%`: positive and finite."""
    value = text.strip()
    if value.endswith("%"):
        try:
            percent = float(value[:-1])
        except ValueError:
            percent = math.nan
        if not (math.isfinite(percent) and 0 < percent <= MAX_PERCENT):
            raise UserInputError(
                f"{flag} {text!r}: use e.g. 512MiB, 2GiB or a share such as 50% "
                f"(above 0, at most {MAX_PERCENT:g}%)"
            )
        return Budget(text, flag, percent=percent)
    size = parse_size(value, flag)
    if size <= 0:
        raise UserInputError(f"{flag} {text!r}: a budget must be more than 0 bytes")
    return Budget(text, flag, size_bytes=size)


def held_at_once(footprints: Sequence[Footprint]) -> int:
    """These bundles resident at once, each with its parts, beside one activation arena and
    the largest load's transient (a replay loads one bundle at a time): what a share of a
    budget is a share of."""
    everything = sum(f.measured_bytes + sum(f.parts.values()) for f in footprints)
    loading = max((f.loading_bytes for f in footprints), default=0)
    return everything + loading + arena_bytes(footprints)
