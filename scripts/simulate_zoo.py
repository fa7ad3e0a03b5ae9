"""The synthetic swap workload on real zoo bundles: fused vs unfused, LRU vs GDSF.

    python scripts/simulate_zoo.py [--requests 400] [--budget 50%] [--aot] [--json FILE]
                                   [--policy lru,gdsf,belady] [--own-weights] [--stack]

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

from fusedinf_cc.measure.simulate import TraceSpec, synthetic_functions  # noqa: E402
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--budget", default="50%")
    parser.add_argument("--work-dir", type=Path, default=REPO / ".cache" / "simulate")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--aot", action="store_true", help="build every bundle with fuse --aot")
    parser.add_argument("--policy", default="lru,gdsf,belady", help="policies to replay")
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
    args = parser.parse_args()
    command = [sys.executable, "-m", "fusedinf_cc", "simulate"]
    if args.overlapping:
        work_dir = args.work_dir / "overlapping"
        command += overlapping(args.work_dir / "models", work_dir)
    elif args.own_weights:
        work_dir = args.work_dir / "own-weights"
        functions_file = work_dir / "functions.json"
        command += own_weights(args.work_dir / "models", functions_file)
        command += ["--functions", str(functions_file)]
    else:
        work_dir = args.work_dir
        command += shared_pool(args.work_dir / "models")
    command += [
        "--synthetic",
        "--requests",
        str(args.requests),
        "--budget",
        args.budget,
        "--policy",
        args.policy,
        "--work-dir",
        str(work_dir / "fused"),
    ]
    # Own weights share no model, so nothing groups; the overlapping workload names its groups.
    if not (args.own_weights or args.overlapping):
        command += ["--fused-groups", "auto"]
    if args.json:
        command += ["--json", str(args.json)]
    if args.aot:
        command.append("--aot")
    if args.stack:
        command.append("--stack")
    subprocess.run(command, check=True)


if __name__ == "__main__":
    main()
