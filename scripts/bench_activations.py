"""How well a footprint's activation curve predicts what a larger request needs.

    python scripts/bench_activations.py [--rounds 3] [--json FILE]

Three models with dynamic dims, exported here on random weights: one convolution over any image
size, resnet18 over any image size (`model_zoo`), and a transformer encoder layer over any
sequence length (attention: its need grows with the square of the sequence). Each is measured
as the loader measures it (`measure_footprint`: every dynamic dim 1, then the curve), then, for
each request size, in a fresh process per round: the session opened and run at the measured
size, then once at the size with its arena given back, and the peak RSS that run added.
Reported per size: the curve's estimate, the real peak (median and range over the rounds), and
their ratio. The curve is measured up to a few tens of MiB; the larger sizes are
extrapolation.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from fusedinf_cc.runtime.footprint import measure_footprint  # noqa: E402
from tests.support import builders  # noqa: E402
from tests.support.commands import run_probe  # noqa: E402

MIB = 1 << 20

_PEAK = """
import json, sys
from pathlib import Path
import numpy as np
from fusedinf_cc.backends.onnxruntime import OnnxRuntimeSession
from fusedinf_cc.runtime.procmem import release_freed_memory, reset_peak_rss, status_bytes
path, dtype = Path(sys.argv[1]), sys.argv[2]
small, large = json.loads(sys.argv[3]), json.loads(sys.argv[4])
session = OnnxRuntimeSession(path, shared_arena=True)
def feeds(shape):
    if dtype == "float32":
        return {"x": np.random.default_rng(0).standard_normal(shape).astype(np.float32)}
    return {"x": np.ones(shape, np.int64)}
session.run(feeds(small))
release_freed_memory()  # as the loader does after a portable load
before = status_bytes()["VmRSS"]
reset_peak_rss()
session.run(feeds(large), give_back_arena=True)
print(json.dumps(status_bytes()["VmHWM"] - before))
"""


def _models(folder: Path) -> list[tuple[str, Path, list[int], list[list[int]]]]:
    """(name, path, measured shape, request shapes) of each model."""
    import torch

    from model_zoo.architectures import resnet18

    conv = builders.save(builders.dynamic_conv(), folder / "conv.onnx")
    torch.manual_seed(0)
    net = resnet18().eval()
    resnet = folder / "resnet18.onnx"
    torch.onnx.export(
        net, (torch.zeros(1, 3, 64, 64),), str(resnet), input_names=["x"], output_names=["y"],
        dynamic_axes={"x": {2: "h", 3: "w"}}, dynamo=False,
    )  # fmt: skip

    class Encoder(torch.nn.Module):
        """Token embedding, one self-attention (its scores: sequence x sequence), an MLP."""

        def __init__(self) -> None:
            super().__init__()
            self.embed = torch.nn.Embedding(1000, 256)
            self.qkv = torch.nn.Linear(256, 768)
            self.mlp = torch.nn.Sequential(
                torch.nn.Linear(256, 1024), torch.nn.GELU(), torch.nn.Linear(1024, 256)
            )

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            q, k, v = self.qkv(self.embed(x)).chunk(3, dim=-1)
            scores = torch.softmax(q @ k.transpose(1, 2) / 16.0, dim=-1)
            h = scores @ v
            return h + self.mlp(h)

    encoder = folder / "encoder.onnx"
    torch.onnx.export(
        Encoder().eval(), (torch.zeros(1, 16, dtype=torch.int64),), str(encoder),
        input_names=["x"], output_names=["y"], dynamic_axes={"x": {1: "seq"}}, dynamo=False,
    )  # fmt: skip
    return [
        ("conv", conv, [1, 3, 1, 1], [[1, 3, s, s] for s in (256, 1024, 1984)]),
        ("resnet18", resnet, [1, 3, 1, 1], [[1, 3, s, s] for s in (224, 640, 1280)]),
        ("encoder", encoder, [1, 1], [[1, s] for s in (512, 2048, 4096)]),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="fusedinf-activations-") as scratch:
        for name, path, small, shapes in _models(Path(scratch)):
            footprint = measure_footprint(path, with_parts=False)
            curve = footprint.activation_curve
            dtype = "int64" if name == "encoder" else "float32"
            for shape in shapes:
                growth = _elements(shape) / _elements(small)
                estimate = curve.extra_bytes(growth) or 0  # beyond the measured request's arena
                peaks = [
                    run_probe(_PEAK, str(path), dtype, json.dumps(small), json.dumps(shape))
                    for _ in range(args.rounds)
                ]
                real = statistics.median(peaks)
                probed = growth <= curve.points[-1][0]
                rows.append(
                    {
                        "model": name,
                        "shape": "x".join(map(str, shape)),
                        "probed_up_to": curve.points[-1][0],
                        "estimate_mib": estimate / MIB,
                        "real_mib": real / MIB,
                        "real_range_mib": [min(peaks) / MIB, max(peaks) / MIB],
                        "estimate_over_real": estimate / real,
                        "extrapolated": not probed,
                    }
                )
                print(
                    f"{name:9} {rows[-1]['shape']:>12}  estimate {estimate / MIB:8.1f} MiB  "
                    f"real {real / MIB:8.1f} MiB ({min(peaks) / MIB:.1f}-{max(peaks) / MIB:.1f})"
                    f"  {estimate / real:5.2f}x  {'probed' if probed else 'extrapolated'}",
                    flush=True,
                )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


def _elements(shape: list[int]) -> int:
    return math.prod(shape)


if __name__ == "__main__":
    main()
