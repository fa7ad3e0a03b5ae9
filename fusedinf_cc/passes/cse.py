"""cse: identical nodes on identical inputs compute once, repeated to a fixed point.

After `share` and `dedup`, two task heads exported with one backbone read the same input and the
same weights, so their backbone nodes become identical and collapse into one backbone. Wraps
onnx-ir's `CommonSubexpressionEliminationPass` (which keeps graph output names intact).
"""

from __future__ import annotations

from onnx_ir.passes.common import CommonSubexpressionEliminationPass

from fusedinf_cc.passes.base import FusionState, PassContext, PassOutcome
from fusedinf_cc.passes.quiet import quiet_onnx_ir

_MAX_ROUNDS = 64


class Cse:
    name = "cse"

    def run(self, state: FusionState, ctx: PassContext) -> PassOutcome:
        model = state.require_fused()
        before = len(model.graph)
        rounds = 0
        with quiet_onnx_ir():
            while rounds < _MAX_ROUNDS and CommonSubexpressionEliminationPass()(model).modified:
                rounds += 1
        merged = before - len(model.graph)
        return PassOutcome(
            changed=rounds > 0, detail=f"{merged} nodes computed once ({rounds} rounds)"
        )
