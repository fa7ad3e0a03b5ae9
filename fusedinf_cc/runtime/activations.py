"""What a request's activations need as its inputs grow: measured once, then extrapolated.

A bundle's footprint is measured on one request: the inputs it ships, or every dynamic dim 1. A
request with larger dynamic dims (a 1984x1984 image to a detector) takes far more from the
activation arena: 2.4 GiB for one convolution fed 37 MiB. The loader must count that before the
request runs, and scaling the measured request's arena by the inputs' growth does not do it: at
one pixel the arena is all fixed cost, and 640x640 times it is off by orders of magnitude.

So the footprint's probe measures the curve itself (`measure_curve`, in the worker): after the
measured request it runs the same inputs with every dynamic dim doubled, again and again, each
run giving its arena back at its end, and records the peak each run added beyond the measured
request's arena, until that passes `_ENOUGH_BYTES` (far past the arena's rounding) or a run gets
slow. Between the points the need is interpolated; past the last, it grows at the steeper of the
last step's slope and the average slope, so a need that grows faster than the inputs (attention:
with the square of a sequence) is not under-counted from the points that show it. Past the
probed sizes it is an estimate; what a run grew is given back either way (`arena-give-back`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fusedinf_cc.backends.base import Session, TensorSpec
from fusedinf_cc.common.errors import UserInputError
from fusedinf_cc.runtime.feeds import random_feeds
from fusedinf_cc.runtime.procmem import reset_peak_rss, status_bytes

# A probe stops once a run added this much beyond the measured request (the arena's growth is
# then far past its rounding), ...
_ENOUGH_BYTES = 64 << 20
# ... once a run takes this long (the curve costs a footprint well under a second or two), ...
_SLOWEST_RUN_S = 0.5
# ... or once the inputs hold this many elements, or after this many doublings.
_MOST_ELEMENTS = 1 << 24
_MOST_STEPS = 12
# A process's peak RSS moves by a few MiB between identical runs (the allocator's and the
# kernel's rounding): a request estimated to add less is not counted, only given back what it
# grew, so that noise in the probe never refuses a request that fits.
RESOLUTION_BYTES = 4 << 20


@dataclass(frozen=True)
class ActivationCurve:
    """Peak bytes a request adds beyond the arena of the request its bundle was measured on,
    by how many times that request's input elements it holds."""

    points: tuple[tuple[float, int], ...] = ()  # (growth > 1, added bytes), growth increasing

    def extra_bytes(self, growth: float) -> int | None:
        """What a request `growth` times the measured one adds; None where nothing was
        probed (its inputs have no dynamic dim the probe could grow, or the model refused).
        The loader counts it where it reaches `RESOLUTION_BYTES`."""
        if growth <= 1.0:
            return 0
        if not self.points:
            return None
        xs = [1.0, *(g for g, _ in self.points)]
        ys = [0, *(b for _, b in self.points)]
        for x0, y0, x1, y1 in zip(xs, ys, xs[1:], ys[1:], strict=False):
            if growth <= x1:
                return round(y0 + (y1 - y0) * (growth - x0) / (x1 - x0))
        last_step = (ys[-1] - ys[-2]) / (xs[-1] - xs[-2])
        average = ys[-1] / (xs[-1] - 1.0)
        return round(ys[-1] + max(last_step, average) * (growth - xs[-1]))

    def to_record(self) -> list[list[float | int]]:
        return [[growth, size] for growth, size in self.points]

    @classmethod
    def from_record(cls, record: Any) -> ActivationCurve | None:
        """A curve read back from a footprint record, or None where it is not one: points
        that are not (growth > 1, bytes >= 0) pairs in increasing growth."""
        if not isinstance(record, list):
            return None
        points = []
        for point in record:
            if not (isinstance(point, list) and len(point) == 2):
                return None
            growth, size = point
            if not isinstance(growth, int | float) or type(size) is not int:
                return None
            if not (1.0 < growth < 2.0**40) or not (0 <= size < 2**62):
                return None
            if points and growth <= points[-1][0]:
                return None
            points.append((float(growth), size))
        return cls(tuple(points))


def growth_of(feeds: Mapping[str, np.ndarray], measured_elements: int) -> float:
    """How many times the measured request's input elements a request's feeds hold."""
    return sum(array.size for array in feeds.values()) / max(1, measured_elements)


def measure_curve(
    session: Session, feeds: Mapping[str, np.ndarray], specs: Sequence[TensorSpec]
) -> ActivationCurve:
    """In the footprint's probe, after `feeds` ran on `session` (its arena grown to them): the
    peak each run with every dynamic dim doubled once more adds, given back after each. An
    input with no dynamic dim, a runtime that cannot give its arena back, or a model that
    refuses the grown inputs ends the curve where it is."""
    dynamic = {
        spec.name: [i for i, d in enumerate(spec.shape) if not isinstance(d, int)] for spec in specs
    }
    if not getattr(session, "gives_back_arena", False) or not any(dynamic.values()):
        return ActivationCurve()
    base = sum(array.size for array in feeds.values())

    def grown(step: int) -> dict[str, np.ndarray]:
        shapes = {
            spec.name: tuple(
                dim * 2**step if axis in dynamic[spec.name] else dim
                for axis, dim in enumerate(feeds[spec.name].shape)
            )
            for spec in specs
        }
        return random_feeds(specs, shapes, seed=step)

    try:  # a first larger run's one-time costs (a shape's first plan) are not the curve's
        session.run(grown(1), give_back_arena=True)  # type: ignore[call-arg]
    except (UserInputError, MemoryError):  # a model that admits only some sizes
        return ActivationCurve()
    # Each run's peak is taken over the RSS before the first: what a give-back left behind
    # (pages the allocator kept) counts against the runs after it, as it would in the loader.
    before = status_bytes().get("VmRSS", 0)
    points: list[tuple[float, int]] = []
    for step in range(1, _MOST_STEPS + 1):
        inputs = grown(step)
        elements = sum(array.size for array in inputs.values())
        if elements > _MOST_ELEMENTS or elements <= base:
            break
        reset_peak_rss()
        started = time.perf_counter()
        try:
            session.run(inputs, give_back_arena=True)  # type: ignore[call-arg]
        except (UserInputError, MemoryError):
            break
        seconds = time.perf_counter() - started
        # The inputs are the request's, not the arena's: what a server holds of a request's
        # body is bounded apart (`serve --max-inflight`).
        held = sum(array.nbytes for array in inputs.values())
        added = max(0, status_bytes().get("VmHWM", 0) - before - held)
        if points:
            added = max(added, points[-1][1])  # a need does not shrink as its inputs grow
        points.append((elements / base, added))
        if added >= _ENOUGH_BYTES or seconds >= _SLOWEST_RUN_S:
            break
    return ActivationCurve(tuple(points))
