"""How closely fused outputs must match the separate models': numpy's allclose tolerances."""

from __future__ import annotations

import math

from fusedinf_cc.common.errors import UserInputError

DEFAULT_RTOL = 1e-5
DEFAULT_ATOL = 1e-5


def check_tolerance(value: object, what: str) -> float:
    """`value` as a tolerance; `what` names where it came from (an option, a spec key). A negative
    one would fail every output that is not bitwise equal, so it is a mistake, not a setting."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise UserInputError(f"{what}: a tolerance is a number, not {value!r}"[:200])
    if isinstance(value, int) and abs(value) > 2**53:  # past float's exact range: a mistake
        raise UserInputError(f"{what}: a tolerance is a small finite number >= 0")
    if not math.isfinite(value) or value < 0:
        raise UserInputError(f"{what}: a tolerance is a finite number >= 0, not {value!r}")
    return float(value)
