"""The synthetic swap workload on real zoo bundles: fused vs unfused, LRU vs GDSF.

    python scripts/simulate_zoo.py [--requests 400] [--budget 50%] [--aot] [--json FILE]
                                   [--policy lru,gdsf,belady] [--own-weights] [--stack]
                                   [any other option of the command, passed on as given:
                                    --device-profile orin-nano-sd, --keep-page-cache, ...]

Fixed workload (reported in docs/benchmarks.md): a pool of 12 distinct zoo models (resnet18,
mobilenet_v3_small, squeezenet1_1, transformer_encoder, head0 and head1, two weight variants
each); 20 functions of 2 to 4 models drawn from the pool (seed 0); Zipf popularity s=1.1 over
functions; Poisson arrivals at 4 requests/s (what 2 cores serve without a standing queue); a
budget of half the pool's total measured footprint. Unfused, each model is its own bundle and
functions that use one model share it; fused, each function is one bundle; grouped, models that
exactly the same functions call are fused into one bundle (`--fused-groups auto`). With `--aot`
every bundle of every deployment, the unfused models' too, is built with `fuse --aot`.

`--own-weights` keeps the functions' architectures and the trace, but gives every function its
own weights for each model it calls (58 distinct models): no model is shared between functions,
so no fused bundle copies one that another bundle holds.

`--stack` builds the fused bundles with `fuse --stack`: a function's models of one architecture
run as one wider model.

`--drifting` replays a third: twelve functions over nine zoo models, calling overlapping subsets
(`DRIFTING_FUNCTIONS`), with popularity that drifts over the trace: Zipf(1.1) over one ranking
of the functions at the start, another at the end, mixed linearly between.

`--plan` runs `fusedinf-cc plan` on the workload instead (its trace written to a file): the
plan is searched on the first half and replayed beside unfused and fused on the second,
`--replays` times each.

`--overlapping` replays another workload, where functions call overlapping subsets of the same
bundles: three groups of related models (the OCR-like trio; head0 and head1 on one backbone;
resnet18 and squeezenet1_1 on one image) and eight functions, some calling a whole group (a
page through the OCR trio) and some a part of one (the classifier and recognizer alone on text
lines; one head). Grouped, each group is one bundle and a function that calls part of it runs
those models' parts (`OVERLAPPING_FUNCTIONS`, `OVERLAPPING_GROUPS`).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from fusedinf_cc.workload.requests import (  # noqa: E402
    Request,
    TraceSpec,
    synthetic_functions,
    synthetic_trace,
)
from fusedinf_cc.workload.traces import write_trace  # noqa: E402
from model_zoo.zoo import export  # noqa: E402

POOL = ("resnet18", "mobilenet_v3_small", "squeezenet1_1", "transformer_encoder", "head0", "head1")
VARIANTS = (1, 2)


def pool() -> dict[str, tuple[str, int]]:
    """The 12 models every function draws from: name -> (zoo architecture, weight variant)."""
    return {f"{name}_v{variant}": (name, variant) for name in POOL for variant in VARIANTS}


def shared_pool(models_dir: Path) -> list[str]:
    """The pool's models, as NAME=PATH."""
    return [
        f"{model}={export(name, models_dir, variant=variant)}"
        for model, (name, variant) in pool().items()
    ]


def own_weights(models_dir: Path, functions_file: Path) -> list[str]:
    """The same functions, each calling its own copy of its models (other random weights):
    the models as NAME=PATH, and `functions_file` written with which function calls which."""
    models = pool()
    specs, calls = [], {}
    variant = len(VARIANTS) + 1  # weights no model of the shared pool has
    # `simulate` draws the functions from the models' sorted names: the same draw here.
    for function, used in synthetic_functions(sorted(models), TraceSpec()).items():
        calls[function] = []
        for model in used:
            architecture = models[model][0]
            path = export(architecture, models_dir, variant=variant)
            specs.append(f"{function}_{model}={path}")
            calls[function].append(f"{function}_{model}")
            variant += 1
    functions_file.parent.mkdir(parents=True, exist_ok=True)
    functions_file.write_text(json.dumps(calls, indent=2) + "\n", encoding="utf-8")
    return specs


OVERLAPPING_GROUPS = {
    "ocr": ["text_detector", "text_angle_cls", "text_recognizer"],
    "scene": ["head0", "head1"],
    "imagenet": ["resnet18", "squeezenet1_1"],
}
OVERLAPPING_FUNCTIONS = {
    "ocr_page": ["text_detector", "text_angle_cls", "text_recognizer"],
    "ocr_lines": ["text_angle_cls", "text_recognizer"],
    "find_text": ["text_detector"],
    "scene_both": ["head0", "head1"],
    "classify": ["head0"],
    "segment": ["head1"],
    "imagenet_pair": ["resnet18", "squeezenet1_1"],
    "tag": ["squeezenet1_1"],
}


def overlapping(models_dir: Path, work_dir: Path) -> list[str]:
    """The overlapping workload's models as NAME=PATH, then its --functions and --fused-groups
    files (written into `work_dir`) as options."""
    work_dir.mkdir(parents=True, exist_ok=True)
    functions, groups = work_dir / "functions.json", work_dir / "groups.json"
    functions.write_text(json.dumps(OVERLAPPING_FUNCTIONS, indent=2) + "\n", encoding="utf-8")
    groups.write_text(json.dumps(OVERLAPPING_GROUPS, indent=2) + "\n", encoding="utf-8")
    names = sorted({model for members in OVERLAPPING_GROUPS.values() for model in members})
    specs = [f"{name}={export(name, models_dir)}" for name in names]
    return [*specs, "--functions", str(functions), "--fused-groups", str(groups)]


DRIFTING_FUNCTIONS = {
    "ocr_page": ["text_detector", "text_angle_cls", "text_recognizer"],
    "ocr_lines": ["text_angle_cls", "text_recognizer"],
    "read_sign": ["text_detector", "text_recognizer"],
    "find_text": ["text_detector"],
    "scene_both": ["head0", "head1"],
    "classify": ["head0"],
    "segment": ["head1"],
    "imagenet_pair": ["resnet18", "squeezenet1_1"],
    "tag": ["squeezenet1_1"],
    "mobile_tag": ["mobilenet_v3_small", "squeezenet1_1"],
    "caption": ["resnet18", "transformer_encoder"],
    "embed": ["transformer_encoder"],
}


def drifting_trace(functions: list[str], spec: TraceSpec) -> list[Request]:
    """Poisson arrivals; popularity Zipf(s) over `functions` in their order at the start and
    over another order (drawn with the seed) at the end, mixed linearly in between."""
    rng = np.random.default_rng(spec.seed + 2)
    zipf = np.arange(1, len(functions) + 1, dtype=float) ** -spec.zipf_s
    zipf /= zipf.sum()
    start, end = zipf, zipf[np.argsort(rng.permutation(len(functions)))]
    arrivals = np.cumsum(rng.exponential(1.0 / spec.rate_per_s, size=spec.requests))
    requests = []
    for index, arrival in enumerate(arrivals):
        mix = index / max(spec.requests - 1, 1)
        picked = rng.choice(len(functions), p=(1 - mix) * start + mix * end)
        requests.append(Request(float(arrival), functions[picked]))
    return requests


def drifting(models_dir: Path, work_dir: Path, requests: int) -> list[str]:
    """The drifting workload's models as NAME=PATH, then its --trace and --functions."""
    work_dir.mkdir(parents=True, exist_ok=True)
    functions, trace = work_dir / "functions.json", work_dir / "trace.csv"
    functions.write_text(json.dumps(DRIFTING_FUNCTIONS, indent=2) + "\n", encoding="utf-8")
    write_trace(drifting_trace(list(DRIFTING_FUNCTIONS), TraceSpec(requests=requests)), trace)
    names = sorted({model for called in DRIFTING_FUNCTIONS.values() for model in called})
    specs = [f"{name}={export(name, models_dir)}" for name in names]
    return [*specs, "--trace", str(trace), "--functions", str(functions)]


def synthetic_files(command: list[str], work_dir: Path, requests: int) -> list[str]:
    """`command` (a `simulate` command line) with the trace `--synthetic` would draw written
    to a file, as `plan` reads it: its functions are `--functions`' where given, else drawn
    from the models as `simulate` draws them."""
    work_dir.mkdir(parents=True, exist_ok=True)
    spec = TraceSpec(requests=requests)
    if "--functions" in command:
        at = command.index("--functions")
        calls = json.loads(Path(command[at + 1]).read_text(encoding="utf-8"))
        command = command[:at] + command[at + 2 :]
    else:
        names = [arg.split("=", 1)[0] for arg in command if "=" in arg and arg[0] != "-"]
        calls = synthetic_functions(sorted(names), spec)
    functions, trace = work_dir / "functions.json", work_dir / "trace.csv"
    functions.write_text(json.dumps(calls, indent=2) + "\n", encoding="utf-8")
    write_trace(synthetic_trace(sorted(calls), spec), trace)
    return [*command, "--trace", str(trace), "--functions", str(functions)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--budget", default="50%")
    parser.add_argument("--work-dir", type=Path, default=REPO / ".cache" / "simulate")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--aot", action="store_true", help="build every bundle with fuse --aot")
    parser.add_argument(
        "--policy", help="policies to replay (lru,gdsf,belady); --plan: the one (gdsf)"
    )
    parser.add_argument(
        "--own-weights", action="store_true", help="no model shared between functions"
    )
    parser.add_argument(
        "--stack", action="store_true", help="build the fused bundles with fuse --stack"
    )
    parser.add_argument(
        "--overlapping",
        action="store_true",
        help="functions that call overlapping subsets of three groups of models",
    )
    parser.add_argument(
        "--drifting",
        action="store_true",
        help="functions calling overlapping subsets, their popularity drifting over the trace",
    )
    parser.add_argument("--plan", action="store_true", help="run `plan` on the workload")
    parser.add_argument("--replays", type=int, default=3, help="--plan: real replays of each")
    # Anything else goes to the command as given: --device-profile, --keep-page-cache, ...
    args, passed_on = parser.parse_known_args()
    command = [sys.executable, "-m", "fusedinf_cc", "plan" if args.plan else "simulate"]
    models_dir = args.work_dir / "models"
    traced = False  # whether the workload's trace is a file
    if args.drifting:
        work_dir = args.work_dir / "drifting"
        command += drifting(models_dir, work_dir, args.requests)
        traced = True
    elif args.overlapping:
        work_dir = args.work_dir / "overlapping"
        command += overlapping(models_dir, work_dir)
    elif args.own_weights:
        work_dir = args.work_dir / "own-weights"
        functions_file = work_dir / "functions.json"
        command += own_weights(models_dir, functions_file)
        command += ["--functions", str(functions_file)]
    else:
        work_dir = args.work_dir
        command += shared_pool(models_dir)
    if args.plan:
        if "--fused-groups" in command:  # a plan chooses the groups itself
            at = command.index("--fused-groups")
            command = command[:at] + command[at + 2 :]
        if not traced:
            command = synthetic_files(command, work_dir / "plan", args.requests)
        command += ["--policy", args.policy or "gdsf", "--replays", str(args.replays)]
        (work_dir / "plan").mkdir(parents=True, exist_ok=True)
        command += ["-o", str(work_dir / "plan" / "fusedinf.toml")]
    else:
        if not traced:
            command += ["--synthetic", "--requests", str(args.requests)]
        command += ["--policy", args.policy or "lru,gdsf,belady"]
        # Own weights share no model, so nothing groups; the other workloads name theirs.
        if not (args.own_weights or args.overlapping or args.drifting):
            command += ["--fused-groups", "auto"]
    command += ["--budget", args.budget, "--work-dir", str(work_dir / "fused")]
    if args.json:
        command += ["--json", str(args.json)]
    if args.aot:
        command.append("--aot")
    if args.stack:
        command.append("--stack")
    subprocess.run(command + passed_on, check=True)


if __name__ == "__main__":
    main()
