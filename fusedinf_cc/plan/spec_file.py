"""A plan written as the bundle spec `bundle build` and `simulate --fused-groups` take.

The file is staged beside its target (so the models' relative paths mean the same), read back
with the spec's own reader and checked to deploy exactly the plan's bundles, then renamed into
place: a plan file is whole and valid, or not written.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

from fusedinf_cc.common.errors import UserInputError
from fusedinf_cc.precompile.spec import read_spec
from fusedinf_cc.workload.layout import Layout


def spec_text(
    bundles: Layout,
    models: Mapping[str, Path],
    folder: Path,
    *,
    aot: bool,
    stack: bool,
    header: str = "",
) -> str:
    """TOML for `bundles` (name -> models), the models' paths relative to `folder` where they
    can be; built as the planner measured them (inputs shared where they match)."""
    blocks = ["\n".join(f"# {line}".rstrip() for line in header.splitlines())] if header else []
    for name, members in bundles.lists().items():
        paths = ", ".join(
            f"{json.dumps(model)} = {json.dumps(_relative(models[model], folder))}"
            for model in members
        )
        table = [
            f"[bundles.{json.dumps(name)}]",
            f"models = {{ {paths} }}",
            'share_inputs = "auto"',
            f"aot = {str(aot).lower()}",
            f"stack = {str(stack).lower()}",
        ]
        blocks.append("\n".join(table))
    return "\n\n".join(blocks) + "\n"


def write_plan_spec(path: Path, text: str, bundles: Layout) -> None:
    """Write `text` to `path` once the spec reader takes it and it deploys `bundles`."""
    folder = path.parent if str(path.parent) else Path(".")
    try:
        handle, staged_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".toml", dir=folder)
    except OSError as error:
        raise UserInputError(f"{path}: cannot write there ({error.strerror})") from None
    staged = Path(staged_name)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(text)
        deployed = read_spec(staged).groups()
        if deployed != bundles.lists():
            raise AssertionError(f"the plan's spec reads back as other bundles: {deployed}")
        os.replace(staged, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            staged.unlink()


def _relative(model: Path, folder: Path) -> str:
    try:
        return os.path.relpath(model.resolve(), folder.resolve())
    except ValueError:  # another drive
        return str(model.resolve())
