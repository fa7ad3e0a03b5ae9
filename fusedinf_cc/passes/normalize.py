"""normalize: bring every source model to one default-domain opset and one IR version.

The target is the highest default-domain opset among the models; older models go through onnx's
version converter. That converter works on protobuf, so this pass converts at its own boundary:
large weights are swapped for weightless external references before serialising, so converting
a model never copies its weights, and the original tensors are put back afterwards.
"""

from __future__ import annotations

import onnx
import onnx_ir as ir
from onnx import version_converter

from fusedinf_cc.common.errors import MergeError, first_line
from fusedinf_cc.onnx_io.model_io import SMALL_TENSOR_BYTES, SourceModel
from fusedinf_cc.passes.base import FusionState, PassContext, PassOutcome

DEFAULT_DOMAINS = ("", "ai.onnx")


def default_opset(model: ir.Model) -> int:
    imports = model.graph.opset_imports
    return max(imports.get(domain, 0) for domain in DEFAULT_DOMAINS)


class Normalize:
    name = "normalize"

    def run(self, state: FusionState, ctx: PassContext) -> PassOutcome:
        members = state.members
        target = max(default_opset(member.model) for member in members)
        newest_known = onnx.defs.onnx_opset_version()
        if target > newest_known:
            newest = max(members, key=lambda member: default_opset(member.model))
            raise MergeError(
                f"model {newest.name!r} uses opset {target}, newer than this onnx knows "
                f"({newest_known}); upgrade onnx"
            )
        _check_custom_domains(members)
        converted = []
        for member in members:
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
    converted = ir.serde.deserialize_model(converted_proto)
    _restore_tensors(converted, detached)
    return converted


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
