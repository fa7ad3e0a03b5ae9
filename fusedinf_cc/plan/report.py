"""What `plan` reports: each deployment judged on the held-out requests, and the plan itself."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from fusedinf_cc.plan.costs import CostModel
from fusedinf_cc.plan.search import Judged, SearchResult
from fusedinf_cc.runtime.loading import DEFAULT_LOADING
from fusedinf_cc.workload.layout import Layout
from fusedinf_cc.workload.replay import ReplayResult

# The reference rows: each baseline with room for every bundle, so nothing is ever evicted.
# Their p99 is what inference and queueing alone make, with a request's models run apart or as
# one fused session; what a baseline has above its row, swapping adds.
NOTHING_EVICTED = {"unfused": "unfused, nothing evicted", "fused": "fused, nothing evicted"}
BASELINES = tuple(NOTHING_EVICTED)


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
    bundles: Layout  # named as a spec names them
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
    loading: str = DEFAULT_LOADING  # how the loader read new sessions' weights, and will
    # With `plan --loading auto`: each policy's best grouping, predicted, scored against one
    # reference (lower is better); `loading` is the lowest.
    loading_scores: dict[str, float] = field(default_factory=dict)

    @property
    def kept_baseline(self) -> str | None:
        """Unfused or fused where the plan is that baseline (`kept_because` says why)."""
        for name, judged in (("unfused", self.search.unfused), ("fused", self.search.fused)):
            if self.search.best.layout.groups == judged.layout.groups:
                return name
        return None

    @property
    def replayed(self) -> bool:
        """Whether every deployment judged (not left out) was replayed for real."""
        judged = [e for e in self.evaluations if e.left_out is None]
        return bool(judged) and all(e.replayed for e in judged)

    def over_baselines(self) -> dict[str, float]:
        """The plan's loading seconds and p99 over the better baseline's (unfused or fused,
        each metric its own better), replayed where all were, else predicted; and the lower
        p99 of the two nothing-evicted rows over that same better p99 (`p99_nothing_evicted`):
        about how low any layout can bring it."""
        judged = [e for e in self.evaluations if e.left_out is None]
        plan = next((e for e in judged if e.deployment == "plan"), None)
        floors = [e for e in judged if e.deployment in NOTHING_EVICTED.values()]
        baselines = [e for e in judged if e.deployment in BASELINES]
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

    def to_record(self) -> dict:
        def judged(j: Judged) -> dict:
            return {"bundles": sorted(sorted(b) for b in j.layout.groups), "score": j.score}

        return {
            "bundles": self.bundles.lists(),
            "bundle_bytes": self.bundle_bytes,
            "budget_bytes": self.budget_bytes,
            "planning_requests": self.planning_requests,
            "held_out_requests": self.held_out_requests,
            "kept_baseline": self.kept_baseline,
            "kept_because": self.kept_because,
            "loading": self.loading,
            "loading_scores": self.loading_scores,
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
