"""normalize: bring every source model to one default-domain opset and one IR version.

The target is the highest default-domain opset among the models that use that domain; older
ones go through onnx's version converter, and a conversion that would change a model's inputs or
outputs is refused. A model with no default-domain operator (an `ai.onnx.ml`-only export, such
as sklearn's) needs no conversion. `ai.onnx.ml` imported at two versions takes the newer one
where every older node's schema is the same there. The converter works on protobuf, so this
pass converts at its own boundary: large weights are swapped for weightless external references
before serialising, so converting a model never copies its weights, and the original tensors are
put back afterwards.
"""

from __future__ import annotations

from typing import Any

import onnx
import onnx_ir as ir
from onnx import version_converter

from fusedinf_cc.common.errors import MergeError, first_line
from fusedinf_cc.onnx_io.model_io import SMALL_TENSOR_BYTES, SourceModel
from fusedinf_cc.passes.base import FusionState, PassContext, PassOutcome

DEFAULT_DOMAINS = ("", "ai.onnx")
ML_DOMAIN = "ai.onnx.ml"


def default_opset(model: ir.Model) -> int:
    imports = model.graph.opset_imports
    return max(imports.get(domain, 0) for domain in DEFAULT_DOMAINS)


class Normalize:
    name = "normalize"

    def run(self, state: FusionState, ctx: PassContext) -> PassOutcome:
        members = state.members
        using = [member for member in members if _uses_default_domain(member.model)]
        if ctx.options.opset is not None:
            target = _check_asked_opset(ctx.options.opset)
        elif using:
            target = max(default_opset(member.model) for member in using)
        else:  # no default-domain operator anywhere: the opset released with their ML domain
            target = _released_with_ml(members)
        newest_known = onnx.defs.onnx_opset_version()
        if target > newest_known:
            newest = max(members, key=lambda member: default_opset(member.model))
            raise MergeError(
                f"model {newest.name!r} uses opset {target}, newer than this onnx knows "
                f"({newest_known}); upgrade onnx"
            )
        converted = _align_ml_domain(members)
        _check_custom_domains(members)
        for member in using:
            current = default_opset(member.model)
            if current != target:
                member.model = _convert(member, target)
                converted.append(f"{member.name} {current}->{target}")
        min_ir = onnx.helper.find_min_ir_version_for([onnx.helper.make_opsetid("", target)])
        ctx.opset = target
        ctx.ir_version = max([min_ir] + [member.model.ir_version for member in members])
        detail = f"opset {target}, IR {ctx.ir_version}"
        if converted:
            detail += "; converted " + ", ".join(converted)
        return PassOutcome(changed=bool(converted), detail=detail)


def _check_asked_opset(opset: int) -> int:
    newest = onnx.defs.onnx_opset_version()
    if isinstance(opset, bool) or not isinstance(opset, int) or not 1 <= opset <= newest:
        raise MergeError(f"--opset {opset!r}: choose an opset from 1 to {newest} (this onnx's)")
    return opset


def _uses_default_domain(model: ir.Model) -> bool:
    """Whether any node (in subgraphs and local functions too) is a default-domain operator."""
    nodes = [*ir.traversal.RecursiveGraphIterator(model.graph)]
    for function in model.functions.values():
        nodes.extend(function)
    return any(node.domain in DEFAULT_DOMAINS for node in nodes)


# The oldest default-domain opset ONNX Runtime guarantees to run.
_OLDEST_RUNTIME_OPSET = 7


def _released_with_ml(members: list[SourceModel]) -> int:
    """The default-domain opset of the first onnx release with the models' `ai.onnx.ml`
    version (the pair their exporter would have written), at least one ONNX Runtime runs."""
    ml = max(member.model.graph.opset_imports.get(ML_DOMAIN, 1) for member in members)
    for _release, _ir, default, ml_version, *_ in onnx.helper.VERSION_TABLE:
        if ml_version is not None and ml_version >= ml:
            return max(int(default), _OLDEST_RUNTIME_OPSET)
    return onnx.defs.onnx_opset_version()


def _align_ml_domain(members: list[SourceModel]) -> list[str]:
    """Import `ai.onnx.ml` at the newest version any model imports, where every `ai.onnx.ml`
    node of an older model has the same schema at that version; refuse, naming the node and
    its operator, where one does not. Returns what changed."""
    versions = {
        member.name: member.model.graph.opset_imports[ML_DOMAIN]
        for member in members
        if ML_DOMAIN in member.model.graph.opset_imports
    }
    if len(set(versions.values())) < 2:
        return []
    newest = max(versions.values())
    changed = []
    for member in members:
        version = versions.get(member.name)
        if version is None or version == newest:
            continue
        for node in ir.traversal.RecursiveGraphIterator(member.model.graph):
            if node.domain != ML_DOMAIN:
                continue
            if _since(node.op_type, version, ML_DOMAIN) != _since(node.op_type, newest, ML_DOMAIN):
                where = f" (node {node.name!r})" if node.name else ""
                raise MergeError(
                    f"model {member.name!r}: {ML_DOMAIN} operator {node.op_type}{where} changed "
                    f"between {ML_DOMAIN} versions {version} and {newest}, which another model "
                    f"imports; re-export it at {ML_DOMAIN} {newest}"
                )
        member.model.opset_imports[ML_DOMAIN] = newest
        changed.append(f"{member.name} {ML_DOMAIN} {version}->{newest}")
    return changed


def _since(op_type: str, version: int, domain: str = "") -> int | None:
    """The version of `domain` that defined `op_type` as it stands at `version`."""
    try:
        return onnx.defs.get_schema(op_type, version, domain).since_version
    except onnx.defs.SchemaError:
        return None


def _check_custom_domains(members: list[SourceModel]) -> None:
    """Two models importing one custom domain at different versions cannot share one import."""
    seen: dict[str, tuple[int, str]] = {}
    for member in members:
        for domain, version in member.model.graph.opset_imports.items():
            if domain in DEFAULT_DOMAINS:
                continue
            if domain in seen and seen[domain][0] != version:
                other_version, other = seen[domain]
                raise MergeError(
                    f"domain {domain!r} is imported at version {other_version} by {other!r} "
                    f"and {version} by {member.name!r}; re-export one of them"
                )
            seen.setdefault(domain, (version, member.name))


def _convert(member: SourceModel, target: int) -> ir.Model:
    model = member.model
    detached = _detach_large_tensors(model)
    try:
        proto = ir.serde.serialize_model(model)
        try:
            converted_proto = version_converter.convert_version(proto, target)
        except Exception as error:  # the converter raises bare RuntimeError/InferenceError
            raise MergeError(_conversion_failure(member, target, error)) from None
    finally:
        _restore_tensors(model, detached)
    _drop_attributes_the_target_lacks(member, converted_proto, target)
    converted = ir.serde.deserialize_model(converted_proto)
    _restore_tensors(converted, detached)
    _check_interface_kept(member, converted, target)
    return converted


# Attributes a later opset added, with the value that means what the earlier opset did. onnx's
# converter leaves them on a down-converted node (ReduceMean 18 -> 13: `noop_with_empty_axes`,
# which every global average pooling of torch's dynamo exporter carries), and the checker then
# refuses the node. At that value the attribute can go; at another the older opset cannot say it.
_LATER_ATTRIBUTE_DEFAULTS = {"noop_with_empty_axes": 0}


def _drop_attributes_the_target_lacks(member: SourceModel, proto: Any, target: int) -> None:
    """Remove from each default-domain node the attributes its definition at `target` does not
    have, where they hold the value that means the older behaviour; refuse one that does not."""
    graphs = [proto.graph]
    while graphs:
        graph = graphs.pop()
        for node in graph.node:
            for attribute in node.attribute:
                graphs.extend([attribute.g] if attribute.HasField("g") else [])
                graphs.extend(attribute.graphs)
            if node.domain not in DEFAULT_DOMAINS:
                continue
            try:
                known = onnx.defs.get_schema(node.op_type, target, "").attributes
            except onnx.defs.SchemaError:
                continue
            for attribute in list(node.attribute):
                if attribute.name in known:
                    continue
                value = onnx.helper.get_attribute_value(attribute)
                if _LATER_ATTRIBUTE_DEFAULTS.get(attribute.name) != value:
                    where = f" (node {node.name!r})" if node.name else ""
                    raise MergeError(
                        f"model {member.name!r}: operator {node.op_type}{where} has "
                        f"{attribute.name}={value!r}, which opset {target} cannot express; "
                        f"fuse at a higher --opset or re-export the model at opset {target}"
                    )
                node.attribute.remove(attribute)


def _check_interface_kept(member: SourceModel, converted: ir.Model, target: int) -> None:
    """Refuse a conversion that changed the model's inputs or outputs (names, types, shapes):
    an operator whose meaning changed between the opsets (an opset-8 `Scan` had a batch axis)
    would give a fused model that no longer takes what its source takes."""
    before, after = _interface(member.model), _interface(converted)
    if before == after:
        return
    changed = next(
        name for name in sorted(set(before) | set(after)) if before.get(name) != after.get(name)
    )
    source = default_opset(member.model)
    touching = [
        node
        for node in member.model.graph
        if changed in {value.name for value in [*node.inputs, *node.outputs] if value is not None}
    ]
    upgraded = sorted(
        {
            f"{node.op_type}" + (f" (node {node.name!r})" if node.name else "")
            for node in touching
            if node.domain in DEFAULT_DOMAINS
            and _since(node.op_type, source) != _since(node.op_type, target)
        }
    )
    ops = (
        f" by operator {', '.join(upgraded)}, whose definition changed between them"
        if upgraded
        else ""
    )
    raise MergeError(
        f"model {member.name!r}: converting it from opset {source} to {target} changes "
        f"{changed!r} from {before.get(changed, 'nothing')} to {after.get(changed, 'nothing')}"
        f"{ops}; re-export the model at opset {target}"
    )


def _interface(model: ir.Model) -> dict[str, str]:
    values = [*model.graph.inputs, *model.graph.outputs]
    return {value.name or "": f"{value.type} {value.shape}" for value in values}


def _detach_large_tensors(model: ir.Model) -> dict[str, ir.TensorProtocol]:
    """Replace large initializers' data by weightless external references; return the originals."""
    detached = {}
    for graph in model.graphs():
        for name, value in graph.initializers.items():
            tensor = value.const_value
            if tensor is None or tensor.nbytes <= SMALL_TENSOR_BYTES:
                continue
            detached[name] = tensor
            value.const_value = ir.ExternalTensor(
                location="fusedinf-detached",
                offset=0,
                length=tensor.nbytes,
                dtype=tensor.dtype,
                shape=tensor.shape,
                name=name,
            )
    return detached


def _restore_tensors(model: ir.Model, tensors: dict[str, ir.TensorProtocol]) -> None:
    for graph in model.graphs():
        for name, value in graph.initializers.items():
            if name in tensors:
                value.const_value = tensors[name]


def _conversion_failure(member: SourceModel, target: int, error: Exception) -> str:
    """Name the operator that blocks conversion; the converter's own text is C++-internal."""
    message = str(error)
    blocking = sorted(
        {
            node.op_type
            for node in ir.traversal.RecursiveGraphIterator(member.model.graph)
            if node.op_type in message
        },
        key=len,
        reverse=True,
    )
    source = default_opset(member.model)
    if blocking:
        op = blocking[0]
        node = next(
            node
            for node in ir.traversal.RecursiveGraphIterator(member.model.graph)
            if node.op_type == op
        )
        where = f" (node {node.name!r})" if node.name else ""
        return (
            f"model {member.name!r}: operator {op}{where} cannot be converted from opset "
            f"{source} to {target}; re-export the model at opset {target}"
        )
    return (
        f"model {member.name!r} cannot be converted from opset {source} to {target}: "
        f"{first_line(error)}"
    )
