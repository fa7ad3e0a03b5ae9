"""The pass contract: a small class with a `name` and one `run(state, ctx)` that says what it did.

Before `merge` the passes work on each source model; after it, on the one fused model. The
pipeline runner in `fusedinf_cc.compiler.pipeline` measures nodes, initializers and bytes
around every pass, so a pass only reports whether it changed anything and a one-line detail.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol

import onnx_ir as ir

from fusedinf_cc.artifacts.manifest import SharedInput
from fusedinf_cc.onnx_io.model_io import SourceModel


@dataclass(frozen=True)
class ShareSpec:
    """`--share-input FUSED=m1.in,m2.in`: one fused input that the listed model inputs become."""

    fused_name: str
    members: tuple[tuple[str, str], ...]  # (model, original input name)


@dataclass(frozen=True)
class FusionOptions:
    """What the user asked of the pipeline."""

    share_inputs: Literal["auto", "none"] = "none"
    explicit_shares: tuple[ShareSpec, ...] = ()
    dedup: bool = True
    cse: bool = True
    stack: bool = False
    # The default-domain opset every model is converted to (up or down); None: the highest
    # among the models that use the domain.
    opset: int | None = None


@dataclass
class FusionState:
    """The graphs under surgery: the source models until `merge`, then the fused model."""

    members: list[SourceModel]
    fused: ir.Model | None = None

    def models(self) -> list[ir.Model]:
        if self.fused is not None:
            return [self.fused]
        return [member.model for member in self.members]

    def require_fused(self) -> ir.Model:
        if self.fused is None:
            raise RuntimeError("this pass runs after merge")
        return self.fused


@dataclass
class PassContext:
    """What passes tell each other: the common opset and IR version, and the I/O name maps."""

    options: FusionOptions
    opset: int = 0
    ir_version: int = 0
    inputs: dict[str, dict[str, str]] = field(default_factory=dict)  # model -> original -> fused
    outputs: dict[str, dict[str, str]] = field(default_factory=dict)
    shared_inputs: list[SharedInput] = field(default_factory=list)

    @classmethod
    def for_sources(cls, members: list[SourceModel], options: FusionOptions) -> PassContext:
        return cls(
            options=options,
            inputs={m.name: {name: name for name in m.input_names} for m in members},
            outputs={m.name: {name: name for name in m.output_names} for m in members},
        )


@dataclass(frozen=True)
class PassOutcome:
    changed: bool
    detail: str


class FusionPass(Protocol):
    """One job on the graphs; never touches files or backends."""

    name: str

    def run(self, state: FusionState, ctx: PassContext) -> PassOutcome: ...
