"""cleanup: drop dead nodes, initializers, functions and opsets, sort, and check the result.

The check is onnx's full checker (strict shape inference included), run through onnx-ir's
`CheckerPass`, which lifts large weights out of the protobuf first: models over 2 GiB check too.
"""

from __future__ import annotations

import onnx
from onnx_ir.passes.common import (
    CheckerPass,
    RemoveUnusedFunctionsPass,
    RemoveUnusedNodesPass,
    RemoveUnusedOpsetsPass,
    TopologicalSortPass,
)

from fusedinf_cc.common.errors import MergeError, first_line
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
            except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as error:
                raise MergeError(
                    f"the fused model fails onnx's checker: {first_line(error)}"
                ) from None
        return PassOutcome(changed=changed, detail="checked (full, with shape inference)")
