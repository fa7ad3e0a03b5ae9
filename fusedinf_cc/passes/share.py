"""share: inputs that several models read become one fused input.

Explicit shares (`--share-input FUSED=m1.in,m2.in`) must fit or fail with the dims that differ;
`auto` binds inputs with the same original name, dtype and compatible shape and skips the rest.
Where one model fixes a dim that another leaves symbolic, the shared input takes the fixed size,
and the symbolic dims of the merged models are renamed to match, downstream values included.
"""

from __future__ import annotations

import warnings
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import onnx_ir as ir

from fusedinf_cc.artifacts.manifest import SharedInput
from fusedinf_cc.common.errors import FusedInfWarning, MergeError, UserInputError
from fusedinf_cc.onnx_io.model_io import SourceModel
from fusedinf_cc.passes.base import FusionState, PassContext, PassOutcome, ShareSpec
from fusedinf_cc.passes.values import all_values, rename_dims


def parse_share_spec(text: str, sources: Sequence[SourceModel]) -> ShareSpec:
    """Parse `FUSED=m1.in,m2.in`; model names may contain dots, so match them against the models."""
    fused_name, sep, members_text = text.partition("=")
    if not sep or not fused_name or not members_text:
        raise UserInputError(f"--share-input {text!r}: expected FUSED=model.input,model.input")
    members = []
    for reference in members_text.split(","):
        members.append(_resolve_reference(reference.strip(), sources, text))
    if len(members) < 2:
        raise UserInputError(f"--share-input {text!r}: name at least two model inputs")
    if len({model for model, _ in members}) != len(members):
        raise UserInputError(f"--share-input {text!r}: each model may appear once")
    return ShareSpec(fused_name=fused_name, members=tuple(members))


def _resolve_reference(
    reference: str, sources: Sequence[SourceModel], text: str
) -> tuple[str, str]:
    """`det.v2.image` is model `det.v2`'s input `image`, or model `det`'s `v2.image`: the one
    that exists. Both existing is ambiguous; neither names what the closest model has."""
    candidates = [s for s in sources if reference.startswith(s.name + ".")]
    matches = [
        (s.name, reference[len(s.name) + 1 :])
        for s in candidates
        if reference[len(s.name) + 1 :] in s.input_names
    ]
    if len(matches) == 1:
        return matches[0]
    if matches:
        readings = " or ".join(f"model {m!r} input {i!r}" for m, i in matches)
        raise UserInputError(f"--share-input {text!r}: {reference!r} is ambiguous ({readings})")
    if candidates:
        closest = max(candidates, key=lambda s: len(s.name))
        known = ", ".join(closest.input_names)
        wanted = reference[len(closest.name) + 1 :]
        raise UserInputError(
            f"--share-input {text!r}: model {closest.name!r} has no input {wanted!r} "
            f"(it has: {known})"
        )
    models = ", ".join(source.name for source in sources)
    raise UserInputError(
        f"--share-input {text!r}: {reference!r} names no model's input (models: {models})"
    )


@dataclass
class _Group:
    fused_name: str
    members: list[tuple[str, str]]  # (model, original input name)
    explicit: bool


class Share:
    name = "share"

    def run(self, state: FusionState, ctx: PassContext) -> PassOutcome:
        model = state.require_fused()
        inputs_by_name = {value.name: value for value in model.graph.inputs}
        groups = [
            _Group(spec.fused_name, list(spec.members), explicit=True)
            for spec in ctx.options.explicit_shares
        ]
        if ctx.options.share_inputs == "auto":
            groups.extend(_auto_groups(ctx, groups))
        notes = []
        taken_names = {value.name for value in all_values(model)}
        for group in groups:
            values = [inputs_by_name[ctx.inputs[m][name]] for m, name in group.members]
            shape, problems = unify_shapes([value.shape for value in values])
            dtypes = {value.dtype for value in values}
            if len(dtypes) > 1:
                problems.insert(0, "dtypes " + " vs ".join(str(d) for d in dtypes))
            label = ", ".join(f"{m}.{name}" for m, name in group.members)
            if problems:
                if group.explicit:
                    raise MergeError(
                        f"cannot share {label} as {group.fused_name!r}: " + "; ".join(problems)
                    )
                notes.append(f"not shared {label} ({'; '.join(problems)})")
                warnings.warn(
                    f"--share-inputs auto: {label} stay apart ({'; '.join(problems)}); "
                    "--share-input FUSED=... names inputs to share",
                    FusedInfWarning,
                    stacklevel=2,
                )
                continue
            for fixed in _dims_fixed_by_sharing(group.members, values, shape):
                warnings.warn(
                    f"shared input {group.fused_name!r}: {fixed}", FusedInfWarning, stacklevel=2
                )
            own_names = {value.name for value in values}
            if group.fused_name in taken_names - own_names:
                raise MergeError(
                    f"shared input name {group.fused_name!r} is already a tensor of the fused graph"
                )
            _bind(model, values, group.fused_name, shape)
            taken_names.add(group.fused_name)
            for m, name in group.members:
                ctx.inputs[m][name] = group.fused_name
            ctx.shared_inputs.append(
                SharedInput(group.fused_name, [f"{m}.{name}" for m, name in group.members])
            )
            notes.append(f"{group.fused_name} <- {label}")
        detail = "; ".join(notes) if notes else "nothing to share"
        return PassOutcome(changed=bool(ctx.shared_inputs), detail=detail)


def _auto_groups(ctx: PassContext, explicit: list[_Group]) -> list[_Group]:
    """Inputs with one original name across two or more models, not already shared explicitly."""
    claimed = {member for group in explicit for member in group.members}
    by_name: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for model_name, mapping in ctx.inputs.items():
        for original in mapping:
            if (model_name, original) not in claimed:
                by_name[original].append((model_name, original))
    return [
        _Group(name, members, explicit=False)
        for name, members in by_name.items()
        if len(members) > 1
    ]


def _dims_fixed_by_sharing(
    members: Sequence[tuple[str, str]], values: Sequence[ir.Value], shape: ir.Shape | None
) -> list[str]:
    """Where a member's dim is symbolic and the shared input fixes it (another model's fixed
    size), a line saying what a request for that model can no longer send."""
    if shape is None:
        return []
    fixed = []
    for (model, name), value in zip(members, values, strict=True):
        for axis, (dim, unified) in enumerate(
            zip(value.shape.dims if value.shape else (), shape.dims, strict=False)
        ):
            if isinstance(dim, ir.SymbolicDim) and isinstance(unified, int):
                symbol = (dim.value or "?").split("/", 1)[-1]
                fixed.append(
                    f"{model}.{name} dim {axis} ({symbol!r}) is fixed to {unified}, the size "
                    "another model takes there; a request for it must send that size"
                )
    return fixed


def unify_shapes(shapes: Sequence[ir.Shape | None]) -> tuple[ir.Shape | None, list[str]]:
    """The most specific shape all of `shapes` accept, and the differences that forbid one."""
    known = [shape for shape in shapes if shape is not None]
    if not known:
        return None, []
    ranks = {len(shape) for shape in known}
    if len(ranks) > 1:
        return None, ["ranks " + " vs ".join(str(rank) for rank in sorted(ranks))]
    dims: list[int | ir.SymbolicDim] = []
    problems = []
    for axis, column in enumerate(zip(*(shape.dims for shape in known), strict=True)):
        fixed = {dim for dim in column if isinstance(dim, int)}
        if len(fixed) > 1:
            problems.append(f"dim {axis}: " + " vs ".join(str(d) for d in sorted(fixed)))
        elif fixed:
            dims.append(fixed.pop())
        else:
            dims.append(_common_symbol(column))
    return (None if problems else ir.Shape(dims)), problems


def _common_symbol(column: Sequence[ir.SymbolicDim]) -> ir.SymbolicDim:
    """Prefixed dims `a/batch` and `b/batch` become `batch`; otherwise the first one's name."""
    originals = {dim.value.split("/", 1)[-1] if dim.value else None for dim in column}
    if len(originals) == 1 and None not in originals:
        return ir.SymbolicDim(originals.pop())
    return column[0]


def _bind(model: ir.Model, values: list[ir.Value], fused_name: str, shape: ir.Shape | None) -> None:
    """Keep the first value as the shared input; every reader of the others reads it instead."""
    kept, *others = values
    dim_map: dict[str, str | int] = {}
    if shape is not None:
        for value in values:
            for dim, unified in zip(
                value.shape.dims if value.shape else (), shape.dims, strict=False
            ):
                if isinstance(dim, ir.SymbolicDim) and dim.value and dim != unified:
                    dim_map[dim.value] = unified if isinstance(unified, int) else str(unified.value)
    graph = model.graph
    for value in values:
        if value.is_graph_output():
            _keep_output_name(graph, value, kept)
    for other in others:
        other.replace_all_uses_with(kept)
        graph.inputs.remove(other)
    kept.name = fused_name
    rename_dims(model, dim_map)
    if shape is not None:
        kept.shape = shape


def _keep_output_name(graph: ir.Graph, passthrough: ir.Value, shared: ir.Value) -> None:
    """A model that outputs its input unchanged keeps its output name via an Identity."""
    identity = ir.node("Identity", inputs=[shared])
    identity.outputs[0].name = passthrough.name
    identity.outputs[0].type = passthrough.type
    identity.outputs[0].shape = passthrough.shape
    graph.append(identity)  # cleanup's toposort puts it in place
    index = list(graph.outputs).index(passthrough)
    graph.outputs[index] = identity.outputs[0]
