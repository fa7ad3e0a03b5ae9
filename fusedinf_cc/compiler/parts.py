"""Each model's part of a built artifact: the cone of the fused graph its outputs need.

ONNX Runtime runs every node of a session whatever outputs a request asks for, so a request for
one model of a fused bundle would pay for them all (4x the model alone, measured on an OCR-like
trio). A part is the artifact's graph cut down to the nodes one model's outputs depend on (a
backbone that `cse` made common included), written as a small model file beside the artifact.
Its initializers are the artifact's own records: those in the side file point at the same bytes
(a part writes no weight twice), and the few inline ones (ahead-of-time graphs keep tensors under
1 KiB inline, small portable bundles all of theirs) are copied. Cutting the artifact's graph,
not the fused model's, keeps the optimised graph of `--aot`: a part runs the very kernels the
whole does, so its outputs are bitwise the whole's.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from fusedinf_cc.artifacts.manifest import Manifest, PartRecord
from fusedinf_cc.common.errors import UserInputError
from fusedinf_cc.common.files import sha256_file

PART_INFIX = ".part-"


def part_file_name(out_path: Path, model: str) -> str:
    """`fused.onnx` -> `fused.part-cls.onnx`."""
    return sibling_file_name(out_path, PART_INFIX, model)


def stale_parts(out_path: Path, keep: Iterable[str]) -> list[Path]:
    """Part files of an earlier build at `out_path` that the new build did not write."""
    return stale_siblings(out_path, PART_INFIX, keep)


def save_cut(cut: Any, path: Path, out_path: Path) -> Path:
    """Write a part or stage into the build's staging folder, or say in one line why not."""
    import onnx

    try:
        onnx.save(cut, str(path))
    except OSError as error:
        raise UserInputError(
            f"{out_path.parent}: cannot write {path.name} there ({error.strerror})"
        ) from None
    return path


def sibling_file_name(out_path: Path, infix: str, key: object) -> str:
    """A file cut from the artifact at `out_path`, beside it: `fused<infix><key>.onnx`."""
    return f"{out_path.stem}{infix}{key}{out_path.suffix}"


def stale_siblings(out_path: Path, infix: str, keep: Iterable[str]) -> list[Path]:
    """Files cut from an earlier build at `out_path` (by `infix`) that the new one did not
    write."""
    kept = set(keep)
    pattern = sibling_file_name(out_path, infix, "*")
    return [path for path in out_path.parent.glob(pattern) if path.name not in kept]


def write_parts(staged_model: Path, manifest: Manifest, out_path: Path) -> list[Path]:
    """Write a part per model of `manifest` beside `staged_model` (in its staging folder) and
    record them in `manifest.parts`; return the files written. A model whose cone is the whole
    graph (one model; a stacked layer that reads them all) gets no part: the whole is it."""
    import onnx

    if len(manifest.models) < 2:
        return []
    model = onnx.load(str(staged_model), load_external_data=False)
    graph = model.graph
    written, records = [], []
    for entry in manifest.models:
        nodes, needed = cone(graph.node, entry.outputs.values())
        if len(nodes) == len(graph.node):
            continue
        part = _part_model(model, nodes, needed, set(entry.outputs.values()))
        path = save_cut(
            part, staged_model.with_name(part_file_name(out_path, entry.name)), out_path
        )
        records.append(
            PartRecord(
                model=entry.name,
                path=path.name,
                sha256=sha256_file(path),
                size_bytes=path.stat().st_size,
                inputs=[value.name for value in part.graph.input],
                weights=[
                    tensor.name
                    for tensor in part.graph.initializer
                    if tensor.data_location == onnx.TensorProto.EXTERNAL
                ],
                nodes=len(nodes),
                nodes_of_whole=len(graph.node),
            )
        )
        written.append(path)
    manifest.parts = records
    return written


def cone(nodes: Sequence[Any], outputs: Iterable[str]) -> tuple[list[Any], set[str]]:
    """The nodes (in graph order) that `outputs` depend on, and every value name they read.
    A node with subgraphs (If, Loop, Scan) reads whatever its bodies name as well: a name the
    body defines itself can only pull in more than needed, never less."""
    producer = {name: index for index, node in enumerate(nodes) for name in node.output if name}
    needed = set(outputs)
    pending = list(needed)
    kept: set[int] = set()
    while pending:
        index = producer.get(pending.pop())
        if index is None or index in kept:
            continue
        kept.add(index)
        for name in reads(nodes[index]):
            if name not in needed:
                needed.add(name)
                pending.append(name)
    return [nodes[index] for index in sorted(kept)], needed


def first_reads(node_reads: Sequence[Sequence[str]]) -> dict[str, int]:
    """Each value name -> the index of the first node that reads it (`reads` of each node, in
    graph order): where a weight is first needed."""
    first: dict[str, int] = {}
    for index, names in enumerate(node_reads):
        for name in names:
            first.setdefault(name, index)
    return first


def reads(node: Any) -> list[str]:
    """Every value name `node` reads, its subgraphs' included."""
    names = [name for name in node.input if name]
    for attribute in node.attribute:
        bodies = [attribute.g] if attribute.HasField("g") else []
        for body in [*bodies, *attribute.graphs]:
            for inner in body.node:
                names.extend(reads(inner))
            names.extend(value.name for value in body.output)
    return names


def _part_model(model: Any, nodes: list[Any], needed: set[str], outputs: set[str]) -> Any:
    """The artifact's model with only `nodes`, and the inputs, initializers and value infos
    they read; opsets, functions and IR version kept."""
    graph = model.graph
    return cut_model(
        model,
        nodes,
        inputs=[value for value in graph.input if value.name in needed],
        outputs=[value for value in graph.output if value.name in outputs],
        reads=needed,
    )


def cut_model(
    model: Any,
    nodes: Sequence[Any],
    *,
    inputs: Sequence[Any],
    outputs: Sequence[Any],
    reads: set[str],
) -> Any:
    """`model` with only `nodes`, these inputs and outputs, and the initializers and value
    infos named in `reads`; opsets, functions, IR version and producer kept. What a part and a
    stage are cut with."""
    import onnx

    graph = model.graph
    cut_graph = onnx.GraphProto(name=graph.name)
    cut_graph.node.extend(nodes)
    cut_graph.input.extend(inputs)
    cut_graph.output.extend(outputs)
    cut_graph.initializer.extend(t for t in graph.initializer if t.name in reads)
    cut_graph.sparse_initializer.extend(
        t for t in graph.sparse_initializer if t.values.name in reads
    )
    cut_graph.value_info.extend(value for value in graph.value_info if value.name in reads)
    cut = onnx.ModelProto(
        ir_version=model.ir_version,
        producer_name=model.producer_name,
        producer_version=model.producer_version,
        domain=model.domain,
        model_version=model.model_version,
        graph=cut_graph,
    )
    cut.opset_import.extend(model.opset_import)
    cut.functions.extend(model.functions)
    return cut
