"""merge: move every prefixed source graph into one graph with the union of their I/O.

Nodes, values and initializers are moved, not copied: weights keep pointing at the same tensors
(memory-mapped ones included), so merging costs no weight memory.
"""

from __future__ import annotations

import onnx_ir as ir

from fusedinf_cc.passes.base import FusionState, PassContext, PassOutcome


class Merge:
    name = "merge"

    def run(self, state: FusionState, ctx: PassContext) -> PassOutcome:
        inputs: list[ir.Value] = []
        outputs: list[ir.Value] = []
        nodes: list[ir.Node] = []
        initializers: list[ir.Value] = []
        opset_imports: dict[str, int] = {}
        functions: dict[ir.OperatorIdentifier, ir.Function] = {}
        for member in state.members:
            graph = member.model.graph
            inputs.extend(graph.inputs)
            outputs.extend(graph.outputs)
            initializers.extend(graph.initializers.values())
            moved = list(graph)
            graph.remove(moved)
            nodes.extend(moved)
            graph.inputs.clear()
            graph.outputs.clear()
            graph.initializers.clear()
            opset_imports.update(graph.opset_imports)
            functions.update(member.model.functions)
        for domain in ("", "ai.onnx"):
            opset_imports.pop(domain, None)
        opset_imports[""] = ctx.opset
        fused_graph = ir.Graph(
            inputs,
            outputs,
            nodes=nodes,
            initializers=initializers,
            opset_imports=opset_imports,
            name="fused",
        )
        state.fused = ir.Model(
            fused_graph,
            ir_version=ctx.ir_version,
            producer_name="fusedinf-cc",
            functions=list(functions.values()),
        )
        names = ", ".join(member.name for member in state.members)
        return PassOutcome(
            changed=True,
            detail=f"{len(state.members)} models ({names}): {len(inputs)} inputs, "
            f"{len(outputs)} outputs",
        )
