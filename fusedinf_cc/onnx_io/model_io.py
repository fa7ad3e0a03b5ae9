"""Load and save ONNX models (external data included), hash them, and check them at the door.

Everything enters the pipeline through `load_sources` and leaves it through `save_model_atomic`, so
user mistakes (missing files, non-ONNX bytes, clashing names) are caught here with one clear line,
and no output is ever half-written.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import onnx
import onnx_ir as ir
from google.protobuf.message import DecodeError

from fusedinf_cc.artifacts.manifest import MANIFEST_SUFFIX
from fusedinf_cc.common.errors import UserInputError, first_line
from fusedinf_cc.common.files import commit_staged, external_data_name, sha256_file, staging_dir
from fusedinf_cc.common.names import check_unique_names
from fusedinf_cc.onnx_io.stream import STREAMED_TENSOR_BYTES, write_streamed
from fusedinf_cc.onnx_io.zipmap import holds_maps, tensors_for_maps

# Above this many bytes of weights a model is written with its tensors in a side file. ONNX Runtime
# reads a single-file model whole and keeps it for the session's life; from a side file it reads
# tensor by tensor. On the unrelated zoo set (59 MiB) that took peak RSS from 240 to 161 MiB and
# cold load from 288 to 206 ms. Smaller models stay one file, which is handier to move around.
EXTERNAL_DATA_THRESHOLD_BYTES = 8 << 20
# Protobuf cannot serialise a message over 2 GiB; keep room for the graph.
SINGLE_FILE_LIMIT_BYTES = 2**31 - 2**26
# Tensors up to this size travel inside protobufs handed to onnx's C API (checker, converter)
# and stay in the head of a streamed file; larger ones are lifted out or streamed.
SMALL_TENSOR_BYTES = STREAMED_TENSOR_BYTES


@dataclass
class SourceModel:
    """One input model: the name that prefixes it, where it came from, and its graph."""

    name: str
    path: Path
    sha256: str
    model: ir.Model
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]


def load_model(path: Path) -> ir.Model:
    """Load an ONNX model; external tensors stay memory-mapped rather than read into memory."""
    if not path.exists():
        raise UserInputError(f"{path}: no such file")
    if not path.is_file():
        raise UserInputError(f"{path}: not a file")
    if path.stat().st_size == 0:
        raise UserInputError(f"{path}: file is empty, not an ONNX model")
    try:
        model = _load_ir(path)
    except (DecodeError, RuntimeWarning, ValueError, UnicodeDecodeError) as error:
        raise UserInputError(f"{path}: not a readable ONNX model ({first_line(error)})") from None
    except OSError as error:
        raise UserInputError(f"{path}: cannot read it ({error.strerror or error})") from None
    try:
        _check_loaded(model, path)
        _check_tensor_sizes(model, path)
        _materialize_small_external_tensors(model)
    except ValueError as error:  # onnx-ir refuses external data outside the model's folder
        raise UserInputError(f"{path}: {first_line(error)}") from None
    except OSError as error:
        raise UserInputError(f"{path}: its external data cannot be read ({error})") from None
    return model


def _load_ir(path: Path) -> ir.Model:
    """`ir.load`, or where the model has a type the IR cannot hold (a classifier's ZipMap),
    the model with that output carried as a tensor (`zipmap.py`)."""
    try:
        return ir.load(path)
    except ir.serde.SerdeError as error:
        proto = onnx.load(path, load_external_data=False)
        if not holds_maps(proto):
            raise UserInputError(
                f"{path}: not a model fusedinf-cc can read ({first_line(error)})"
            ) from None
    tensors_for_maps(proto, path)
    model = ir.serde.deserialize_model(proto)
    ir.external_data.set_base_dir(model.graph, path.parent)
    return model


def _materialize_small_external_tensors(model: ir.Model) -> None:
    """Read small external tensors (and any in subgraphs) into memory.

    Checking and converting a model lifts only the main graph's large weights out of the protobuf;
    what stays must not point at files relative to a folder the protobuf does not know.
    """
    for graph in model.graphs():
        in_subgraph = graph is not model.graph
        for value in graph.initializers.values():
            tensor = value.const_value
            if isinstance(tensor, ir.ExternalTensor) and (
                in_subgraph or tensor.nbytes <= SMALL_TENSOR_BYTES
            ):
                value.const_value = ir.Tensor(tensor.numpy(), name=value.name)


def _check_loaded(model: ir.Model, path: Path) -> None:
    """Protobuf happily parses many non-ONNX byte strings; reject what is not a usable model."""
    graph = model.graph
    if model.ir_version <= 0 or not graph.opset_imports or not graph.outputs:
        raise UserInputError(f"{path}: not an ONNX model (no IR version, opset or graph outputs)")
    for value in graph.initializers.values():
        tensor = value.const_value
        if isinstance(tensor, ir.ExternalTensor) and not Path(tensor.path).is_file():
            raise UserInputError(
                f"{path}: external data file {tensor.location!r} of tensor {value.name!r} "
                "is missing"
            )


_TYPED_FIELDS = ("float_data", "int32_data", "int64_data", "double_data", "uint64_data")


def _check_tensor_sizes(model: ir.Model, path: Path) -> None:
    """Every initializer holds the data its type and shape declare: one that declares 2^40
    floats and holds 16 bytes would fuse, then fail every runtime that allocates it."""
    for graph in model.graphs():
        for value in graph.initializers.values():
            tensor = value.const_value
            if isinstance(tensor, ir.TensorProtoTensor):
                proto = tensor.raw
                if proto.data_type in (
                    ir.DataType.STRING,
                    ir.DataType.COMPLEX64,
                    ir.DataType.COMPLEX128,
                ):
                    continue
                if proto.raw_data:
                    held, declared, unit = len(proto.raw_data), tensor.nbytes, "bytes"
                else:
                    held = sum(len(getattr(proto, field)) for field in _TYPED_FIELDS)
                    declared, unit = tensor.size, "values"
            elif isinstance(tensor, ir.ExternalTensor):
                size = Path(tensor.path).stat().st_size
                held = max(0, size - (tensor.offset or 0))
                if held >= tensor.nbytes:
                    continue
                declared, unit = tensor.nbytes, "bytes (its external data file is shorter)"
            else:
                continue
            if held != declared:
                raise UserInputError(
                    f"{path}: initializer {value.name!r} declares shape {list(tensor.shape)} "
                    f"of {tensor.dtype.name.lower()}, {declared} {unit}, but holds {held}"
                )


def load_sources(specs: Sequence[tuple[str, Path]]) -> list[SourceModel]:
    """Load every model named on the command line, refusing duplicate names up front."""
    check_unique_names(specs)
    sources = []
    for name, path in specs:
        model = load_model(path)
        sources.append(
            SourceModel(
                name=name,
                path=path,
                sha256=sha256_file(path),
                model=model,
                input_names=tuple(_names(model.graph.inputs, exclude=model.graph.initializers)),
                output_names=tuple(_names(model.graph.outputs)),
            )
        )
    return sources


def _names(values: Iterable[ir.Value], exclude: Iterable[str] = ()) -> list[str]:
    skip = set(exclude)
    return [value.name for value in values if value.name and value.name not in skip]


def weight_bytes(model: ir.Model) -> int:
    """Bytes of initializer data in every graph of the model (subgraphs too)."""
    total = 0
    for graph in model.graphs():
        for value in graph.initializers.values():
            if value.const_value is not None:
                total += value.const_value.nbytes
    return total


def node_count(model: ir.Model) -> int:
    """Nodes in the main graph and in every subgraph."""
    return sum(len(graph) for graph in model.graphs())


def save_model_atomic(
    model: ir.Model,
    out_path: Path,
    *,
    external_data: bool | None = None,
    staging: Path | None = None,
) -> list[Path]:
    """Write the model (and its external data) so that no reader ever sees a partial file.

    Files are written into a temporary folder beside the target and then renamed into place;
    on any error the folder is removed and the target is untouched. `external_data=None` picks
    external data when the weights are large. Otherwise weights are streamed into one file, one
    tensor at a time, so writing holds no second copy of them; sources that kept weights in side
    files get them inline, so every artifact is self-contained. Returns the paths written.
    With `staging` (the caller's staging folder), the files are only written there, under their
    final names, and returned for the caller to rename with the rest of the artifact.
    """
    weights = weight_bytes(model)
    if external_data is None:
        external_data = weights > EXTERNAL_DATA_THRESHOLD_BYTES
    if not external_data and weights > SINGLE_FILE_LIMIT_BYTES:
        raise UserInputError(
            f"{out_path}: {weights / 2**30:.1f} GiB of weights do not fit one ONNX file (2 GiB "
            "protobuf limit); drop --single-file"
        )
    data_name = external_data_name(out_path) if external_data else None
    if staging is not None:
        return _write_model(model, staging / out_path.name, data_name)
    with staging_dir(out_path) as own:
        staged = _write_model(model, own / out_path.name, data_name)
        commit_staged(staged, out_path.parent)
    if not external_data:
        stale = out_path.parent / external_data_name(out_path)
        stale.unlink(missing_ok=True)
    return [out_path.parent / path.name for path in staged]


def _write_model(model: ir.Model, staged_model: Path, data_name: str | None) -> list[Path]:
    """The model and its side file (first, where there is one) written at `staged_model`."""
    try:
        if data_name:
            ir.save(model, staged_model, external_data=data_name)
        else:
            with open(staged_model, "wb") as stream:
                write_streamed(model, stream)
    except OSError as error:
        raise UserInputError(
            f"{staged_model.parent.parent}: cannot write the model there ({error.strerror})"
        ) from None
    return [*([staged_model.with_name(data_name)] if data_name else []), staged_model]


def check_output_path(out_path: Path, inputs: Iterable[Path]) -> None:
    """Refuse an output that would overwrite one of the inputs (or their external data)."""
    resolved = out_path.resolve()
    data = resolved.parent / external_data_name(resolved)
    for source in inputs:
        source_resolved = source.resolve()
        if source_resolved in (resolved, data):
            raise UserInputError(f"output {out_path} would overwrite the input model {source}")
    if resolved.is_dir():
        raise UserInputError(f"output {out_path} is a folder; give a file name")
    for beside in (data, resolved.with_name(resolved.name + MANIFEST_SUFFIX)):
        if beside.is_dir():
            raise UserInputError(f"output {out_path}: {beside} is a folder; remove it first")
    if not resolved.parent.is_dir():
        raise UserInputError(f"output {out_path}: folder {out_path.parent} does not exist")
    if not os.access(resolved.parent, os.W_OK):
        raise UserInputError(f"output {out_path}: folder {resolved.parent} is not writable")
