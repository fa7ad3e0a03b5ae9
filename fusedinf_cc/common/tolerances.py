"""How closely fused outputs must match the separate models': numpy's allclose tolerances."""

from __future__ import annotations

import math

from fusedinf_cc.common.errors import UserInputError

DEFAULT_RTOL = 1e-5
DEFAULT_ATOL = 1e-5
# An FP16 engine rounds every activation to 11 significant bits (about 5e-4 relative), and the
# error grows with depth; 1e-2 is the tolerance TensorRT's own FP16 checks (Polygraphy) use.
FP16_RTOL = 1e-2
FP16_ATOL = 1e-2


def default_tolerances(build_options: dict[str, object]) -> tuple[float, float]:
    """(rtol, atol) for an artifact built with these options, when none are given."""
    if build_options.get("fp16"):
        return FP16_RTOL, FP16_ATOL
    return DEFAULT_RTOL, DEFAULT_ATOL


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
