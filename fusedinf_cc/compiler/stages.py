"""Stages of a built artifact: spans of its graph, in the order they run, each its own small
model file, so that a bundle larger than memory can run one stage at a time.

A stage is cut from the ahead-of-time artifact's own graph, as a part is (`parts.py`): its
nodes run the very kernels the whole does, so running the stages one after another gives
bitwise the whole's outputs, and its weights are the artifact's side file, which `--aot` lays
out in first-use order (`targets/weight_order.py`): each stage reads one contiguous range.

Where to cut: the stages hold about equal shares of the weights (what a stage must hold while it
runs), and within a window around each share's boundary the cut is made where the fewest values
cross (what must be kept between stages). The runtime's optimised graph does not record the
types of its intermediate values, so the values that cross are typed by ONNX Runtime itself: the
graph, with them as extra outputs, is opened once and asked.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fusedinf_cc.artifacts.manifest import Manifest, StageRecord
from fusedinf_cc.common.errors import UserInputError
from fusedinf_cc.common.files import sha256_file
from fusedinf_cc.compiler.parts import (
    cut_model,
    first_reads,
    reads,
    save_cut,
    sibling_file_name,
    stale_siblings,
)

STAGE_INFIX = ".stage-"
# `--stages auto`: one stage per this many bytes of weights, at least two. A stage's session
# costs a few hundred KiB and a millisecond or two to open; at 64 MiB that is noise, and a
# 2 GiB model runs in 32 stages, two of which (one running, the next being read) fit a
# 512 MiB box.
AUTO_STAGE_BYTES = 64 << 20
# A cut may move this share of a stage's weights from its boundary to where fewer values cross.
_WINDOW = 0.25


def stage_file_name(out_path: Path, index: int) -> str:
    """`fused.onnx` -> `fused.stage-0.onnx`."""
    return sibling_file_name(out_path, STAGE_INFIX, index)


def stale_stages(out_path: Path, keep: Sequence[str]) -> list[Path]:
    """Stage files of an earlier build at `out_path` that the new build did not write."""
    return stale_siblings(out_path, STAGE_INFIX, keep)


def parse_stages(value: str | int | None) -> int | str | None:
    """`--stages`: a count of at least 2, or `auto`."""
    if value is None or value == "auto":
        return value
    try:
        count = int(value)
    except (TypeError, ValueError):
        count = 0
    if count < 2:
        raise UserInputError(f"--stages {value}: give a count of at least 2, or auto")
    return count


def write_stages(
    staged_model: Path, manifest: Manifest, out_path: Path, stages: int | str
) -> list[Path]:
    """Cut the artifact at `staged_model` (in its staging folder, its side file beside it) into
    `stages` stages (a count, or `auto`), write each beside it and record them in
    `manifest.stages`; return the files written."""
    import onnx
    from onnx.external_data_helper import ExternalDataInfo

    model = onnx.load(str(staged_model), load_external_data=False)
    graph = model.graph
    nodes = list(graph.node)
    stored = {
        tensor.name: ExternalDataInfo(tensor).length
        for tensor in graph.initializer
        if tensor.data_location == onnx.TensorProto.EXTERNAL
    }
    node_reads = [reads(node) for node in nodes]
    first_use = first_reads(node_reads)
    weight_at = [0] * len(nodes)
    for name, size in stored.items():
        if name in first_use:
            weight_at[first_use[name]] += size
    count = _count(stages, sum(weight_at), len(nodes))
    lifetimes = _lifetimes(nodes, node_reads, graph)
    cuts = _cuts(len(nodes), lifetimes, weight_at, count)
    bounds = list(zip([0, *cuts], [*cuts, len(nodes)], strict=True))
    crossing = {
        cut: sorted(name for name, (made, last) in lifetimes.items() if made < cut <= last)
        for cut in cuts
    }
    types = _types_of(model, staged_model, sorted(set().union(*crossing.values())))
    outputs_of_graph = {value.name for value in graph.output}
    written, records = [], []
    for index, (start, end) in enumerate(bounds):
        produced = {name for node in nodes[start:end] for name in node.output if name}
        needed = {name for names in node_reads[start:end] for name in names}
        later = set(crossing.get(end, ())) | outputs_of_graph
        stage = _stage_model(model, nodes[start:end], needed, produced, later, types)
        path = staged_model.with_name(stage_file_name(out_path, index))
        save_cut(stage, path, out_path)
        weights = [
            t.name for t in stage.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL
        ]
        records.append(
            StageRecord(
                index=index,
                path=path.name,
                sha256=sha256_file(path),
                size_bytes=path.stat().st_size,
                inputs=[value.name for value in stage.graph.input],
                outputs=[value.name for value in stage.graph.output],
                weights=weights,
                weight_bytes=sum(stored[name] for name in weights),
                nodes=end - start,
            )
        )
        written.append(path)
    manifest.stages = records
    return written


def _count(stages: int | str, weight_bytes: int, nodes: int) -> int:
    count = max(2, math.ceil(weight_bytes / AUTO_STAGE_BYTES)) if stages == "auto" else int(stages)
    if count > nodes:
        raise UserInputError(
            f"--stages {stages}: the built graph has {nodes} nodes, so at most {nodes} stages"
        )
    return count


def _cuts(
    node_count: int, lifetimes: dict[str, tuple[int, int]], weight_at: Sequence[int], count: int
) -> list[int]:
    """`count - 1` cut positions (a cut at k: nodes before k in one stage, from k in the next)."""
    total = sum(weight_at)
    before = [0]
    for size in weight_at:
        before.append(before[-1] + size)
    live = _live_counts(node_count, lifetimes)
    cuts: list[int] = []
    for boundary in range(1, count):
        low = cuts[-1] + 1 if cuts else 1
        high = node_count - (count - boundary)  # leave a node for each stage still to come
        target = total * boundary / count
        if total == 0:  # no weights: equal numbers of nodes
            target_index = round(node_count * boundary / count)
            cuts.append(min(max(target_index, low), high))
            continue
        slack = _WINDOW * total / count
        window = [k for k in range(low, high + 1) if abs(before[k] - target) <= slack]
        if not window:
            window = [min(range(low, high + 1), key=lambda k: abs(before[k] - target))]
        cuts.append(min(window, key=lambda k: (live[k], abs(before[k] - target))))
    return cuts


def _lifetimes(
    nodes: Sequence[Any], node_reads: Sequence[list[str]], graph: Any
) -> dict[str, tuple[int, int]]:
    """Each computed value that something reads -> (the node that makes it, the last node that
    reads it; past the last node for a graph output). It crosses a cut k where made < k <= last."""
    produced_at = {name: i for i, node in enumerate(nodes) for name in node.output if name}
    last_read: dict[str, int] = {}
    for index, names in enumerate(node_reads):
        for name in names:
            if name in produced_at:
                last_read[name] = index
    for value in graph.output:
        if value.name in produced_at:
            last_read[value.name] = len(nodes)
    return {name: (produced_at[name], last) for name, last in last_read.items()}


def _live_counts(node_count: int, lifetimes: dict[str, tuple[int, int]]) -> list[int]:
    """For each cut position k, how many computed values cross it."""
    change = [0] * (node_count + 2)
    for made, last in lifetimes.values():
        change[made + 1] += 1
        change[last + 1] -= 1
    live, running = [], 0
    for step in change[: node_count + 1]:
        running += step
        live.append(running)
    return live


def _types_of(model: Any, staged_model: Path, names: Sequence[str]) -> dict[str, Any]:
    """Value infos for `names`, as ONNX Runtime infers them on the artifact's own graph."""
    import onnx

    from fusedinf_cc.backends.onnxruntime import LOG_ERRORS_ONLY, import_onnxruntime

    if not names:
        return {}
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    known = {value.name for value in probe.graph.output}
    probe.graph.output.extend(onnx.ValueInfoProto(name=n) for n in names if n not in known)
    probe_path = staged_model.with_name("stage-types.onnx")
    onnx.save(probe, str(probe_path))
    ort = import_onnxruntime()
    options = ort.SessionOptions()
    options.log_severity_level = LOG_ERRORS_ONLY
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        session = ort.InferenceSession(str(probe_path), options, providers=["CPUExecutionProvider"])
        inferred = {arg.name: arg for arg in session.get_outputs()}
    finally:
        probe_path.unlink(missing_ok=True)
    types = {}
    for name in names:
        arg = inferred[name]
        element = _ELEMENT_TYPES.get(arg.type)
        if element is None:
            raise UserInputError(
                f"--stages: value {name!r} that crosses a stage boundary has type {arg.type}, "
                "which a stage cannot pass on; build without --stages"
            )
        shape = [dim if isinstance(dim, int) else (dim or None) for dim in (arg.shape or [])]
        types[name] = onnx.helper.make_tensor_value_info(name, element, shape)
    return types


_ELEMENT_TYPES = {
    "tensor(float)": 1,
    "tensor(uint8)": 2,
    "tensor(int8)": 3,
    "tensor(uint16)": 4,
    "tensor(int16)": 5,
    "tensor(int32)": 6,
    "tensor(int64)": 7,
    "tensor(bool)": 9,
    "tensor(float16)": 10,
    "tensor(double)": 11,
    "tensor(uint32)": 12,
    "tensor(uint64)": 13,
}


def _stage_model(
    model: Any,
    nodes: Sequence[Any],
    needed: set[str],
    produced: set[str],
    later: set[str],
    types: dict[str, Any],
) -> Any:
    """The artifact's model with only `nodes`: it reads the graph's inputs and the values
    earlier stages made that it needs, and gives what it makes that later stages (or the
    graph's outputs) read."""
    graph = model.graph
    initializers = {tensor.name for tensor in graph.initializer}
    graph_inputs = {value.name: value for value in graph.input}
    graph_outputs = {value.name: value for value in graph.output}
    inputs = [graph_inputs[name] for name in graph_inputs if name in needed]
    inputs += [
        types[name]
        for name in sorted(needed - produced - set(graph_inputs) - initializers)
        if name in types
    ]
    outputs = [graph_outputs.get(name) or types[name] for name in sorted(produced & later)]
    return cut_model(model, nodes, inputs=inputs, outputs=outputs, reads=needed | produced)
