"""Input tensors for running a model: from a `.npz` file, or random ones that respect dtypes.

Dynamic dims are filled from `--shapes NAME:1x3x224x224,...` (trtexec's syntax); a dim nobody
fixed becomes 1.
"""

from __future__ import annotations

import contextlib
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from fusedinf_cc.backends.base import TensorSpec
from fusedinf_cc.backends.onnxruntime import RUN_REFUSED
from fusedinf_cc.common.errors import UserInputError

DEFAULT_DYNAMIC_DIM = 1
RANDOM_INTEGERS_BELOW = 8


def resolve_shape(spec: TensorSpec, shapes: Mapping[str, tuple[int, ...]]) -> tuple[int, ...]:
    """The shape to feed: `--shapes` where given (and consistent), else dynamic dims = 1."""
    if spec.name in shapes:
        shape = shapes[spec.name]
        if not fits(shape, spec.shape):
            raise UserInputError(
                f"--shapes {spec.name}: {'x'.join(map(str, shape))} does not fit the model's "
                f"shape {describe_shape(spec.shape)}"
            )
        return shape
    return tuple(dim if isinstance(dim, int) else DEFAULT_DYNAMIC_DIM for dim in spec.shape)


def random_feeds(
    specs: Sequence[TensorSpec], shapes: Mapping[str, tuple[int, ...]] | None = None, seed: int = 0
) -> dict[str, np.ndarray]:
    """Random inputs; integers stay small and non-negative so they are valid indices, and
    below a table's rows where an input indexes one (`TensorSpec.index_rows`)."""
    shapes = shapes or {}
    unknown = set(shapes) - {spec.name for spec in specs}
    if unknown:
        names = ", ".join(spec.name for spec in specs)
        raise UserInputError(f"--shapes names unknown inputs {sorted(unknown)} (inputs: {names})")
    rng = np.random.default_rng(seed)
    feeds = {}
    for spec in specs:
        shape = resolve_shape(spec, shapes)
        if spec.dtype == np.bool_:
            feeds[spec.name] = rng.integers(0, 2, size=shape).astype(np.bool_)
        elif np.issubdtype(spec.dtype, np.integer):
            high = min(RANDOM_INTEGERS_BELOW, spec.index_rows or RANDOM_INTEGERS_BELOW)
            feeds[spec.name] = rng.integers(0, high, size=shape).astype(spec.dtype)
        else:
            feeds[spec.name] = rng.standard_normal(size=shape).astype(spec.dtype)
    return feeds


def with_bounds(specs: Sequence[TensorSpec], bounds: Mapping[str, int]) -> list[TensorSpec]:
    """`specs` with the rows each integer input indexes, by name (a manifest's
    `input_bounds`)."""
    return [replace(spec, index_rows=bounds.get(spec.name, spec.index_rows)) for spec in specs]


@contextlib.contextmanager
def refusing_random_inputs(artifact: Path, command: str, *, random: bool) -> Iterator[None]:
    """Where runs inside refuse inputs drawn at `random`, say so of `artifact` in one line,
    with what to give `command` instead; any other error passes as it is."""
    try:
        yield
    except UserInputError as error:
        if not random or RUN_REFUSED not in str(error):
            raise
        detail = str(error).split(f"{RUN_REFUSED} ", 1)[-1]
        raise UserInputError(
            f"{artifact}: {RUN_REFUSED} drawn at random {detail}; give inputs it accepts: "
            f"fusedinf-cc {command} {artifact} --inputs FEEDS.npz"
        ) from None


def read_feeds(path: Path) -> dict[str, np.ndarray] | np.ndarray:
    """The arrays of an `.npz` by name, or the one array of a `.npy`; nothing is unpickled."""
    try:
        loaded = np.load(path, allow_pickle=False)
        if isinstance(loaded, np.ndarray):
            return loaded
        with loaded as archive:
            return {name: archive[name] for name in archive.files}
    except FileNotFoundError:
        raise UserInputError(f"{path}: no such file") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise UserInputError(f"{path}: not an .npz of arrays ({error})") from None


def load_feeds(path: Path, specs: Sequence[TensorSpec]) -> dict[str, np.ndarray]:
    """Read an `.npz` of inputs (or a `.npy` for a model of one input) and check it names
    exactly the model's inputs."""
    loaded = read_feeds(path)
    if isinstance(loaded, np.ndarray):
        if len(specs) != 1:
            raise UserInputError(
                f"{path}: one array (.npy), but the model has {len(specs)} inputs; give an "
                ".npz keyed by input names"
            )
        loaded = {specs[0].name: loaded}
    check_feeds(loaded, specs, str(path))
    return loaded


def check_feeds(feeds: Mapping[str, np.ndarray], specs: Sequence[TensorSpec], source: str) -> None:
    """`feeds` name exactly the inputs `specs` describe, each an array of the input's dtype and
    of a shape that fits it. `source` (a file, a request) starts each message."""
    expected = {spec.name for spec in specs}
    missing, extra = expected - set(feeds), set(feeds) - expected
    if missing or extra:
        raise UserInputError(
            f"{source}: inputs do not match the model (missing {sorted(missing)}, "
            f"unexpected {sorted(extra)})"
        )
    for spec in specs:
        given = feeds[spec.name]
        if not isinstance(given, np.ndarray):
            raise UserInputError(f"{source}: {spec.name} is a {type(given).__name__}, not an array")
        if given.dtype != spec.dtype:
            raise UserInputError(
                f"{source}: {spec.name} is {given.dtype}, the model wants {spec.dtype}"
            )
        if not fits(given.shape, spec.shape):
            raise UserInputError(
                f"{source}: {spec.name} is {describe_shape(given.shape)}, "
                f"the model wants {describe_shape(spec.shape)}"
            )


def fits(shape: Sequence[int], wanted: Sequence[int | str | None]) -> bool:
    """A concrete shape fits a model's input: same rank, equal wherever a dim is fixed."""
    return len(shape) == len(wanted) and all(
        not isinstance(dim, int) or dim == given for given, dim in zip(shape, wanted, strict=True)
    )


def describe_shape(shape: Sequence[int | str | None]) -> str:
    return "x".join("?" if dim is None else str(dim) for dim in shape)
