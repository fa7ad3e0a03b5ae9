"""plan: the bundles for a trace and a budget, chosen on predictions and checked on real ones.

0. With real replays to come, build unfused (a bundle per model) and fused (a bundle per
   function) first: calibration measures their bundles instead of building its own.
1. Calibrate: build every called model alone and the hottest functions' groups (a few), and
   measure them through the loader, taking turns (`costs.measure_bundles`); fit the cost
   model on them.
2. Search groupings on predicted replays of the planning part of the trace (`search`).
3. Name the plan's bundles as a bundle spec names them (never a model's name).
4. Evaluate: build the plan, and replay it, unfused and fused on the held-out part of the
   trace, `replays` times, alternating, beside the prediction for the same requests: how far
   the cost model was from the loader. Unfused and fused are replayed once more with nothing
   evicted: the lower of those two rows' p99 is about the least any grouping's can be, since
   a grouping wins back what swapping adds and at most what fused sessions gain in running.

The held-out part is the end of the trace: the plan is judged on requests it never saw.
"""

from __future__ import annotations

import statistics
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from fusedinf_cc.common.errors import UserInputError
from fusedinf_cc.common.sizes import format_bytes
from fusedinf_cc.measure.simulate import (
    Call,
    Deployment,
    ReplayResult,
    Request,
    deployments,
    group_bundle,
    grouped_deployment,
    held_at_once,
    parse_budget,
    replay,
    route,
)
from fusedinf_cc.plan.costs import CostModel, measure_bundles
from fusedinf_cc.plan.predict import predict
from fusedinf_cc.plan.search import REQUIRED_GAIN, Grouping, SearchResult, named, search
from fusedinf_cc.runtime.footprint import Footprint
from fusedinf_cc.runtime.loader import EngineCache, least_budget

# The reference rows: each baseline with room for every bundle, so nothing is ever evicted.
# Their p99 is what inference and queueing alone make, with a request's models run apart or as
# one fused session; what a baseline has above its row, swapping adds.
NOTHING_EVICTED = {"unfused": "unfused, nothing evicted", "fused": "fused, nothing evicted"}
UNLIMITED_BYTES = 1 << 62
# Loads of each calibration bundle measured, taking turns with the others.
MEASURING_ROUNDS = 3
# What a stage reports as it goes: (stage, done, total).
Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class PlanSettings:
    budget: str  # 512MiB, or a percentage of every model alone
    policy: str = "gdsf"
    aot: bool = False
    stack: bool = False
    holdout: float = 0.5  # the share of the trace, at its end, the plan is judged on
    replays: int = 3  # real replays of each deployment on the held-out part; 0: none
    search_seconds: float = 20.0
    calibration_groups: int = 8  # the hottest functions' groups measured for real
    work_dir: Path = Path(".fusedinf-plan")


@dataclass(frozen=True)
class Evaluation:
    """One deployment on the held-out requests: predicted, and replayed for real."""

    deployment: str
    bundles: int
    predicted: ReplayResult | None
    replayed: list[ReplayResult] = field(default_factory=list)
    left_out: str | None = None  # why it was not replayed (or predicted)

    def median(self, value: Callable[[ReplayResult], float]) -> float | None:
        return statistics.median(value(r) for r in self.replayed) if self.replayed else None

    def spread(self, value: Callable[[ReplayResult], float]) -> tuple[float, float] | None:
        values = [value(r) for r in self.replayed]
        return (min(values), max(values)) if values else None


@dataclass(frozen=True)
class Plan:
    bundles: dict[str, list[str]]  # spec name -> models
    bundle_bytes: dict[str, int]  # predicted: its whole session with its arena
    budget_bytes: int
    planning_requests: int
    held_out_requests: int
    search: SearchResult
    costs: CostModel
    evaluations: list[Evaluation]
    seconds: dict[str, float]
    notices: tuple[str, ...] = ()
    kept_because: str | None = None  # why the plan is a baseline, where it is

    @property
    def kept_baseline(self) -> str | None:
        """Unfused or fused where the plan is that baseline (`kept_because` says why)."""
        for name, judged in (("unfused", self.search.unfused), ("fused", self.search.fused)):
            if self.search.best.grouping == judged.grouping:
                return name
        return None

    def over_baselines(self) -> dict[str, float]:
        """The plan's loading seconds and p99 over the better baseline's (unfused or fused,
        each metric its own better), replayed where all were, else predicted; and the lower
        p99 of the two nothing-evicted rows over that same better p99 (`p99_nothing_evicted`):
        about how low any grouping can bring it."""
        judged = [e for e in self.evaluations if e.left_out is None]
        plan = next((e for e in judged if e.deployment == "plan"), None)
        floors = [e for e in judged if e.deployment in NOTHING_EVICTED.values()]
        baselines = [e for e in judged if e.deployment in ("unfused", "fused")]
        if plan is None or not baselines:
            return {}
        replayed = self.replayed

        def reading(e: Evaluation, value: Callable[[ReplayResult], float]) -> float:
            return e.median(value) if replayed else value(e.predicted)  # type: ignore[return-value,arg-type]

        ratios = {}
        for metric, value in (
            ("loading_seconds", lambda r: r.seconds_loading),
            ("p99_ms", lambda r: r.p99_ms),
        ):
            best = min(reading(e, value) for e in baselines)
            ratios[metric] = reading(plan, value) / best if best else float("inf")
            if metric == "p99_ms" and floors and best:
                lowest = min(reading(e, value) for e in floors)
                ratios["p99_nothing_evicted"] = lowest / best
        return ratios

    @property
    def replayed(self) -> bool:
        """Whether every deployment judged (not left out) was replayed for real."""
        judged = [e for e in self.evaluations if e.left_out is None]
        return bool(judged) and all(e.replayed for e in judged)

    def to_record(self) -> dict:
        def judged(j) -> dict:
            return {"bundles": sorted(sorted(b) for b in j.grouping), "score": j.score}

        return {
            "bundles": self.bundles,
            "bundle_bytes": self.bundle_bytes,
            "budget_bytes": self.budget_bytes,
            "planning_requests": self.planning_requests,
            "held_out_requests": self.held_out_requests,
            "kept_baseline": self.kept_baseline,
            "kept_because": self.kept_because,
            "search": {
                "evaluated": self.search.evaluated,
                "seconds": self.search.seconds,
                "plan": judged(self.search.best),
                "unfused": judged(self.search.unfused),
                "fused": judged(self.search.fused),
                # Predicted on the planning requests, what the search judged by.
                "planning_predicted": asdict(self.search.best.result),
            },
            "cost_model": self.costs.to_record(),
            "held_out": [
                {
                    "deployment": e.deployment,
                    "bundles": e.bundles,
                    "predicted": asdict(e.predicted) if e.predicted else None,
                    "replayed": [asdict(r) for r in e.replayed],
                    "left_out": e.left_out,
                }
                for e in self.evaluations
            ],
            "over_better_baseline": self.over_baselines(),
            "seconds": self.seconds,
        }


def split_trace(requests: Sequence[Request], holdout: float) -> tuple[list[Request], list[Request]]:
    """The planning requests and the held-out ones (the trace's last `holdout` share); with no
    holdout both are the whole trace."""
    if not 0.0 <= holdout < 1.0:
        raise UserInputError(f"--holdout {holdout:g}: a share of the trace, from 0 up to 1")
    if holdout == 0.0:
        return list(requests), list(requests)
    cut = round(len(requests) * (1.0 - holdout))
    if cut < 1 or cut >= len(requests):
        raise UserInputError(
            f"--holdout {holdout:g} leaves no requests to plan on or to judge the plan on "
            f"({len(requests)} in the trace)"
        )
    return list(requests[:cut]), list(requests[cut:])


def hottest_groups(
    requests: Sequence[Request], functions: Mapping[str, Sequence[str]], count: int
) -> list[list[str]]:
    """The model sets of the `count` most requested functions that call two models or more."""
    calls = Counter(frozenset(functions[r.function]) for r in requests)
    hot = [models for models, _ in calls.most_common() if len(models) > 1]
    return [sorted(models) for models in hot[:count]]


def spec_names(grouping: Grouping, models: Sequence[str]) -> dict[str, list[str]]:
    """Bundle names a spec takes: groups g00, g01, ...; a model alone `<model>-alone` (a spec's
    bundle never has one of its models' names), none of them a model's name."""
    taken = set(models)
    names: dict[str, list[str]] = {}
    ordered = sorted(named(grouping).items(), key=lambda item: (len(item[1]) == 1, item[0]))
    for name, members in ordered:
        if len(members) == 1:
            name = f"{name}-alone"
        while name in taken or name in names:
            name = f"{name}-bundle"
        names[name] = sorted(members)
    return names


def calibrate(
    models: dict[str, Path],
    functions: Mapping[str, Sequence[str]],
    planning: Sequence[Request],
    settings: PlanSettings,
    report: Progress,
    baselines: Sequence[Deployment] | None = None,
) -> tuple[CostModel, int, str | None]:
    """The cost model fitted on every called model alone and the hottest functions' groups,
    measured for real; the budget in bytes, and a notice where it was raised. A percentage is
    of every model alone held at once and is raised only until each model loads, as `simulate`
    raises it: a deployment with a larger bundle (one per function, often) is left out where
    it is judged, not given more memory than was asked for."""
    settings.work_dir.mkdir(parents=True, exist_ok=True)
    used = sorted({m for called in functions.values() for m in called})
    groups = hottest_groups(planning, functions, settings.calibration_groups)
    total = (1 + MEASURING_ROUNDS) * (len(used) + len(groups))  # build, then each round
    steps = iter(range(total))
    # The baselines, where built, hold every model alone and every function's group already.
    unfused, fused = baselines or (None, None)
    alone_built = unfused.bundles if unfused else {}
    groups_built = {frozenset(functions[f]): b for f, b in fused.bundles.items()} if fused else {}
    singles = {}
    for model in used:
        report("calibrating", next(steps), total)
        singles[model] = alone_built.get(model) or group_bundle(
            models, [model], model, settings.work_dir, settings.aot
        )
    budget_bytes, notice = _budget(settings.budget, [b.footprint for b in singles.values()])
    bundles = dict(singles)
    for index, members in enumerate(groups):
        report("calibrating", next(steps), total)
        bundles[f"calibration{index}"] = groups_built.get(frozenset(members)) or group_bundle(
            models, members, f"calibration{index}", settings.work_dir, settings.aot, settings.stack
        )
    measured = dict(
        zip(
            bundles,
            measure_bundles(
                list(bundles.values()),
                settings.aot,
                rounds=MEASURING_ROUNDS,
                done=lambda _: report("calibrating", next(steps), total),
            ),
            strict=True,
        )
    )
    report("calibrating", 1, 1)
    alone = {model: measured[model] for model in used}
    measured_groups = [m for name, m in measured.items() if name not in singles]
    costs = CostModel.fitted(alone, measured_groups)
    costs.hold_as_built(groups_built.values(), settings.aot)
    return costs, budget_bytes, notice


def plan(
    models: dict[str, Path],
    functions: dict[str, list[str]],
    requests: Sequence[Request],
    settings: PlanSettings,
    progress: Progress | None = None,
) -> Plan:
    """Choose the bundles for `requests` under the budget, then judge them on real bundles."""
    report = progress or (lambda stage, done, total: None)
    unknown = sorted({m for called in functions.values() for m in called} - set(models))
    if unknown:
        raise UserInputError(f"the trace calls models not given: {', '.join(unknown)}")
    planning, held_out = split_trace(requests, settings.holdout)
    pooled = settings.aot  # only ahead-of-time bundles pool weights across bundles
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    baselines = None
    if settings.replays > 0:  # built first: calibration measures their bundles
        report("building", 0, 1)
        baselines = deployments(
            models, functions, settings.work_dir, aot=settings.aot, stack=settings.stack
        )
    costs, budget_bytes, notice = calibrate(
        models, functions, planning, settings, report, baselines
    )
    seconds["calibrate"] = time.perf_counter() - started

    started = time.perf_counter()
    found = search(
        planning,
        functions,
        costs,
        budget_bytes,
        settings.policy,
        pooled=pooled,
        seconds=settings.search_seconds,
        progress=lambda evaluated: report("searching", evaluated, 0),
    )
    seconds["search"] = time.perf_counter() - started
    kept_because = None
    if found.best.grouping in (found.unfused.grouping, found.fused.grouping):
        kept_because = f"no grouping was predicted {REQUIRED_GAIN:.0%} better"
    bundles = spec_names(found.best.grouping, sorted(models))

    started = time.perf_counter()
    planned = None
    if baselines is not None:  # built where real replays are to come
        report("building", 0, 1)
        planned = _built_plan(models, functions, bundles, settings)
        refused = _refused(planned, budget_bytes)
        if refused and found.best.grouping != found.unfused.grouping:
            # Built, a bundle needs more than predicted: write what is known to load.
            kept_because = f"the grouping found does not load once built: {refused}"
            found = replace(found, best=found.unfused)
            bundles = spec_names(found.best.grouping, sorted(models))
            planned = _built_plan(models, functions, bundles, settings)
    evaluations = evaluate(
        models,
        functions,
        held_out,
        bundles,
        costs,
        budget_bytes,
        settings,
        report,
        baselines,
        planned,
    )
    seconds["evaluate"] = time.perf_counter() - started
    return Plan(
        bundles=bundles,
        bundle_bytes={
            name: _with_arena(costs, frozenset(members)) for name, members in bundles.items()
        },
        budget_bytes=budget_bytes,
        planning_requests=len(planning),
        held_out_requests=len(held_out),
        search=found,
        costs=costs,
        evaluations=evaluations,
        seconds=seconds,
        notices=(notice,) if notice else (),
        kept_because=kept_because,
    )


def evaluate(
    models: dict[str, Path],
    functions: dict[str, list[str]],
    held_out: Sequence[Request],
    bundles: dict[str, list[str]],
    costs: CostModel,
    budget_bytes: int,
    settings: PlanSettings,
    report: Progress,
    baselines: Sequence[Deployment] | None = None,
    planned: Deployment | None = None,
) -> list[Evaluation]:
    """Unfused, fused and the plan on the held-out requests: predicted, and (given the built
    `baselines`, unfused and fused, and the built plan, `planned`) replayed for real `replays`
    times each, alternating (drift in the machine's speed falls on all alike). A deployment
    with a bundle that cannot fit the budget is left out. Beside them, unfused and fused with
    no budget (`NOTHING_EVICTED`): the tail that inference and queueing alone make, run apart
    and run fused."""
    used = sorted({m for called in functions.values() for m in called})
    by_model = {f: [Call(m) for m in called] for f, called in functions.items()}
    layouts: dict[str, tuple[dict[str, list[str]], dict[str, list[Call]]]] = {
        "unfused": ({m: [m] for m in used}, by_model),
        "fused": (dict(functions), {f: [Call(f)] for f in functions}),
        "plan": (bundles, route(functions, bundles)),
    }
    layouts |= {row: layouts[baseline] for baseline, row in NOTHING_EVICTED.items()}
    budgets = {name: budget_bytes for name in layouts}
    budgets |= {row: UNLIMITED_BYTES for row in NOTHING_EVICTED.values()}
    evaluations: dict[str, Evaluation] = {}
    for name, (layout, calls) in layouts.items():
        members = {bundle: frozenset(models_of) for bundle, models_of in layout.items()}
        try:
            predicted = predict(
                held_out, members, calls, costs, budgets[name], settings.policy, name
            )
        except UserInputError as error:  # a bundle that cannot fit the budget
            evaluations[name] = Evaluation(name, len(members), None, left_out=str(error))
            continue
        evaluations[name] = Evaluation(name, len(members), predicted)
    if baselines is None or planned is None:  # no real replays
        return list(evaluations.values())
    built = {d.name: d for d in baselines} | {"plan": replace(planned, name="plan")}
    built |= {row: replace(built[baseline], name=row) for baseline, row in NOTHING_EVICTED.items()}
    real = {name: built[name] for name in layouts if evaluations[name].predicted is not None}
    total, done = settings.replays * len(real), 0
    for _ in range(settings.replays):
        for name in list(real):
            report("replaying", done, total)
            done += 1
            try:
                evaluations[name].replayed.append(
                    replay(held_out, real[name], budgets[name], settings.policy)
                )
            except UserInputError as error:  # e.g. a bundle measured larger than predicted
                del real[name]
                evaluations[name].replayed.clear()
                evaluations[name] = replace(evaluations[name], left_out=str(error))
    report("replaying", total, total)
    return list(evaluations.values())


def _built_plan(
    models: dict[str, Path],
    functions: dict[str, list[str]],
    bundles: dict[str, list[str]],
    settings: PlanSettings,
) -> Deployment:
    return grouped_deployment(
        models, functions, bundles, settings.work_dir, settings.aot, settings.stack
    )


def _refused(deployment: Deployment, budget_bytes: int) -> str | None:
    """Why the loader would refuse one of `deployment`'s bundles under `budget_bytes`, if it
    would (the largest load beside the largest arena must fit)."""
    cache = EngineCache(budget_bytes)
    try:
        for bundle in deployment.bundles.values():
            cache.register(bundle)
    except UserInputError as error:
        return str(error)
    finally:
        cache.close()
    return None


def _with_arena(costs: CostModel, members: frozenset[str]) -> int:
    whole = costs.whole(members)
    return whole.bytes + whole.activation_bytes


def _budget(text: str, footprints: Sequence[Footprint]) -> tuple[int, str | None]:
    """`text` in bytes and a notice when it was changed. A percentage is of every model alone
    held at once, raised to the least budget every model loads under (the largest beside the
    largest arena), as `simulate` raises it; a size below that is refused."""
    budget_bytes = parse_budget(text, held_at_once(footprints))
    floor = least_budget(footprints)
    if budget_bytes >= floor:
        return budget_bytes, None
    below = (
        f"--budget {text} is {format_bytes(budget_bytes)}, below the largest model beside "
        f"its activations ({format_bytes(floor)})"
    )
    if not text.strip().endswith("%"):
        raise UserInputError(below)
    return floor, f"{below}; using {format_bytes(floor)}"
