"""cse: identical nodes on identical inputs compute once, repeated to a fixed point.

After `share` and `dedup`, two task heads exported with one backbone read the same input and the
same weights, so their backbone nodes become identical and collapse into one backbone. Wraps
onnx-ir's `CommonSubexpressionEliminationPass` (which keeps graph output names intact). Where
the node that survives produced an untyped intermediate value and the one removed produced a typed
graph output, the output's type and shape are carried over to the survivor.
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
        output_types = {value.name: (value.type, value.shape) for value in model.graph.outputs}
        rounds = 0
        with quiet_onnx_ir():
            while rounds < _MAX_ROUNDS and CommonSubexpressionEliminationPass()(model).modified:
                rounds += 1
        for value in model.graph.outputs:
            declared_type, declared_shape = output_types[value.name]
            if value.type is None:
                value.type = declared_type
            if value.shape is None:
                value.shape = declared_shape
        merged = before - len(model.graph)
        return PassOutcome(
            changed=rounds > 0, detail=f"{merged} nodes computed once ({rounds} rounds)"
        )
