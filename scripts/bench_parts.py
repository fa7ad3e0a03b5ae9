"""A request for one model of a fused bundle against that model as its own bundle.

    python scripts/bench_parts.py [--sets ocr,resnet_squeezenet,heads,stacked]
                                  [--kinds aot,portable,ort] [--rounds 15] [--requests 20]
                                  [--json FILE] [--cold [--device-profile P]]

For each set of zoo models and each kind of artifact (`--aot`, portable `.onnx`, `.ort`) it
builds the fused bundle (`fuse`, the models on their own inputs, or sharing one with
`--share-inputs auto`) and every model alone as a bundle of the same kind. Then, in one
process and through the loader (`BundleCache`: pooled
weights, the shared arena), round by round and in alternating order, it times `requests`
requests of each model inside the fused bundle (which runs its part) and of the same model on
its own bundle, and of the whole bundle in a cache that has only ever opened the whole (as
before per-model parts) and in the one that has opened every part too. Medians of the rounds'
medians; a model's outputs from the part must be bitwise those of the whole and of the model
alone. Memory: in a fresh process, the private memory (RssAnon) and PSS that opening and running
every part adds to the loaded whole, against the bundle's footprint as the loader counts it.

`--cold` measures instead a model's first request from storage, round by round: the files
dropped from the page cache, a fresh loader, one request for the model in the fused bundle (its
part) and for the model as its own bundle; the seconds and the bytes each read. Under a device
profile (`--device-profile`, or `--memory-limit`/`--read-bandwidth`) the script runs itself
again in a cgroup made for the run, throttled on the disk that holds `--work-dir`.

Sets: `ocr` is the OCR-like trio (a detector on a 480x480 page, a small angle classifier on
48x192 crops, a CRNN recognizer on 48x320 lines, each on its own input); `resnet_squeezenet` is
resnet18 and squeezenet1_1 on one shared image; `heads` is head0 and head1, whose common backbone
`cse` computes once (a head's part includes it); `stacked` is two mobilenet_v3_small of other
weights, fused with `--stack` (a model's part includes the stacked layers, which compute both).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from fusedinf_cc.compiler.build import build_fused  # noqa: E402
from fusedinf_cc.limits.profiles import device_profile  # noqa: E402
from fusedinf_cc.limits.run import inside_a_run_group, run_limited  # noqa: E402
from fusedinf_cc.runtime.feeds import random_feeds  # noqa: E402
from fusedinf_cc.runtime.loader import BundleCache  # noqa: E402
from fusedinf_cc.runtime.pagecache import drop_file_pages, storage_read_bytes  # noqa: E402
from model_zoo.zoo import export  # noqa: E402

# Set -> (zoo models, `ARCH-vK` for weight variant K; --share-inputs; --stack).
SETS = {
    "ocr": (("text_detector", "text_angle_cls", "text_recognizer"), "none", False),
    "resnet_squeezenet": (("resnet18", "squeezenet1_1"), "auto", False),
    "heads": (("head0", "head1"), "auto", False),
    "stacked": (("mobilenet_v3_small-v1", "mobilenet_v3_small-v2"), "auto", True),
}
BUDGET = 8 << 30

_MEMORY_PROBE = """
import json, sys
from pathlib import Path
from fusedinf_cc.artifacts.manifest import cached_manifest
from fusedinf_cc.backends.sessions import open_session
from fusedinf_cc.runtime.feeds import random_feeds
from fusedinf_cc.runtime.procmem import proportional_set_size, status_bytes
import os
artifact = Path(sys.argv[1])
whole = open_session(artifact, shared_arena=True)
feeds = random_feeds(whole.inputs)
whole.run(feeds)
before = (status_bytes()["RssAnon"], proportional_set_size(os.getpid()))
parts = [open_session(artifact, shared_arena=True, part=p) for p in cached_manifest(artifact).parts]
for part in parts:
    part.run({spec.name: feeds[spec.name] for spec in part.inputs})
after = (status_bytes()["RssAnon"], proportional_set_size(os.getpid()))
print(json.dumps({"rss_anon": after[0] - before[0], "pss": after[1] - before[1]}))
"""


def build(
    models: tuple[str, ...], share: str, stack: bool, kind: str, folder: Path
) -> tuple[Path, dict]:
    """The fused bundle of `models` and each model alone, as `kind` artifacts."""
    folder.mkdir(parents=True, exist_ok=True)
    aot = kind == "aot"
    suffix = {"aot": ".aot.onnx", "portable": ".onnx", "ort": ".ort"}[kind]
    paths = {name: _export(name) for name in models}
    fused = folder / f"fused{suffix}"
    specs = [f"{n}={p}" for n, p in paths.items()]
    build_fused(specs, fused, share_inputs=share, aot=aot, stack=stack)
    alone = {}
    for name, path in paths.items():
        alone[name] = folder / f"{name}{suffix}"
        build_fused([f"{name}={path}"], alone[name], aot=aot)
    return fused, alone


def _export(name: str) -> Path:
    architecture, _, variant = name.partition("-v")
    return export(architecture, REPO / ".cache" / "zoo" / "opset17", variant=int(variant or 0))


def _median_ms(cache: BundleCache, name: str, feeds: dict, requests: int) -> float:
    times = []
    for _ in range(requests):
        started = time.perf_counter()
        cache.run(name, feeds)
        times.append((time.perf_counter() - started) * 1000.0)
    return statistics.median(times)


def measure_set(set_name: str, kind: str, rounds: int, requests: int, work: Path) -> dict:
    models, share, stack = SETS[set_name]
    fused, alone = build(models, share, stack, kind, work / set_name / kind)
    in_bundle, on_their_own, whole_only = (BundleCache(BUDGET) for _ in range(3))
    bundle = in_bundle.register(fused, name="bundle")
    whole_only.register(fused, name="bundle")
    for name, path in alone.items():
        on_their_own.register(path, name=name)
    feeds = {name: random_feeds(in_bundle.input_specs(name), seed=1) for name in models}
    whole_feeds = random_feeds(in_bundle.input_specs("bundle"), seed=1)
    bitwise = {}
    for name in models:
        part, own = in_bundle.run(name, feeds[name]), on_their_own.run(name, feeds[name])
        whole = in_bundle.run("bundle", {**whole_feeds, **_fused_names(bundle, name, feeds[name])})
        outputs = bundle.models()[name].outputs
        bitwise[name] = all(
            part[o].tobytes() == own[o].tobytes() == whole[outputs[o]].tobytes() for o in part
        )
    whole_only.run("bundle", whole_feeds)
    assert whole_only.sessions("bundle") == ["bundle"]
    samples: dict[str, list[float]] = {}
    for index in range(rounds):
        order = list(models) if index % 2 == 0 else list(reversed(models))
        for name in order:
            pair = [("in_bundle", in_bundle), ("alone", on_their_own)]
            for label, cache in pair if index % 2 == 0 else reversed(pair):
                samples.setdefault(f"{name}:{label}", []).append(
                    _median_ms(cache, name, feeds[name], requests)
                )
        pair = [("whole:with_parts", in_bundle), ("whole:whole_only", whole_only)]
        for label, cache in pair if index % 2 == 0 else reversed(pair):
            samples.setdefault(label, []).append(_median_ms(cache, "bundle", whole_feeds, requests))
    p50 = {key: statistics.median(values) for key, values in samples.items()}
    memory = json.loads(
        subprocess.run(
            [sys.executable, "-c", _MEMORY_PROBE, str(fused)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.splitlines()[-1]
    )
    rows = {
        name: {
            "in_bundle_p50_ms": p50[f"{name}:in_bundle"],
            "alone_p50_ms": p50[f"{name}:alone"],
            "ratio": p50[f"{name}:in_bundle"] / p50[f"{name}:alone"],
            "bitwise": bitwise[name],
        }
        for name in models
    }
    return {
        "set": set_name,
        "kind": kind,
        "models": rows,
        "whole_p50_ms": {
            "with_parts": p50["whole:with_parts"],
            "whole_only": p50["whole:whole_only"],
        },
        "whole_ratio": p50["whole:with_parts"] / p50["whole:whole_only"],
        "footprint_bytes": bundle.footprint.measured_bytes,
        "parts_add_rss_anon_bytes": memory["rss_anon"],
        "parts_add_pss_bytes": memory["pss"],
    }


def _fused_names(bundle, model: str, feeds: dict) -> dict:
    entry = bundle.models()[model]
    return {entry.inputs[name]: value for name, value in feeds.items()}


def _line(row: dict) -> str:
    models = ", ".join(
        f"{name} {r['in_bundle_p50_ms']:.2f}/{r['alone_p50_ms']:.2f} ms = {r['ratio']:.2f}x"
        f"{'' if r['bitwise'] else ' (NOT bitwise)'}"
        for name, r in row["models"].items()
    )
    private, pss, footprint = (
        row[key] / 2**20
        for key in ("parts_add_rss_anon_bytes", "parts_add_pss_bytes", "footprint_bytes")
    )
    return (
        f"{row['set']:<18} {row['kind']:<8} {models}; whole {row['whole_ratio']:.3f}x; parts add "
        f"{private:.1f} MiB private, {pss:.1f} MiB PSS of a {footprint:.1f} MiB footprint"
    )


def measure_cold(set_name: str, kind: str, rounds: int, work: Path) -> dict:
    """Each model's first request from storage: its part in the fused bundle, and alone."""
    models, share, stack = SETS[set_name]
    fused, alone = build(models, share, stack, kind, work / set_name / kind)
    probe = BundleCache(BUDGET)
    probe.register(fused, name="bundle")
    feeds = {name: random_feeds(probe.input_specs(name), seed=1) for name in models}
    probe.close()
    samples: dict[str, list[tuple[float, int]]] = {}
    for index in range(rounds):
        for name in models if index % 2 == 0 else list(reversed(models)):
            sides = [("in_bundle", fused, "bundle"), ("alone", alone[name], name)]
            for label, artifact, bundle_name in sides if index % 2 == 0 else reversed(sides):
                cache = BundleCache(BUDGET)
                bundle = cache.register(artifact, name=bundle_name)
                drop_file_pages(bundle.files)
                before = storage_read_bytes()
                started = time.perf_counter()
                cache.run(name, feeds[name])
                seconds = time.perf_counter() - started
                samples.setdefault(f"{name}:{label}", []).append(
                    (seconds, storage_read_bytes() - before)
                )
                cache.close()
    rows = {}
    for name in models:
        part, own = samples[f"{name}:in_bundle"], samples[f"{name}:alone"]
        rows[name] = {
            "in_bundle_s": statistics.median(s for s, _ in part),
            "alone_s": statistics.median(s for s, _ in own),
            "in_bundle_read_bytes": statistics.median(b for _, b in part),
            "alone_read_bytes": statistics.median(b for _, b in own),
        }
    return {"set": set_name, "kind": kind, "cold": rows}


def _cold_line(row: dict) -> str:
    models = ", ".join(
        f"{name} {r['in_bundle_s'] * 1000:.1f}/{r['alone_s'] * 1000:.1f} ms = "
        f"{r['in_bundle_s'] / r['alone_s']:.2f}x, read {r['in_bundle_read_bytes'] / 2**20:.1f}/"
        f"{r['alone_read_bytes'] / 2**20:.1f} MiB"
        for name, r in row["cold"].items()
    )
    return f"{row['set']:<18} {row['kind']:<8} cold: {models}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", default=",".join(SETS))
    parser.add_argument("--kinds", default="aot,portable,ort")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--work-dir", type=Path, default=REPO / ".cache" / "parts")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--cold", action="store_true", help="first requests from storage")
    parser.add_argument("--device-profile")
    parser.add_argument("--memory-limit")
    parser.add_argument("--read-bandwidth")
    parser.add_argument("--read-ahead", help="the disk's read-ahead during the run (128KiB)")
    args = parser.parse_args()
    profile = device_profile(
        args.device_profile, args.memory_limit, args.read_bandwidth, None, args.read_ahead
    )
    if profile is not None and not inside_a_run_group():
        args.work_dir.mkdir(parents=True, exist_ok=True)
        run = run_limited([sys.executable, *sys.argv], profile, args.work_dir)
        print(run.summary())
        sys.exit(run.returncode)
    rows = []
    for set_name in args.sets.split(","):
        if set_name not in SETS:
            raise SystemExit(f"error: unknown set {set_name!r} (known: {', '.join(SETS)})")
        for kind in args.kinds.split(","):
            if args.cold:
                row = measure_cold(set_name, kind, args.rounds, args.work_dir)
                print(_cold_line(row), flush=True)
            else:
                row = measure_set(set_name, kind, args.rounds, args.requests, args.work_dir)
                print(_line(row), flush=True)
            rows.append(row)
    if args.json:
        report = {"rounds": args.rounds, "requests": args.requests, "rows": rows}
        args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
