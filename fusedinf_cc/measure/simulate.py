"""simulate: replay a request trace against the real loader, fused vs unfused, per policy.

A *function* (a serverless handler) invokes a set of models per request. The same models are
deployed two ways: **unfused**, every model its own bundle, or **fused**, every function one
bundle. A trace of (arrival time, function) is replayed through an `EngineCache` with real
bundles: one server takes requests in arrival order. A request's latency is its wait for the
server plus the loads and inference it really took. Besides the loader's own policies, a replay
can run a clairvoyant one (Belady's, weighed by size), which reads the trace ahead: how far an
online policy is from it is what a better policy could still gain.
"""

from __future__ import annotations

import bisect
import csv
import functools
import hashlib
import io
import itertools
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import NamedTuple

import numpy as np

from fusedinf_cc.artifacts.manifest import cached_manifest
from fusedinf_cc.common.errors import UserInputError, first_line
from fusedinf_cc.common.files import sha256_file, write_text_atomic
from fusedinf_cc.common.sizes import format_bytes, parse_size
from fusedinf_cc.compiler.build import build_fused
from fusedinf_cc.runtime.feeds import random_feeds
from fusedinf_cc.runtime.footprint import Footprint, arena_bytes
from fusedinf_cc.runtime.loader import Bundle, EngineCache, open_bundle
from fusedinf_cc.runtime.policies import POLICIES, CachePolicy, Clairvoyant
from fusedinf_cc.runtime.procmem import status_bytes


@dataclass(frozen=True)
class Request:
    arrival_s: float
    function: str
    # The models the request calls, where the trace names them rather than a function (the
    # function is then named after them: "a+b").
    models: tuple[str, ...] | None = None


@dataclass(frozen=True)
class TraceSpec:
    """The synthetic workload; the defaults are the ones docs/benchmarks.md reports."""

    functions: int = 20
    min_models: int = 2
    max_models: int = 4
    requests: int = 400
    zipf_s: float = 1.1
    rate_per_s: float = 4.0
    seed: int = 0


def synthetic_functions(models: Sequence[str], spec: TraceSpec) -> dict[str, list[str]]:
    """`spec.functions` functions, each invoking 2-4 distinct models drawn from `models`."""
    if len(models) < spec.max_models:
        raise UserInputError(f"need at least {spec.max_models} models to draw functions from")
    rng = np.random.default_rng(spec.seed)
    functions = {}
    for index in range(spec.functions):
        count = int(rng.integers(spec.min_models, spec.max_models + 1))
        chosen = rng.choice(len(models), size=count, replace=False)
        functions[f"fn{index:02d}"] = [models[i] for i in sorted(chosen)]
    return functions


def synthetic_trace(functions: Sequence[str], spec: TraceSpec) -> list[Request]:
    """Zipf(s) popularity over functions (rank 1 the most popular), Poisson arrivals."""
    rng = np.random.default_rng(spec.seed + 1)
    ranks = np.arange(1, len(functions) + 1)
    popularity = ranks**-spec.zipf_s
    popularity /= popularity.sum()
    picks = rng.choice(len(functions), size=spec.requests, p=popularity)
    arrivals = np.cumsum(rng.exponential(1.0 / spec.rate_per_s, size=spec.requests))
    return [Request(float(t), functions[i]) for t, i in zip(arrivals, picks, strict=True)]


def read_trace(path: Path) -> list[Request]:
    """CSV with a header `timestamp,function` (seconds, any origin), one request per row; or
    `timestamp,models`, each row naming the models a request calls (`a+b+c`)."""
    try:
        with open(path, newline="", encoding="utf-8") as stream:
            reader = csv.DictReader(stream)
            columns = set(reader.fieldnames or ())
            rows = list(reader)
    except FileNotFoundError:
        raise UserInputError(f"{path}: no such trace") from None
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise UserInputError(f"{path}: not a CSV trace ({first_line(error)})") from None
    expected = "expected columns timestamp,function or timestamp,models"
    try:
        if "models" in columns and "function" not in columns:
            requests = [_model_call(float(row["timestamp"]), row["models"]) for row in rows]
        else:
            requests = [Request(float(row["timestamp"]), row["function"].strip()) for row in rows]
    except (KeyError, ValueError, AttributeError) as error:
        raise UserInputError(f"{path}: {expected} ({first_line(error)})") from None
    if not requests:
        raise UserInputError(f"{path}: no requests ({expected}, then rows)")
    return sorted(requests, key=lambda request: request.arrival_s)


def _model_call(arrival_s: float, text: str) -> Request:
    models = tuple(dict.fromkeys(name.strip() for name in text.split("+")))
    if not all(models):
        raise ValueError(f"models {text!r}: name them as a+b+c")
    return Request(arrival_s, "+".join(sorted(models)), models)


def trace_functions(requests: Sequence[Request]) -> dict[str, list[str]] | None:
    """The functions a trace that names models defines (one per set of models called
    together); None for a trace that names functions."""
    if not all(request.models for request in requests):
        return None
    return {r.function: sorted(r.models) for r in requests}  # type: ignore[arg-type]


def read_name_lists(path: Path, flag: str, key: str) -> dict[str, list[str]]:
    """A JSON object of non-empty lists of names, e.g. functions -> the models each calls."""
    expected = f'{flag} {path}: expected a JSON object such as {{"{key}": ["model", ...]}}'
    try:
        loaded = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise UserInputError(f"{expected} ({error})") from None
    if not isinstance(loaded, dict):
        raise UserInputError(expected)
    for entry, names in loaded.items():
        if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
            raise UserInputError(f"{expected}; {entry!r} is {json.dumps(names)}")
    return loaded


def workload_functions(
    trace: Sequence[Request] | None,
    functions_file: Path | None,
    models: Callable[[], Sequence[str]],
    spec: TraceSpec,
) -> dict[str, list[str]]:
    """Which models each function of the workload calls: those a trace that names models
    calls, else `functions_file`'s, else drawn from `models()`. Every function the trace
    names must be known."""
    named = trace_functions(trace) if trace else None
    if named is not None:
        if functions_file is not None:
            raise UserInputError(
                "--functions: the trace names the models each request calls; give no --functions"
            )
        return named
    if functions_file is not None:
        functions = read_name_lists(functions_file, "--functions", "fn")
    else:
        functions = synthetic_functions(models(), spec)
    missing = {r.function for r in trace or ()} - set(functions)
    if missing:
        raise UserInputError(f"the trace names unknown functions: {sorted(missing)}")
    return functions


def write_trace(requests: Sequence[Request], path: Path) -> None:
    """The trace as `read_trace` reads it, written whole or not at all."""
    text = io.StringIO(newline="")
    writer = csv.writer(text)
    by_models = trace_functions(requests) is not None
    writer.writerow(["timestamp", "models" if by_models else "function"])
    for request in requests:
        called = "+".join(request.models) if by_models else request.function  # type: ignore[arg-type]
        writer.writerow([f"{request.arrival_s:.6f}", called])
    write_text_atomic(path, text.getvalue())


class Call(NamedTuple):
    """What one request runs on one bundle: the whole (model None) or one model's part."""

    bundle: str
    model: str | None = None

    @property
    def name(self) -> str:
        """What the loader is asked for, with `bundle=`: the model, or the bundle itself."""
        return self.model or self.bundle


@dataclass(frozen=True)
class Deployment:
    """Bundles to register, and per function what one of its requests runs."""

    name: str
    bundles: dict[str, Bundle]  # opened once: footprints measured once
    calls: dict[str, list[Call]]


def auto_groups(functions: dict[str, list[str]]) -> dict[str, list[str]]:
    """Models that exactly the same functions call are always requested together: each such set
    of two or more models is one group. Fusing a group loads nothing that a request skips and
    copies no model into two bundles."""
    callers: dict[str, set[str]] = {}
    for function, used in functions.items():
        for model in used:
            callers.setdefault(model, set()).add(function)
    together: dict[frozenset[str], list[str]] = {}
    for model in sorted(callers):
        together.setdefault(frozenset(callers[model]), []).append(model)
    sets = sorted(sorted(models) for models in together.values() if len(models) > 1)
    return {f"g{index:02d}": models for index, models in enumerate(sets)}


def grouped_deployment(
    models: dict[str, Path],
    functions: dict[str, list[str]],
    groups: dict[str, list[str]],
    work_dir: Path,
    aot: bool = False,
    stack: bool = False,
) -> Deployment:
    """A bundle per group (fused; a model may sit in several groups) and per used model in
    none; a request runs what `route` picks."""
    for group, members in groups.items():
        unknown = set(members) - set(models)
        if unknown or not members or len(set(members)) < len(members):
            raise UserInputError(
                f"--fused-groups: group {group!r} needs distinct, known models "
                f"(unknown: {sorted(unknown)})"
            )
        if group in models and members != [group]:
            raise UserInputError(f"--fused-groups: group {group!r} has a model's name")
    bundles = {
        group: group_bundle(models, members, group, work_dir, aot, stack)
        for group, members in groups.items()
    }
    members_of = solo_completed(groups, functions)
    for model in set(members_of) - set(bundles):
        bundles[model] = group_bundle(models, [model], model, work_dir, aot)
    return Deployment("grouped", bundles, route(functions, members_of))


def group_bundle(
    models: dict[str, Path],
    members: Sequence[str],
    name: str,
    work_dir: Path,
    aot: bool = False,
    stack: bool = False,
) -> Bundle:
    """The bundle of `members` under `name`: one model as the unfused deployment opens it, more
    fused (built once per set of models and reused)."""
    if len(members) == 1:
        return open_bundle(_single(models, members[0], work_dir, aot), name=name)
    key = hashlib.sha256(",".join(sorted(members)).encode()).hexdigest()[:12]
    return open_bundle(_built(models, members, work_dir / f"group-{key}", aot, stack), name=name)


def _preference(members: set[str], remaining: set[str], name: str) -> tuple[int, bool, int, str]:
    """How `route` ranks a bundle for the models a function still needs (least is best)."""
    return (-len(members & remaining), not members <= remaining, len(members), name)


def solo_completed(
    groups: dict[str, list[str]], functions: dict[str, list[str]]
) -> dict[str, list[str]]:
    """`groups`, and a bundle of its own (named after it) for each used model in none."""
    grouped = {model for members in groups.values() for model in members}
    used = sorted({m for members in functions.values() for m in members} - grouped)
    return {**groups, **{model: [model] for model in used}}


def route(functions: dict[str, list[str]], bundles: dict[str, list[str]]) -> dict[str, list[Call]]:
    """What each function's request runs, fixed ahead of time: the fewest bundles that hold
    its models, each run whole where the function uses all of it (one session) and else by
    the parts of the models it uses. Between bundles that cover as much, a whole beats parts
    and a smaller bundle a larger one."""
    holders: dict[str, list[str]] = {}
    for bundle, members in bundles.items():
        for model in members:
            holders.setdefault(model, []).append(bundle)
    calls: dict[str, list[Call]] = {}
    for function, used in functions.items():
        remaining = set(used)
        chosen: list[tuple[str, set[str]]] = []
        while remaining:
            candidates = {b for model in remaining for b in holders.get(model, [])}
            if not candidates:
                raise UserInputError(
                    f"function {function!r} uses {sorted(remaining)}, which no bundle holds"
                )

            best = min(candidates, key=lambda b: _preference(set(bundles[b]), remaining, b))
            covered = set(bundles[best]) & remaining
            chosen.append((best, covered))
            remaining -= covered
        order = {model: index for index, model in enumerate(used)}
        chosen.sort(key=lambda pick: min(order[m] for m in pick[1]))
        function_calls = []
        for bundle, covered in chosen:
            if covered == set(bundles[bundle]):
                function_calls.append(Call(bundle))
            else:
                function_calls += [Call(bundle, m) for m in used if m in covered]
        calls[function] = function_calls
    return calls


def deployments(
    models: dict[str, Path],
    functions: dict[str, list[str]],
    work_dir: Path,
    groups: dict[str, list[str]] | None = None,
    aot: bool = False,
    stack: bool = False,
) -> list[Deployment]:
    """The unfused deployment (a bundle per model), the fused one (a bundle per function) and,
    given `groups`, the grouped one (a bundle per group of models). With `aot`, every bundle of
    every deployment is built ahead of time for this CPU (`fuse --aot`). An unfused model is
    built too, as a bundle of one (`_single`), so deployments differ only in their grouping.
    `stack` builds the fused bundles with `fuse --stack`."""
    unknown = {m for used in functions.values() for m in used} - set(models)
    if unknown:
        raise UserInputError(f"functions use unknown models: {sorted(unknown)}")
    work_dir.mkdir(parents=True, exist_ok=True)
    fused = {
        function: _built(models, used, work_dir / function, aot, stack)
        for function, used in functions.items()
    }
    used_models = sorted({m for used in functions.values() for m in used})
    plans = [
        Deployment(
            "unfused",
            {m: group_bundle(models, [m], m, work_dir, aot) for m in used_models},
            {f: [Call(m) for m in used] for f, used in functions.items()},
        ),
        Deployment(
            "fused",
            {f: open_bundle(path, name=f) for f, path in fused.items()},
            {f: [Call(f)] for f in functions},
        ),
    ]
    if groups is not None:
        plans.append(grouped_deployment(models, functions, groups, work_dir, aot, stack))
    return plans


def _built(
    models: dict[str, Path], members: Sequence[str], stem: Path, aot: bool, stack: bool = False
) -> Path:
    """The fused bundle of `members` at `stem`.onnx (`stem`.stack.aot.onnx with both options),
    built once and reused until a source model changes."""
    suffix = (".stack" if stack else "") + (".aot.onnx" if aot else ".onnx")
    out = stem.with_name(stem.name + suffix)
    if not _built_from(out, {m: models[m] for m in members}):
        specs = [f"{m}={models[m]}" for m in members]
        build_fused(specs, out, share_inputs="auto", aot=aot, stack=stack)
    return out


def _built_from(artifact: Path, sources: dict[str, Path]) -> bool:
    """Whether `artifact` exists and was built from exactly these files (by sha256)."""
    manifest = cached_manifest(artifact)
    if manifest is None:
        return False
    built = {entry.name: entry.sha256 for entry in manifest.models}
    return built == {name: _sha256_of(path) for name, path in sources.items()}


def _sha256_of(path: Path) -> str:
    """A source's sha256, hashed once per version of the file: one model sits in several
    bundles of a deployment, and in every deployment."""
    stat = path.stat()
    return _cached_sha256(path.resolve(), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=1024)
def _cached_sha256(path: Path, mtime_ns: int, size: int) -> str:
    return sha256_file(path)


def _single(models: dict[str, Path], model: str, work_dir: Path, aot: bool) -> Path:
    """An unfused model's bundle: built as a bundle of one, as `bundle build` builds a model
    alone. The file as exported holds its weights inline: opened as given, a portable resnet18
    took 144 MiB against 90 MiB built, which a replay would count against not fusing."""
    return _built(models, [model], work_dir / f"model-{model}", aot)


# What a replay can compare: the loader's policies and the clairvoyant reference.
SIMULATED_POLICIES = (*POLICIES, Clairvoyant.name)


def check_policies(names: Sequence[str]) -> None:
    unknown = [name for name in names if name not in SIMULATED_POLICIES]
    if unknown or not names:
        raise UserInputError(
            f"--policy: unknown {', '.join(unknown) or 'none given'}; "
            f"choose from {', '.join(SIMULATED_POLICIES)}"
        )


class FutureUses:
    """When each bundle is next called in a replay: what the clairvoyant policy reads."""

    def __init__(self, calls: Sequence[str]):
        """`calls`: the bundle of every call, in replay order; `now` is the current one."""
        self.now = 0
        self._steps: dict[str, list[int]] = {}
        for step, name in enumerate(calls):
            self._steps.setdefault(name, []).append(step)

    def until_next_use(self, name: str) -> float:
        """Calls from now until the next call of `name` (infinity: none)."""
        steps = self._steps.get(name, [])
        index = bisect.bisect_right(steps, self.now)
        return steps[index] - self.now if index < len(steps) else math.inf


def _policy_for(name: str, future: FutureUses) -> str | Callable[[], CachePolicy]:
    if name == Clairvoyant.name:
        return lambda: Clairvoyant(future.until_next_use)
    return name


@dataclass(frozen=True)
class ReplayResult:
    deployment: str
    policy: str
    budget_bytes: int
    requests: int
    hits: int
    misses: int
    models_loaded: int  # what the opened sessions serve: a whole bundle all its models, a part one
    evictions: int
    seconds_loading: float
    p50_ms: float
    p99_ms: float
    peak_accounted_bytes: int
    peak_rss_growth_bytes: int


def replay(
    requests: Sequence[Request], deployment: Deployment, budget_bytes: int, policy: str
) -> ReplayResult:
    check_policies([policy])
    future = FutureUses([c.bundle for r in requests for c in deployment.calls[r.function]])
    cache = EngineCache(budget_bytes, _policy_for(policy, future))
    try:  # a bundle that does not fit raises, from registering or from a request
        for bundle in deployment.bundles.values():
            cache.register(bundle)
        called = dict.fromkeys(call for calls in deployment.calls.values() for call in calls)
        feeds = {
            call: random_feeds(cache.input_specs(call.name, bundle=call.bundle)) for call in called
        }
        cache.close()  # reading input specs loaded bundles: start the replay cold
        cache.reset_stats()
        baseline = status_bytes().get("VmRSS", 0)
        peak_rss = baseline
        server_free_at = 0.0
        latencies = []
        steps = itertools.count()
        for request in requests:
            start = max(request.arrival_s, server_free_at)
            began = time.perf_counter()
            for call in deployment.calls[request.function]:
                future.now = next(steps)
                cache.run(call.name, feeds[call], bundle=call.bundle)
            service = time.perf_counter() - began
            server_free_at = start + service
            latencies.append((server_free_at - request.arrival_s) * 1000.0)
            peak_rss = max(peak_rss, status_bytes().get("VmRSS", 0))
        stats = replace(cache.stats)  # as the replay left them: closing evicts what stays
    finally:
        cache.close()
    return ReplayResult(
        deployment=deployment.name,
        policy=policy,
        budget_bytes=budget_bytes,
        requests=len(requests),
        hits=stats.hits,
        misses=stats.misses,
        models_loaded=stats.models_opened,
        evictions=stats.evictions,
        seconds_loading=stats.seconds_loading,
        p50_ms=float(np.percentile(latencies, 50)),
        p99_ms=float(np.percentile(latencies, 99)),
        peak_accounted_bytes=stats.peak_accounted_bytes,
        peak_rss_growth_bytes=peak_rss - baseline,
    )


def total_footprint(deployment: Deployment) -> int:
    """Every bundle of `deployment` resident at once, each with its parts (`held_at_once`)."""
    return held_at_once([bundle.footprint for bundle in deployment.bundles.values()])


def held_at_once(footprints: Sequence[Footprint]) -> int:
    """These bundles resident at once, each with its parts, beside one activation arena and
    the largest load's transient (a replay loads one bundle at a time)."""
    everything = sum(f.measured_bytes + sum(f.parts.values()) for f in footprints)
    loading = max((f.loading_bytes for f in footprints), default=0)
    return everything + loading + arena_bytes(footprints)


def parse_budget(text: str, reference_bytes: int) -> int:
    """`512MiB`, `2GiB`, `300MB`, a byte count, or `50%` of `reference_bytes`."""
    value = text.strip()
    if value.endswith("%"):
        try:
            return int(reference_bytes * float(value[:-1]) / 100)
        except ValueError:
            raise UserInputError(f"--budget {text!r}: use e.g. 512MiB, 2GiB or 50%") from None
    return parse_size(value, "--budget")


def replay_budget(text: str, plans: Sequence[Deployment]) -> tuple[int, str | None]:
    """The budget `text` asks for, in bytes, and a notice when it was changed. A percentage is
    of the first (unfused) deployment's total footprint, and is raised, where it is below, only
    to the least budget under which that deployment's bundles load with the sessions its
    requests run (`least_replay_budget`): a model alone must load. A deployment that needs more
    (one bundle per function holding a function's largest models) is left out where it is
    replayed, not given a budget the user did not ask for. An absolute size is taken as given,
    and registering a bundle that cannot fit under it is refused."""
    budget_bytes = parse_budget(text, total_footprint(plans[0]))
    if not text.strip().endswith("%"):
        return budget_bytes, None
    floor = least_replay_budget(plans[0])
    if budget_bytes >= floor:
        return budget_bytes, None
    notice = (
        f"--budget {text} is {format_bytes(budget_bytes)}, below the largest model with its "
        f"activations; using {format_bytes(floor)}"
    )
    return floor, notice


def least_replay_budget(deployment: Deployment) -> int:
    """The least budget under which each bundle of `deployment` loads with every session its
    calls open (its whole where a call runs it whole, each part a call runs), beside the
    largest arena: no bundle then closes its own sessions to open another. Parts no call runs
    are left out: a portable part holds copies of its weights, and one bundle per function
    never opens one."""
    opened: dict[str, set[str | None]] = {}
    for calls in deployment.calls.values():
        for call in calls:
            key = deployment.bundles[call.bundle].session_key(call.model)
            opened.setdefault(call.bundle, set()).add(key)
    largest = 0
    for name, keys in opened.items():
        footprint = deployment.bundles[name].footprint
        whole = footprint.loading_peak_bytes if None in keys else 0
        largest = max(largest, whole + sum(footprint.parts.get(k, 0) for k in keys if k))
    return largest + arena_bytes([b.footprint for b in deployment.bundles.values()])


def loading_ratios(results: Sequence[ReplayResult]) -> dict[str, dict[str, float]]:
    """Per policy, each deployment's seconds spent loading over the unfused deployment's."""
    unfused = {r.policy: r.seconds_loading for r in results if r.deployment == "unfused"}
    ratios: dict[str, dict[str, float]] = {}
    for r in results:
        if r.deployment != "unfused" and unfused.get(r.policy):
            ratios.setdefault(r.policy, {})[r.deployment] = r.seconds_loading / unfused[r.policy]
    return ratios


def results_json(results: Sequence[ReplayResult], extra: dict) -> str:
    report = {
        **extra,
        "results": [asdict(r) for r in results],
        "loading_seconds_over_unfused": loading_ratios(results),
    }
    return json.dumps(report, indent=2) + "\n"
