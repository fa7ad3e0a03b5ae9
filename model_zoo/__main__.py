"""`python -m model_zoo export NAME... -o DIR [--opset N] [--dynamic-batch]` and `list`."""

from __future__ import annotations

import argparse
from pathlib import Path

from model_zoo.zoo import ALIASES, CATALOGUE, DEFAULT_OPSET, expand_names, export


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m model_zoo")
    commands = parser.add_subparsers(dest="command", required=True)
    export_parser = commands.add_parser("export", help="export zoo models to ONNX")
    export_parser.add_argument("names", nargs="+", help="zoo models (aliases: heads, resnet_heads)")
    export_parser.add_argument("-o", "--out", type=Path, required=True, help="output folder")
    export_parser.add_argument("--opset", type=int, default=DEFAULT_OPSET)
    export_parser.add_argument("--dynamic-batch", action="store_true", help="batch dim 'batch'")
    export_parser.add_argument(
        "--variants", type=int, default=1, help="export K copies with distinct random weights"
    )
    commands.add_parser("list", help="list the zoo")
    args = parser.parse_args()
    if args.command == "list":
        for name, spec in CATALOGUE.items():
            shape = "x".join(map(str, spec.input_shape))
            print(f"{name:22s} {spec.input_name}:{shape} -> {spec.output_name}")
        for alias, members in ALIASES.items():
            print(f"{alias:22s} = {' + '.join(members)}")
        return
    for name in expand_names(args.names):
        for variant in range(args.variants):
            path = export(
                name, args.out, opset=args.opset, dynamic_batch=args.dynamic_batch, variant=variant
            )
            print(f"{path.stem}: {path} ({path.stat().st_size / 2**20:.1f} MiB)")


if __name__ == "__main__":
    main()
