"""dedup: byte-identical initializers (same dtype, shape and data) are stored once.

Wraps onnx-ir's `DeduplicateHashedInitializersPass`, which hashes tensor data instead of keeping
copies of it as keys, so deduplicating large weights costs no extra weight memory.
"""

from __future__ import annotations

from onnx_ir.passes.common import DeduplicateHashedInitializersPass

from fusedinf_cc.passes.base import FusionState, PassContext, PassOutcome
from fusedinf_cc.passes.quiet import quiet_onnx_ir


class Dedup:
    name = "dedup"

    def run(self, state: FusionState, ctx: PassContext) -> PassOutcome:
        model = state.require_fused()
        before = sum(len(graph.initializers) for graph in model.graphs())
        with quiet_onnx_ir():
            result = DeduplicateHashedInitializersPass()(model)
        removed = before - sum(len(graph.initializers) for graph in model.graphs())
        return PassOutcome(changed=result.modified, detail=f"{removed} duplicate tensors dropped")
