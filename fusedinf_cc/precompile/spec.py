"""`fusedinf.toml`: which bundles to build, from which models, for which targets.

    [bundles.heads]
    models = { a = "zoo/head0.onnx", b = "zoo/head1.onnx" }
    share_inputs = "auto"
    targets = ["onnx", "engine"]
    aot = false                     # true: the onnx target is optimised for this CPU class
    stack = false                   # true: models of one architecture run as one (fuse --stack)
    parts = true                    # false: no per-model parts (fuse --no-parts)
    opset = 17                      # convert every model to this opset (fuse --opset)
    engine = { fp16 = true, mem_pool_size = "workspace:1GiB" }
    verify = { rtol = 1e-3, atol = 1e-3 }

Paths are relative to the spec file (or absolute). Every mistake names the spec's line.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fusedinf_cc.common.errors import UserInputError
from fusedinf_cc.common.files import sha256_file
from fusedinf_cc.common.names import check_model_name
from fusedinf_cc.common.tolerances import DEFAULT_ATOL, DEFAULT_RTOL, check_tolerance

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

MAX_SPEC_BYTES = 1 << 20
TARGETS = {"onnx": ".onnx", "ort": ".ort", "engine": ".engine"}
_BUNDLE_KEYS = {
    "models",
    "share_inputs",
    "share_input",
    "targets",
    "engine",
    "precision",
    "verify",
    "dedup",
    "cse",
    "stack",
    "aot",
    "parts",
    "opset",
    "inputs",
}
# Engine options and the TOML type each takes (the text forms are the CLI's flags).
_ENGINE_TYPES: dict[str, type] = {
    "fp16": bool,
    "int8": bool,
    "calib_cache": str,
    "strongly_typed": bool,
    "mem_pool_size": str,
    "shapes": str,
    "min_shapes": str,
    "opt_shapes": str,
    "max_shapes": str,
    "timing_cache": str,
    "builder_opt_level": int,
    "version_compatible": bool,
    "hardware_compatibility": str,
    "weight_streaming": bool,
}
_TYPE_NAMES = {bool: "true or false", str: "a string", int: "an integer"}
_ENGINE_PATHS = {"calib_cache", "timing_cache"}
PRECISIONS = {"fp32": {}, "fp16": {"fp16": True}, "int8": {"int8": True}}
DEFAULT_TOLERANCE = {"rtol": DEFAULT_RTOL, "atol": DEFAULT_ATOL}


@dataclass(frozen=True)
class BundleSpec:
    """One bundle: its models (name -> absolute path), fusion options and targets."""

    name: str
    models: dict[str, Path]
    targets: tuple[str, ...] = ("onnx",)
    share_inputs: str = "none"
    share_input: tuple[str, ...] = ()
    dedup: bool = True
    cse: bool = True
    stack: bool = False
    aot: bool = False
    parts: bool = True  # each model's part beside the onnx/ort targets (`compiler/parts.py`)
    opset: int | None = None  # the default-domain opset to convert every model to (`--opset`)
    engine: dict[str, Any] = field(default_factory=dict)
    rtol: float = DEFAULT_TOLERANCE["rtol"]
    atol: float = DEFAULT_TOLERANCE["atol"]
    # Representative inputs (.npz by fused input names), for models that refuse random ones:
    # verification runs on them, and they ship in the dist folder for footprint measurements.
    inputs: Path | None = None

    def options_record(self) -> dict[str, Any]:
        """Everything but the model files that decides what gets built (part of the cache key)."""
        return {
            "models": sorted(self.models),
            "targets": list(self.targets),
            "share_inputs": self.share_inputs,
            "share_input": list(self.share_input),
            "dedup": self.dedup,
            "cse": self.cse,
            "stack": self.stack,
            "aot": self.aot,
            "parts": self.parts,
            "opset": self.opset,
            "engine": {k: str(v) if isinstance(v, Path) else v for k, v in self.engine.items()},
            "rtol": self.rtol,
            "atol": self.atol,
            "inputs": sha256_file(self.inputs) if self.inputs else None,
        }


@dataclass(frozen=True)
class Spec:
    path: Path
    bundles: dict[str, BundleSpec]

    def groups(self) -> dict[str, list[str]]:
        """Each bundle's models, by bundle: what a replay deploys."""
        return {name: sorted(bundle.models) for name, bundle in self.bundles.items()}


def read_spec(path: Path) -> Spec:
    """Parse and check a spec file; the first mistake raises a one-line error with its line."""
    try:
        if path.stat().st_size > MAX_SPEC_BYTES:
            raise UserInputError(f"{path}: larger than a spec can be ({MAX_SPEC_BYTES} bytes)")
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserInputError(f"{path}: no such spec file") from None
    except (OSError, UnicodeDecodeError) as error:
        raise UserInputError(f"{path}: cannot read it ({error})") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise UserInputError(f"{path}: not valid TOML ({error})") from None
    except RecursionError:
        raise UserInputError(f"{path}: not valid TOML (nested too deeply)") from None
    where = _Locator(path, text)
    unknown = set(data) - {"bundles"}
    if unknown:
        key = sorted(unknown)[0]
        raise UserInputError(f"{where.key(key)}: unknown key {key!r} (expected [bundles.NAME])")
    bundles = data.get("bundles")
    if not isinstance(bundles, dict) or not bundles:
        raise UserInputError(f"{path}: no bundles (add a [bundles.NAME] table)")
    base = path.resolve().parent
    return Spec(
        path=path,
        bundles={name: _bundle(name, table, base, where) for name, table in bundles.items()},
    )


def _bundle(name: str, table: Any, base: Path, where: _Locator) -> BundleSpec:
    at = where.table(name)
    if not isinstance(table, dict):
        raise UserInputError(f"{at}: bundles.{name} must be a table")
    _check_name(name, at, "bundle ")
    _refuse_unknown(
        table, _BUNDLE_KEYS, lambda key: where.key(key, name), "key", f" in bundles.{name}"
    )
    models = table.get("models")
    if not isinstance(models, dict) or not models:
        raise UserInputError(f'{at}: bundles.{name} has no models (models = {{ a = "a.onnx" }})')
    resolved = {}
    for model, location in models.items():
        if not isinstance(location, str):
            raise UserInputError(f"{where.key(model, name)}: model {model!r} must be a path string")
        _check_name(model, where.key(model, name))
        if model == name:
            raise UserInputError(
                f"{where.key(model, name)}: model {model!r} has its bundle's name; requests name "
                "either, so give them different names"
            )
        model_path = _resolve(base, location)
        if not model_path.is_file():
            raise UserInputError(f"{where.key(model, name)}: model {model!r}: no file {model_path}")
        resolved[model] = model_path
    targets = table.get("targets", ["onnx"])
    if (
        not isinstance(targets, list)
        or not targets
        or not all(isinstance(target, str) for target in targets)
        or set(targets) - set(TARGETS)
    ):
        raise UserInputError(
            f"{where.key('targets', name)}: targets must be a list of {', '.join(TARGETS)}"
        )
    share_inputs = table.get("share_inputs", "none")
    if share_inputs not in ("auto", "none"):
        raise UserInputError(f"{where.key('share_inputs', name)}: share_inputs is auto or none")
    share_input = table.get("share_input", [])
    if not isinstance(share_input, list) or not all(isinstance(s, str) for s in share_input):
        raise UserInputError(
            f'{where.key("share_input", name)}: share_input is a list of "FUSED=m1.in,m2.in"'
        )
    engine = _engine(table, name, base, where)
    tolerance = table.get("verify", {})
    if not isinstance(tolerance, dict) or set(tolerance) - set(DEFAULT_TOLERANCE):
        raise UserInputError(
            f"{where.key('verify', name)}: verify = {{ rtol = 1e-5, atol = 1e-5 }}"
        )
    flags = (("dedup", True), ("cse", True), ("stack", False), ("aot", False), ("parts", True))
    for flag, default in flags:
        if not isinstance(table.get(flag, default), bool):
            raise UserInputError(f"{where.key(flag, name)}: {flag} is true or false")
    if table.get("aot", False) and "onnx" not in targets:
        raise UserInputError(
            f'{where.key("aot", name)}: aot optimises the onnx target; add "onnx" to targets'
        )
    opset = table.get("opset")
    if opset is not None and (isinstance(opset, bool) or not isinstance(opset, int) or opset < 1):
        raise UserInputError(f"{where.key('opset', name)}: opset is a whole number, e.g. 17")
    inputs = table.get("inputs")
    if inputs is not None:
        if not isinstance(inputs, str):
            raise UserInputError(f"{where.key('inputs', name)}: inputs is the path of an .npz")
        inputs = _resolve(base, inputs)
        if not inputs.is_file():
            raise UserInputError(f"{where.key('inputs', name)}: no file {inputs}")
    return BundleSpec(
        name=name,
        inputs=inputs,
        models=resolved,
        targets=tuple(dict.fromkeys(targets)),
        share_inputs=share_inputs,
        share_input=tuple(share_input),
        dedup=table.get("dedup", True),
        cse=table.get("cse", True),
        stack=table.get("stack", False),
        aot=table.get("aot", False),
        parts=table.get("parts", True),
        opset=opset,
        engine=engine,
        rtol=check_tolerance(tolerance.get("rtol", DEFAULT_RTOL), where.key("verify", name)),
        atol=check_tolerance(tolerance.get("atol", DEFAULT_ATOL), where.key("verify", name)),
    )


def _engine(table: dict[str, Any], name: str, base: Path, where: _Locator) -> dict[str, Any]:
    where_engine = where.key("engine", name)
    if not isinstance(table.get("engine", {}), dict):
        raise UserInputError(f"{where_engine}: engine must be a table of options")
    engine = dict(table.get("engine", {}))
    _refuse_unknown(engine, set(_ENGINE_TYPES), lambda _: where_engine, "engine option")
    for key, value in engine.items():
        wanted = _ENGINE_TYPES[key]
        # bool is an int in Python; TOML keeps them apart, and so does this check.
        if not isinstance(value, wanted) or (wanted is int and isinstance(value, bool)):
            raise UserInputError(
                f"{where_engine}: engine option {key} is {_TYPE_NAMES[wanted]}, "
                f"not {json.dumps(value)}"
            )
    precision = table.get("precision")
    if precision is not None:
        if precision not in PRECISIONS:
            raise UserInputError(
                f"{where.key('precision', name)}: precision is one of {', '.join(PRECISIONS)}"
            )
        engine = {**PRECISIONS[precision], **engine}
    for key in _ENGINE_PATHS & set(engine):
        engine[key] = _resolve(base, str(engine[key]))
    if engine:
        from fusedinf_cc.backends.tensorrt.options import parse_engine_options

        try:
            parse_engine_options(**engine)
        except UserInputError as error:
            raise UserInputError(f"{where_engine}: {error}") from None
    return engine


def _check_name(name: str, location: str, what: str = "") -> None:
    try:
        check_model_name(name)
    except UserInputError as error:
        raise UserInputError(f"{location}: {what}{error}") from None


def _refuse_unknown(
    given: Iterable[str],
    known: set[str],
    line_of: Callable[[str], str],
    what: str,
    scope: str = "",
) -> None:
    unknown = sorted(set(given) - known)
    if unknown:
        raise UserInputError(
            f"{line_of(unknown[0])}: unknown {what} {unknown[0]!r}{scope} "
            f"(known: {', '.join(sorted(known))})"
        )


def _resolve(base: Path, location: str) -> Path:
    """A path from the spec: `~` expanded, relative to the spec's folder."""
    if "\0" in location:
        raise UserInputError(f"{location!r}: a path cannot hold a NUL byte")
    try:
        path = Path(location).expanduser()
    except RuntimeError:  # `~` where no home folder is known
        raise UserInputError(f"{location!r}: no home folder is known to expand '~'") from None
    return path if path.is_absolute() else (base / path).resolve()


class _Locator:
    """Finds the line a table or key sits on, for error messages (`spec.toml:7`)."""

    def __init__(self, path: Path, text: str):
        self.path = path
        self.lines = text.splitlines()

    def table(self, bundle: str) -> str:
        header = re.compile(rf"^\s*\[\s*bundles\.\"?{re.escape(bundle)}\"?\s*\]")
        for number, line in enumerate(self.lines, 1):
            if header.match(line):
                return f"{self.path}:{number}"
        return str(self.path)

    def key(self, key: str, bundle: str | None = None) -> str:
        start = 0
        if bundle is not None:
            table = self.table(bundle)
            start = int(table.rsplit(":", 1)[1]) if ":" in table else 0
        pattern = re.compile(rf"(^|[\s{{,])\"?{re.escape(key)}\"?\s*=")
        header = re.compile(rf"^\s*\[+\s*\"?{re.escape(key)}\"?\s*[\].]")
        for number, line in enumerate(self.lines[start:], start + 1):
            if bundle is None and header.match(line):
                return f"{self.path}:{number}"
            if number > start + 1 and line.lstrip().startswith("["):
                break
            if pattern.search(line):
                return f"{self.path}:{number}"
        return self.table(bundle) if bundle is not None else str(self.path)
