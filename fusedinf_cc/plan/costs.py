"""What a session of any grouping would cost, predicted from a few real bundles.

Replaying a trace with real bundles takes seconds per candidate grouping; a search needs
thousands. So the planner measures real bundles once (every model alone, and some groups of
models, fused), and predicts any other group from its members:

- a group's whole session: the members' costs summed, less what fusing saves per model beyond
  the first (one session's fixed cost in memory, load time and run time), fitted by least
  squares on the measured groups; its pooled weights are the union of its members' (one copy
  per distinct weight, as the weight pool holds them);
- a model's part of a group: the model alone, scaled by what parts were measured to cost
  against their models alone.

Where reads are slow (a device's storage, `--device-profile`), what a load costs is mostly the
bytes it reads. Each session measured records how many (`read_bytes`), and two lines are fitted
on all of them: a load's seconds and its first run's extra seconds against the bytes read
(`ReadCost`: under `bulk` the read lands in the load, under `linear` and `interleaved` in the
first run). What is left of each session's seconds is its fixed cost, from which groups are
predicted as above; a group then reads its members' graphs and the union of their weights, each
distinct weight once. A replay pays the read only for bytes not already in memory: a pooled
weight another session maps is not read again (`CostModel.open_seconds`).

A load's seconds scatter: on a busy machine one load in twenty may take several times the
median. Every load measured is kept as a ratio over its session's median, and a predicted load
draws its factor from those ratios, so that predicted loading seconds are a sum like the
replay's and the predicted p99 sees the tail. Runs scatter too (a session's warm runs measured
here moved by up to 1.6x from one calibration to the next), and a predicted run draws its
factor from the warm runs' ratios the same way.

Load and run seconds are measured in this process through the loader itself, as a replay
counts them (session open; one request, warm), not in the fresh process a footprint is
measured in.
"""

from __future__ import annotations

import functools
import math
import statistics
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from fusedinf_cc.runtime.bundle import WHOLE, Bundle, SessionKey
from fusedinf_cc.runtime.feeds import random_feeds
from fusedinf_cc.runtime.ledger import LoadNeed, SessionBytes
from fusedinf_cc.runtime.loader import BundleCache
from fusedinf_cc.runtime.loading import DEFAULT_LOADING


@dataclass(frozen=True)
class SessionCost(SessionBytes):
    """One session as the loader counts it (`SessionBytes`), and what it takes in time."""

    activation_bytes: int = 0  # what its request needs from the shared arena
    load_seconds: float = 0.0
    run_seconds: float = 0.0  # a warm request
    # What the first request after a load takes beyond a warm one (allocations, cold caches,
    # and the weights it waits for where they are read as inference reaches them).
    cold_seconds: float = 0.0
    read_bytes: int = 0  # what opening it reads from storage with nothing of it in memory


@dataclass(frozen=True)
class Measured:
    """A real bundle's sessions: the whole, and each model's part it has."""

    models: frozenset[str]
    whole: SessionCost
    parts: dict[str, SessionCost] = field(default_factory=dict)
    # Each load measured over its session's median: how loads scatter on this machine.
    load_ratios: tuple[float, ...] = ()
    run_ratios: tuple[float, ...] = ()  # each warm run over its session's median, likewise


@dataclass(frozen=True)
class Savings:
    """What fusing saves per model beyond the first, in one whole session."""

    private_bytes: float = 0.0
    load_seconds: float = 0.0
    run_seconds: float = 0.0
    activation: float = 1.0  # share of the members' other activations a group adds
    loading_bytes: float = 0.0


@dataclass(frozen=True)
class ReadCost:
    """Seconds per byte read from storage: of a load, and of the first run after it (least
    squares with an intercept, over every session measured; never below zero)."""

    load_seconds_per_byte: float = 0.0
    cold_seconds_per_byte: float = 0.0

    @classmethod
    def fitted(cls, sessions: Sequence[SessionCost]) -> ReadCost:
        return cls(
            load_seconds_per_byte=_slope(sessions, lambda c: c.load_seconds),
            cold_seconds_per_byte=_slope(sessions, lambda c: c.cold_seconds),
        )

    def fixed(self, cost: SessionCost) -> SessionCost:
        """`cost` with its read taken out: what it would cost with every byte in memory."""
        return replace(
            cost,
            load_seconds=cost.load_seconds - self.load_seconds_per_byte * cost.read_bytes,
            cold_seconds=cost.cold_seconds - self.cold_seconds_per_byte * cost.read_bytes,
        )

    @property
    def bytes_per_second(self) -> float:
        """The storage's bandwidth as the fit sees it (infinite: reads cost nothing)."""
        per_byte = self.load_seconds_per_byte + self.cold_seconds_per_byte
        return 1.0 / per_byte if per_byte > 0 else math.inf


@dataclass(frozen=True)
class PartScale:
    """A model's part over the model alone."""

    private_bytes: float = 1.0
    load_seconds: float = 1.0
    run_seconds: float = 1.0


def measure_bundle(
    bundle: Bundle, pooled: bool, rounds: int = 3, runs: int = 5, loading: str = DEFAULT_LOADING
) -> Measured:
    """`measure_bundles` of this one bundle."""
    return measure_bundles([bundle], pooled, rounds, runs, loading=loading)[0]


@dataclass
class _Timing:
    """One session's samples: its loads, the first run after each, and the warm runs."""

    key: SessionKey  # the whole bundle, or a model's part
    feeds: dict
    loads: list[float] = field(default_factory=list)
    first: list[float] = field(default_factory=list)
    warm: list[float] = field(default_factory=list)


def measure_bundles(
    bundles: Sequence[Bundle],
    pooled: bool,
    rounds: int = 3,
    runs: int = 5,
    done: Callable[[str], None] | None = None,
    loading: str = DEFAULT_LOADING,
) -> list[Measured]:
    """Open, run and close each session of each bundle `rounds` times, each bundle in a loader
    holding only it; the medians of load, first-run and warm-run seconds, the bytes the loader
    counts. The rounds go through every bundle in turn, so each reload follows the others'
    runs, as a miss does in a replay under a budget: its first run finds the caches and page
    tables the others left. Reloading straight after closing measured a first run 0.1-1.4 ms
    over a warm one on the zoo models; after the others ran, 1-12 ms. `done(name)` after each
    bundle's round. Weights are read as `loading` says, as the loader serving the plan will."""
    turns: list[tuple[Bundle, BundleCache, list[_Timing]]] = []
    try:
        for bundle in bundles:
            cache = BundleCache(
                max(bundle.footprint.alone_bytes * 4, 1 << 20),
                pool_weights=pooled,
                loading=loading,
            )
            timings: list[_Timing] = []
            turns.append((bundle, cache, timings))
            cache.register(bundle)
            for key in [WHOLE, *sorted(bundle.parts)]:  # a bundle of one model has no parts
                specs = cache.input_specs(_request_name(bundle, key), bundle=bundle.name)
                timings.append(_Timing(key, random_feeds(specs)))
            cache.unload(bundle.name)
        for _ in range(rounds):
            for bundle, cache, timings in turns:
                for timing in timings:
                    _time_session(cache, bundle, timing, runs)
                if done:
                    done(bundle.name)
    finally:
        for _, cache, _ in turns:
            cache.close()
    return [_measured(bundle, timings, pooled) for bundle, _, timings in turns]


def _request_name(bundle: Bundle, key: SessionKey) -> str:
    """What a request for the session `key` asks the loader for: the bundle, or the model."""
    return bundle.name if key is WHOLE else key  # type: ignore[return-value]


def _time_session(cache: BundleCache, bundle: Bundle, timing: _Timing, runs: int) -> None:
    """Load the session, run it `runs` times (at least twice) and close the bundle again."""
    name = _request_name(bundle, timing.key)
    before = cache.stats.seconds_loading
    cache.load(name, bundle=bundle.name)
    timing.loads.append(cache.stats.seconds_loading - before)
    for run in range(max(runs, 2)):
        started = time.perf_counter()
        cache.run(name, timing.feeds, bundle=bundle.name)
        (timing.warm if run else timing.first).append(time.perf_counter() - started)
    cache.unload(bundle.name)


def _held_bytes(bundle: Bundle, key: SessionKey, pooled: bool) -> dict:
    """The `SessionCost` byte fields of the bundle's session for `key`, as the loader counts
    them. A part's measured bytes are its peak beside the whole: its load included."""
    counted = bundle.session_bytes(key, pooled)
    return {
        "private_bytes": counted.private_bytes,
        "weights": counted.weights,
        "activation_bytes": bundle.footprint.activation_bytes,
        "loading_bytes": counted.loading_bytes,
        "read_bytes": bundle.read_bytes(key),
    }


def _measured(bundle: Bundle, timings: Sequence[_Timing], pooled: bool) -> Measured:
    costs: dict[SessionKey, SessionCost] = {}
    ratios: list[float] = []
    run_ratios: list[float] = []
    for timing in timings:
        median = statistics.median(timing.loads)
        ratios += [load / median for load in timing.loads] if median > 0 else []
        warm = statistics.median(timing.warm)
        run_ratios += [run / warm for run in timing.warm] if warm > 0 else []
        costs[timing.key] = SessionCost(
            **_held_bytes(bundle, timing.key, pooled),
            load_seconds=median,
            run_seconds=warm,
            cold_seconds=max(0.0, statistics.median(timing.first) - warm),
        )
    parts = {key: cost for key, cost in costs.items() if key is not WHOLE}
    whole = costs[WHOLE]
    return Measured(bundle.members, whole, parts, tuple(ratios), tuple(run_ratios))  # type: ignore[arg-type]


class CostModel:
    """Predicted sessions for any group of the measured models."""

    def __init__(
        self,
        alone: Mapping[str, SessionCost],
        savings: Savings = Savings(),
        part_scale: PartScale = PartScale(),
        measured: Iterable[Measured] = (),
        load_jitter: Sequence[float] = (),
        reads: ReadCost = ReadCost(),
        run_jitter: Sequence[float] = (),
    ):
        self.alone = dict(alone)
        self.savings = savings
        self.part_scale = part_scale
        self.reads = reads
        # Groups measured for real are not predicted: their own numbers are used.
        self._measured = {m.models: m for m in measured if len(m.models) > 1}
        # Loads over their median, as measured: a predicted load draws its scatter from
        # these, so a replay's tail (a load that took several times the median) is predicted.
        self.load_jitter = tuple(load_jitter)
        self.run_jitter = tuple(run_jitter)  # warm runs over their median, as measured
        # Bundles built but not timed: what they hold is known (`_held_bytes`), their times
        # are fitted.
        self._held: dict[frozenset[str], dict] = {}
        self._wholes: dict[frozenset[str], SessionCost] = {}
        self._parts: dict[tuple[frozenset[str], str], SessionCost] = {}

    @classmethod
    def fitted(cls, alone: Mapping[str, Measured], groups: Sequence[Measured]) -> CostModel:
        """Fit savings and part scales on the measured `groups` against their `alone` members."""
        singles = {name: measured.whole for name, measured in alone.items()}
        every = [c for m in (*alone.values(), *groups) for c in (m.whole, *m.parts.values())]
        reads = ReadCost.fitted(every)
        savings = Savings(
            private_bytes=_saved(groups, singles, lambda c: c.private_bytes),
            load_seconds=_saved(groups, singles, lambda c: reads.fixed(c).load_seconds),
            run_seconds=_saved(groups, singles, lambda c: c.run_seconds),
            activation=_activation_share(groups, singles),
            loading_bytes=_saved(groups, singles, lambda c: c.loading_bytes),
        )
        pairs = [(part, singles[name]) for g in groups for name, part in g.parts.items()]
        scale = PartScale(
            private_bytes=_ratio(pairs, lambda c: c.private_bytes),
            load_seconds=_ratio(pairs, lambda c: c.load_seconds),
            run_seconds=_ratio(pairs, lambda c: c.run_seconds),
        )
        jitter = [r for m in (*alone.values(), *groups) for r in m.load_ratios]
        run_jitter = [r for m in (*alone.values(), *groups) for r in m.run_ratios]
        return cls(singles, savings, scale, groups, jitter, reads, run_jitter)

    def open_seconds(self, session: SessionCost, in_memory_bytes: int) -> tuple[float, float]:
        """The load's and the first run's extra seconds of opening `session` where
        `in_memory_bytes` of what it reads are in memory already (pooled weights another
        session maps): those are not read again."""
        reads = self.reads
        return (
            max(0.0, session.load_seconds - reads.load_seconds_per_byte * in_memory_bytes),
            max(0.0, session.cold_seconds - reads.cold_seconds_per_byte * in_memory_bytes),
        )

    def reopen_seconds(self, session: SessionCost, in_memory_bytes: int) -> tuple[float, float]:
        """As `open_seconds`, for a session that stood by (`ledger.py`): nothing is opened,
        its load is only the weights it reads then (a `bulk` read; none by the others)."""
        load, cold = self.open_seconds(session, in_memory_bytes)
        read = max(0, session.weight_bytes - in_memory_bytes)
        return min(load, self.reads.load_seconds_per_byte * read), cold

    def whole(self, members: frozenset[str]) -> SessionCost:
        """The whole session of a bundle of `members` (one model: the model alone)."""
        cost = self._wholes.get(members)
        if cost is None:
            cost = self._wholes[members] = self._predict_whole(members)
        return cost

    def part(self, members: frozenset[str], model: str) -> SessionCost:
        """`model`'s part of the bundle of `members`."""
        cost = self._parts.get((members, model))
        if cost is None:
            cost = self._parts[members, model] = self._predict_part(members, model)
        return cost

    def hold_as_built(self, bundles: Iterable[Bundle], pooled: bool) -> None:
        """Count these built bundles' wholes at their measured bytes, load transient and arena
        (their times stay fitted): a baseline built for real is predicted holding what it
        holds, so its prediction is left out of a budget exactly where it cannot load."""
        for bundle in bundles:
            members = bundle.members
            if len(members) > 1 and members not in self._measured:
                self._held[members] = _held_bytes(bundle, WHOLE, pooled)
        self._wholes.clear()

    def built_need(self, members: frozenset[str]) -> LoadNeed:
        """What the bundle of `members` will need once built: its load's peak (what it holds
        and its transient) and its arena. One never measured may need as much more than
        predicted as a measured group did at worst (`bytes_margin`, `activation_margin`), so
        that a plan is not chosen with a bundle that then cannot load."""
        whole = self.whole(members)
        if self.is_measured(members):
            return LoadNeed(whole.bytes + whole.loading_bytes, whole.activation_bytes)
        held = math.ceil((whole.bytes + whole.loading_bytes) * self.bytes_margin)
        return LoadNeed(held, math.ceil(whole.activation_bytes * self.activation_margin))

    def is_measured(self, members: frozenset[str]) -> bool:
        """Whether what the bundle of `members` holds was measured (a model alone's always is;
        a group's where it was timed or built)."""
        return len(members) == 1 or members in self._measured or members in self._held

    @functools.cached_property
    def bytes_margin(self) -> float:
        """How far the fitted formula fell short of the bytes a measured group really holds,
        at worst (1.0: never short): what `built_need` allows for the ones not measured."""
        ratios = [
            measured.whole.bytes / self._fitted_whole(members).bytes
            for members, measured in self._measured.items()
        ]
        return max([1.0, *ratios])

    @functools.cached_property
    def activation_margin(self) -> float:
        """As `bytes_margin`, for the arena a group's request needs."""
        ratios = [
            measured.whole.activation_bytes / max(self._fitted_whole(members).activation_bytes, 1)
            for members, measured in self._measured.items()
        ]
        return max([1.0, *ratios])

    def _predict_whole(self, members: frozenset[str]) -> SessionCost:
        if len(members) == 1:
            return self.alone[next(iter(members))]
        if members in self._measured:
            return self._measured[members].whole
        return replace(self._fitted_whole(members), **self._held.get(members, {}))

    def _fitted_whole(self, members: frozenset[str]) -> SessionCost:
        """The members' fixed costs less what fusing saves, and the group's read: each
        member's graph and each distinct weight once."""
        reads = self.reads
        costs = [reads.fixed(self.alone[name]) for name in sorted(members)]
        extra = len(costs) - 1
        saved = self.savings
        activations = sorted(cost.activation_bytes for cost in costs)
        weights = dict(weight for cost in costs for weight in cost.weights)
        read = sum(c.read_bytes - c.weight_bytes for c in costs) + sum(weights.values())
        return SessionCost(
            private_bytes=max(
                int(sum(c.private_bytes for c in costs) - extra * saved.private_bytes),
                max(c.private_bytes for c in costs),
            ),
            weights=tuple(sorted(weights.items())),
            activation_bytes=int(activations[-1] + saved.activation * sum(activations[:-1])),
            load_seconds=max(
                sum(c.load_seconds for c in costs) - extra * saved.load_seconds,
                max(c.load_seconds for c in costs),
                0.0,
            )
            + reads.load_seconds_per_byte * read,
            run_seconds=max(
                sum(c.run_seconds for c in costs) - extra * saved.run_seconds,
                max(c.run_seconds for c in costs),
            ),
            cold_seconds=max(0.0, sum(c.cold_seconds for c in costs))
            + reads.cold_seconds_per_byte * read,
            read_bytes=read,
            loading_bytes=max(
                int(sum(c.loading_bytes for c in costs) - extra * saved.loading_bytes),
                max(c.loading_bytes for c in costs),
            ),
        )

    def _predict_part(self, members: frozenset[str], model: str) -> SessionCost:
        measured = self._measured.get(members)
        if measured is not None and model in measured.parts:
            return measured.parts[model]
        reads, scale = self.reads, self.part_scale
        alone = self.alone[model]
        fixed = reads.fixed(alone)
        return SessionCost(
            private_bytes=int(alone.private_bytes * scale.private_bytes),
            weights=alone.weights,
            activation_bytes=alone.activation_bytes,
            load_seconds=max(0.0, fixed.load_seconds * scale.load_seconds)
            + reads.load_seconds_per_byte * alone.read_bytes,
            run_seconds=alone.run_seconds * scale.run_seconds,
            cold_seconds=max(0.0, fixed.cold_seconds * scale.run_seconds)
            + reads.cold_seconds_per_byte * alone.read_bytes,
            read_bytes=alone.read_bytes,
        )

    def to_record(self) -> dict:
        """What was fitted, for the report."""
        return {
            "savings_per_extra_model": vars(self.savings),
            "part_over_alone": vars(self.part_scale),
            "measured_groups": sorted(sorted(members) for members in self._measured),
            "load_over_median": _quantiles(self.load_jitter),
            "run_over_median": _quantiles(self.run_jitter),
            "read_cost": {**vars(self.reads), "bytes_per_second": self.reads.bytes_per_second},
            "bytes_margin": self.bytes_margin,
            "activation_margin": self.activation_margin,
        }


def _saved(groups: Sequence[Measured], singles: Mapping[str, SessionCost], value) -> float:
    """Least squares for `whole = sum(members) - (k - 1) * saved`, never below zero."""
    numerator = denominator = 0.0
    for group in groups:
        extra = len(group.models) - 1
        if extra < 1:
            continue
        summed = sum(value(singles[name]) for name in group.models)
        numerator += extra * (summed - value(group.whole))
        denominator += extra * extra
    return max(0.0, numerator / denominator) if denominator else 0.0


def _slope(sessions: Sequence[SessionCost], value) -> float:
    """Least squares slope of `value` over bytes read, with an intercept; 0 where the bytes do
    not vary or the slope would be negative (reads cannot save time)."""
    xs = [float(c.read_bytes) for c in sessions]
    if len(xs) < 2:
        return 0.0
    mean_x = statistics.fmean(xs)
    mean_y = statistics.fmean(value(c) for c in sessions)
    spread = sum((x - mean_x) ** 2 for x in xs)
    if spread <= 0:
        return 0.0
    covariance = sum((x - mean_x) * (value(c) - mean_y) for x, c in zip(xs, sessions, strict=True))
    return max(0.0, covariance / spread)


def _activation_share(groups: Sequence[Measured], singles: Mapping[str, SessionCost]) -> float:
    """Least squares for `arena = largest + share * the others'`, between 0 and 1."""
    numerator = denominator = 0.0
    for group in groups:
        sizes = sorted(singles[name].activation_bytes for name in group.models)
        others = sum(sizes[:-1])
        numerator += others * (group.whole.activation_bytes - sizes[-1])
        denominator += others * others
    return min(1.0, max(0.0, numerator / denominator)) if denominator else 1.0


def _ratio(pairs: Sequence[tuple[SessionCost, SessionCost]], value) -> float:
    """Summed measured over summed alone, 1 where nothing was measured."""
    alone = sum(value(single) for _, single in pairs)
    return sum(value(part) for part, _ in pairs) / alone if alone > 0 else 1.0


def _quantiles(values: Sequence[float]) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)
    return {
        f"p{q}": ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))] for q in (50, 90, 99)
    }
