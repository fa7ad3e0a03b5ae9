"""Whether the installed ONNX Runtime can run a fused model's operators, said at fuse time.

Fusing converts every model to one opset, and converting raises an operator to the version
that opset defines. Each source runs alone, but an operator raised to a version the installed
runtime has no CPU kernel for would fail only when the fused model is loaded, far from the
command that made it. The runtime's own kernel table says so now.
"""

from __future__ import annotations

import functools

import onnx
import onnx_ir as ir

from fusedinf_cc.backends.onnxruntime import cpu_kernel_versions, import_onnxruntime
from fusedinf_cc.common.errors import BackendUnavailableError, UserInputError

# The ONNX domains the runtime's kernel table names, by the names a model may import them as.
_DOMAINS = {"": "", "ai.onnx": "", "ai.onnx.ml": "ai.onnx.ml"}


def operators_without_kernels(
    model: ir.Model, kernels: dict[tuple[str, str], tuple[tuple[int, int], ...]]
) -> list[str]:
    """`Operator-version` for each operator of `model` that no kernel in `kernels` runs at the
    version the model's opset gives it. Operators defined by a function (which the runtime
    expands) and `Constant` (folded at load) need none."""
    missing = set()
    for node in ir.traversal.RecursiveGraphIterator(model.graph):
        domain = _DOMAINS.get(node.domain)
        opset = model.opset_imports.get(node.domain, model.opset_imports.get(domain or ""))
        if domain is None or opset is None or node.op_type == "Constant":
            continue
        version = _kernel_version(node.op_type, opset, domain)
        if version is None:
            continue
        versions = kernels.get((domain, node.op_type), ())
        if not any(first <= version <= last for first, last in versions):
            missing.add(f"{node.op_type}-{version}")
    return sorted(missing)


@functools.lru_cache(maxsize=4096)
def _kernel_version(op_type: str, opset: int, domain: str) -> int | None:
    """The version of `op_type` that `opset` defines, where the runtime needs a kernel for it
    (None: not an ONNX operator there, or one defined by a function the runtime expands)."""
    try:
        schema = onnx.defs.get_schema(op_type, opset, domain)
    except onnx.defs.SchemaError:
        return None  # the checker has its say on that
    if schema.has_function or schema.has_context_dependent_function:
        return None
    return schema.since_version


def installed_kernels() -> dict[tuple[str, str], tuple[tuple[int, int], ...]] | None:
    """The installed ONNX Runtime's CPU kernels, or None where it is not installed."""
    try:
        return cpu_kernel_versions()
    except BackendUnavailableError:
        return None


def refuse_what_will_not_load(model: ir.Model) -> None:
    """Refuse, in one line, a fused model the installed ONNX Runtime has no CPU kernel for:
    writing an artifact that will not load here is never silent (nothing where it is not
    installed)."""
    kernels = installed_kernels()
    if kernels is None:
        return
    missing = operators_without_kernels(model, kernels)
    if missing:
        version = import_onnxruntime().__version__
        opset = model.opset_imports.get("", "none")
        raise UserInputError(
            f"ONNX Runtime {version} here has no CPU kernel for {', '.join(missing)} (the fused "
            f"model's opset is {opset}), so the artifact would not load here: fuse with --opset "
            "N for one it runs, or build a .engine for TensorRT"
        )
