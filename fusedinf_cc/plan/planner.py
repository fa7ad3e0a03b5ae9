"""plan: the bundles for a trace and a budget, chosen on predictions and checked on real ones.

0. With real replays to come, build unfused (a bundle per model) and fused (a bundle per
   function) first: calibration measures their bundles instead of building its own.
1. Calibrate: build every called model alone and the hottest functions' groups (a few), and
   measure them through the loader, taking turns (`costs.measure_bundles`); fit the cost
   model on them. The budget is resolved against the models alone (`runtime/budget.py`).
2. Search layouts on predicted replays of the planning part of the trace (`search`).
3. Name the plan's bundles as a bundle spec names them (never a model's name).
4. Evaluate: build the plan, and replay it, unfused and fused on the held-out part of the
   trace, `replays` times, alternating, beside the prediction for the same requests: how far
   the cost model was from the loader. Unfused and fused are replayed once more with nothing
   evicted: the lower of those two rows' p99 is about the least any layout's can be, since
   a layout wins back what swapping adds and at most what fused sessions gain in running.

The held-out part is the end of the trace: the plan is judged on requests it never saw.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from fusedinf_cc.common.errors import UserInputError
from fusedinf_cc.measure.deployments import (
    Deployment,
    deployments,
    group_bundle,
    grouped_deployment,
)
from fusedinf_cc.measure.simulate import replay_deployments
from fusedinf_cc.plan.costs import CostModel, measure_bundles
from fusedinf_cc.plan.predict import predict
from fusedinf_cc.plan.report import NOTHING_EVICTED, Evaluation, Plan
from fusedinf_cc.plan.search import REQUIRED_GAIN, SearchResult, search
from fusedinf_cc.runtime.budget import Budget
from fusedinf_cc.runtime.ledger import MemoryLedger
from fusedinf_cc.runtime.loading import DEFAULT_LOADING, LOADING_POLICIES
from fusedinf_cc.workload.layout import Functions, Layout, used_models
from fusedinf_cc.workload.requests import Request
from fusedinf_cc.workload.routing import route

UNLIMITED_BYTES = 1 << 62
# `plan --loading auto`: every loading policy calibrated and searched; the plan is served with
# the one whose best grouping is predicted to do best.
AUTO_LOADING = "auto"
# Loads of each calibration bundle measured, taking turns with the others. A session's warm
# runs moved by up to 1.6x between calibrations of three rounds on this machine.
MEASURING_ROUNDS = 5
# What a stage reports as it goes: (stage, done, total).
Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class PlanSettings:
    budget: Budget  # a size, or a percentage of every model alone
    policy: str = "gdsf"
    # How the loader serving the plan reads new sessions' weights; `AUTO_LOADING`: chosen.
    loading: str = DEFAULT_LOADING
    aot: bool = False
    stack: bool = False
    holdout: float = 0.5  # the share of the trace, at its end, the plan is judged on
    replays: int = 3  # real replays of each deployment on the held-out part; 0: none
    search_seconds: float = 20.0
    calibration_groups: int = 8  # the hottest functions' groups measured for real
    work_dir: Path = Path(".fusedinf-plan")
    keep_page_cache: bool = False  # replays leave evicted bundles' files in the page cache


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
    requests: Sequence[Request], functions: Functions, count: int
) -> list[list[str]]:
    """The model sets of the `count` most requested functions that call two models or more."""
    calls = Counter(frozenset(functions[r.function]) for r in requests)
    hot = [models for models, _ in calls.most_common() if len(models) > 1]
    return [sorted(models) for models in hot[:count]]


def spec_names(layout: Layout, models: Sequence[str]) -> Layout:
    """The layout with the names a spec takes: groups g00, g01, ...; a model alone
    `<model>-alone` (a spec's bundle never has one of its models' names)."""
    taken = set(models)
    names: dict[str, frozenset[str]] = {}
    ordered = sorted(layout.items(), key=lambda item: (len(item[1]) == 1, item[0]))
    for name, members in ordered:
        if len(members) == 1:
            name = f"{name}-alone"
        while name in taken or name in names:
            name = f"{name}-bundle"
        names[name] = members
    return Layout(names)


def calibrate(
    models: Mapping[str, Path],
    functions: Functions,
    planning: Sequence[Request],
    settings: PlanSettings,
    report: Progress,
    baselines: Sequence[Deployment] | None = None,
) -> tuple[CostModel, int, str | None]:
    """The cost model fitted on every called model alone and the hottest functions' groups,
    measured for real; the budget in bytes (`Budget.resolve` on the models alone), and a
    notice where it was raised."""
    settings.work_dir.mkdir(parents=True, exist_ok=True)
    used = used_models(functions)
    groups = hottest_groups(planning, functions, settings.calibration_groups)
    total = (1 + MEASURING_ROUNDS) * (len(used) + len(groups))  # build, then each round
    steps = iter(range(total))
    # The baselines, where built, hold every model alone and every function's group already.
    unfused, fused = baselines or (None, None)
    alone_built = unfused.bundles if unfused else {}
    groups_built = {b.members: b for b in fused.bundles.values()} if fused else {}
    singles = {}
    for model in used:
        report("calibrating", next(steps), total)
        singles[model] = alone_built.get(model) or group_bundle(
            models, [model], model, settings.work_dir, settings.aot
        )
    budget_bytes, notice = settings.budget.resolve([b.footprint for b in singles.values()])
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
                loading=settings.loading,
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
    models: Mapping[str, Path],
    functions: Functions,
    requests: Sequence[Request],
    settings: PlanSettings,
    progress: Progress | None = None,
) -> Plan:
    """Choose the bundles for `requests` under the budget, then judge them on real bundles."""
    report = progress or (lambda stage, done, total: None)
    unknown = sorted(set(used_models(functions)) - set(models))
    if unknown:
        raise UserInputError(f"the trace calls models not given: {', '.join(unknown)}")
    planning, held_out = split_trace(requests, settings.holdout)
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    baselines = None
    if settings.replays > 0:  # built first: calibration measures their bundles
        report("building", 0, 1)
        baselines = deployments(
            models, functions, settings.work_dir, aot=settings.aot, stack=settings.stack
        )
    seconds["calibrate"] = time.perf_counter() - started  # building counts with it
    weighed = _weigh_loadings(models, functions, planning, settings, report, baselines, seconds)
    scores = loading_scores({loading: w[3] for loading, w in weighed.items()})
    settings = replace(settings, loading=min(scores, key=scores.__getitem__))
    costs, budget_bytes, notice, found = weighed[settings.loading]
    kept_because = None
    if found.best.layout.groups in (found.unfused.layout.groups, found.fused.layout.groups):
        kept_because = f"no grouping was predicted {REQUIRED_GAIN:.0%} better"
    bundles = spec_names(found.best.layout, sorted(models))

    started = time.perf_counter()
    planned = None
    if baselines is not None:  # built where real replays are to come
        report("building", 0, 1)
        planned = _build(models, functions, bundles, settings)
        refused = _refused(planned, budget_bytes)
        if refused and found.best.layout.groups != found.unfused.layout.groups:
            # Built, a bundle needs more than predicted: write what is known to load.
            kept_because = f"the grouping found does not load once built: {refused}"
            found = replace(found, best=found.unfused)
            bundles = spec_names(found.best.layout, sorted(models))
            planned = _build(models, functions, bundles, settings)
    evaluations = evaluate(
        functions, held_out, bundles, costs, budget_bytes, settings, report, baselines, planned
    )
    seconds["evaluate"] = time.perf_counter() - started
    return Plan(
        bundles=bundles,
        bundle_bytes={name: _with_arena(costs, members) for name, members in bundles.items()},
        budget_bytes=budget_bytes,
        planning_requests=len(planning),
        held_out_requests=len(held_out),
        search=found,
        costs=costs,
        evaluations=evaluations,
        seconds=seconds,
        notices=(notice,) if notice else (),
        kept_because=kept_because,
        loading=settings.loading,
        loading_scores=scores if len(scores) > 1 else {},
    )


def _weigh_loadings(
    models: Mapping[str, Path],
    functions: Functions,
    planning: Sequence[Request],
    settings: PlanSettings,
    report: Progress,
    baselines: Sequence[Deployment] | None,
    seconds: dict[str, float],
) -> dict[str, tuple[CostModel, int, str | None, SearchResult]]:
    """Calibrated and searched under the loading policy asked, or under each (`AUTO_LOADING`,
    the search's time shared): each policy's cost model, budget, notice and search; the time
    each step took added to `seconds`."""
    candidates = (settings.loading,)
    if settings.loading == AUTO_LOADING:  # the policies differ only where weights are mapped
        candidates = LOADING_POLICIES if settings.aot else (DEFAULT_LOADING,)
    weighed = {}
    seconds["search"] = 0.0
    for loading in candidates:
        started = time.perf_counter()
        trying = replace(settings, loading=loading)
        costs, budget_bytes, notice = calibrate(
            models, functions, planning, trying, report, baselines
        )
        seconds["calibrate"] += time.perf_counter() - started
        started = time.perf_counter()
        found = search(
            planning,
            functions,
            costs,
            budget_bytes,
            settings.policy,
            pooled=settings.aot,  # only ahead-of-time bundles pool weights across bundles
            seconds=settings.search_seconds / len(candidates),
            progress=lambda evaluated: report("searching", evaluated, 0),
        )
        seconds["search"] += time.perf_counter() - started
        weighed[loading] = (costs, budget_bytes, notice, found)
    return weighed


def loading_scores(found: Mapping[str, SearchResult]) -> dict[str, float]:
    """Each loading policy's best grouping, predicted, scored by what its requests wait: p50
    plus p99, each over one reference for all policies (the best of any policy's baselines).
    Not by loading seconds, as the search within a policy also scores: under `bulk` a miss's
    read is in its load, under `linear` and `interleaved` in its first run, so the seconds
    do not compare across policies; a request's latency holds both. Lower is better."""
    baselines = [j.result for f in found.values() for j in (f.unfused, f.fused)]
    p50 = max(min(r.p50_ms for r in baselines), 1e-9)
    p99 = max(min(r.p99_ms for r in baselines), 1e-9)
    return {
        name: f.best.result.p50_ms / p50 + f.best.result.p99_ms / p99 for name, f in found.items()
    }


def evaluate(
    functions: Functions,
    held_out: Sequence[Request],
    bundles: Layout,
    costs: CostModel,
    budget_bytes: int,
    settings: PlanSettings,
    report: Progress,
    baselines: Sequence[Deployment] | None = None,
    planned: Deployment | None = None,
) -> list[Evaluation]:
    """Unfused, fused and the plan on the held-out requests: predicted, and (given the built
    `baselines`, unfused and fused, and the built plan, `planned`) replayed for real `replays`
    times each, alternating. A deployment with a bundle that cannot load under the budget is
    left out. Beside them, unfused and fused with no budget (`NOTHING_EVICTED`): the tail that
    inference and queueing alone make, run apart and run fused."""
    layouts = {
        "unfused": Layout.unfused(functions),
        "fused": Layout.fused(functions),
        "plan": bundles,
    }
    layouts |= {row: layouts[baseline] for baseline, row in NOTHING_EVICTED.items()}
    budgets = {name: budget_bytes for name in layouts}
    budgets |= {row: UNLIMITED_BYTES for row in NOTHING_EVICTED.values()}
    evaluations: dict[str, Evaluation] = {}
    for name, layout in layouts.items():
        routes = route(functions, layout)
        try:
            predicted = predict(
                held_out, layout, routes, costs, budgets[name], settings.policy, name
            )
        except UserInputError as error:  # a bundle that cannot load under the budget
            evaluations[name] = Evaluation(name, len(layout), None, left_out=str(error))
            continue
        evaluations[name] = Evaluation(name, len(layout), predicted)
    if baselines is None or planned is None:  # no real replays
        return list(evaluations.values())
    built = {d.name: d for d in baselines} | {"plan": planned.renamed("plan")}
    built |= {row: built[baseline].renamed(row) for baseline, row in NOTHING_EVICTED.items()}
    real = [built[name] for name in layouts if evaluations[name].predicted is not None]
    total, finished = settings.replays * len(real), [0]

    def done() -> None:
        finished[0] += 1
        report("replaying", finished[0], total)

    report("replaying", 0, total)
    replays = replay_deployments(
        held_out,
        real,
        budgets,
        [settings.policy],
        rounds=settings.replays,
        keep_page_cache=settings.keep_page_cache,
        loadings=[settings.loading],
        done=done,
    )
    for name, results in replays.results.items():
        evaluations[name].replayed.extend(results)
    for name, why in replays.left_out.items():  # e.g. a bundle measured larger than predicted
        evaluations[name] = replace(evaluations[name], replayed=[], left_out=why)
    report("replaying", total, total)
    return list(evaluations.values())


def _build(
    models: Mapping[str, Path], functions: Functions, bundles: Layout, settings: PlanSettings
) -> Deployment:
    return grouped_deployment(
        models, functions, bundles, settings.work_dir, settings.aot, settings.stack
    )


def _refused(deployment: Deployment, budget_bytes: int) -> str | None:
    """Why the loader would refuse one of `deployment`'s bundles under `budget_bytes`, if it
    would: registered as the loader registers them (`MemoryLedger.register`)."""
    ledger = MemoryLedger(budget_bytes)
    try:
        for name, bundle in deployment.bundles.items():
            ledger.register(name, bundle.footprint.load_need)
    except UserInputError as error:
        return str(error)
    return None


def _with_arena(costs: CostModel, members: frozenset[str]) -> int:
    whole = costs.whole(members)
    return whole.bytes + whole.activation_bytes
