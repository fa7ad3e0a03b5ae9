"""cleanup: drop dead nodes, initializers, functions and opsets, sort, and check the result.

The check is onnx's full checker (strict shape inference included), run through onnx-ir's
`CheckerPass`, which lifts large weights out of the protobuf first: models over 2 GiB check too.
The fused model is held to no stricter check than its sources pass: where the full check fails
on an operator that a source already fails it on (the function body of a
`MeanVarianceNormalization`, which ONNX Runtime runs), the fused model gets the structural check.
"""

from __future__ import annotations

import re

import onnx
from onnx_ir.passes.common import (
    CheckerPass,
    RemoveUnusedFunctionsPass,
    RemoveUnusedNodesPass,
    RemoveUnusedOpsetsPass,
    TopologicalSortPass,
)

from fusedinf_cc.common.errors import MergeError, first_line
from fusedinf_cc.onnx_io.model_io import SourceModel
from fusedinf_cc.passes.base import FusionState, PassContext, PassOutcome
from fusedinf_cc.passes.quiet import quiet_onnx_ir


class Cleanup:
    name = "cleanup"

    def run(self, state: FusionState, ctx: PassContext) -> PassOutcome:
        model = state.require_fused()
        changed = False
        with quiet_onnx_ir():
            for library_pass in (
                RemoveUnusedNodesPass(),
                RemoveUnusedFunctionsPass(),
                RemoveUnusedOpsetsPass(),
                TopologicalSortPass(),
            ):
                changed |= library_pass(model).modified
            try:
                CheckerPass(full_check=True)(model)
            except _CHECK_ERRORS as error:
                inherited = _sources_failing_alike(state.members, str(error))
                if not inherited:
                    raise MergeError(
                        f"the fused model fails onnx's checker: {first_line(error)}"
                    ) from None
                try:
                    CheckerPass(full_check=False)(model)
                except _CHECK_ERRORS as structural:
                    raise MergeError(
                        f"the fused model fails onnx's checker: {first_line(structural)}"
                    ) from None
                names = ", ".join(inherited)
                detail = f"checked (structure; shape inference fails on source {names} too)"
                return PassOutcome(changed=changed, detail=detail)
        return PassOutcome(changed=changed, detail="checked (full, with shape inference)")


_CHECK_ERRORS = (onnx.checker.ValidationError, onnx.shape_inference.InferenceError)
_OP_TYPE = re.compile(r"\(op_type:([A-Za-z0-9_]+)")


def _sources_failing_alike(members: list[SourceModel], failure: str) -> list[str]:
    """The source models that fail onnx's full check on the operator the fused model fails it
    on (checked from their files, so only on this rare path)."""
    op_types = set(_OP_TYPE.findall(failure)[:1])
    failing = []
    for member in members:
        try:
            onnx.checker.check_model(str(member.path), full_check=True)
        except _CHECK_ERRORS as error:
            if not op_types or op_types & set(_OP_TYPE.findall(str(error))):
                failing.append(member.name)
    return failing
