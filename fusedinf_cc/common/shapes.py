"""Shapes as trtexec writes them on a command line: `x:1x3x224x224,mask:1x128`."""

from __future__ import annotations

from fusedinf_cc.common.errors import UserInputError


def parse_shapes(text: str | None) -> dict[str, tuple[int, ...]]:
    """`x:1x3x224x224,mask:1x128` -> {"x": (1, 3, 224, 224), "mask": (1, 128)}."""
    shapes: dict[str, tuple[int, ...]] = {}
    if not text:
        return shapes
    for item in text.split(","):
        name, sep, dims = item.strip().rpartition(":")
        try:
            shape = tuple(int(dim) for dim in dims.split("x")) if dims else ()
        except ValueError:
            shape = (-1,)
        if not sep or not name or any(dim < 0 for dim in shape):
            raise UserInputError(f"--shapes {item!r}: expected NAME:DxDxD (e.g. x:1x3x224x224)")
        shapes[name] = shape
    return shapes
