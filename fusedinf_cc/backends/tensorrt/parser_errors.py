"""TensorRT's ONNX parser errors, one per rejected node, made into a message a person can act on."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from fusedinf_cc.backends.tensorrt.names import TENSORRT
from fusedinf_cc.common.errors import FusedInfError

SHOWN_ERRORS = 5


class EngineBuildError(FusedInfError):
    """TensorRT could not parse or build the fused model (exit 2)."""


@dataclass(frozen=True)
class ParserIssue:
    """One parser error: which node (index, name, op) and why."""

    node: int
    node_name: str
    op: str
    reason: str

    @classmethod
    def from_parser_error(cls, error: Any) -> ParserIssue:
        """From a `tensorrt.ParserError` (node() is -1 when no node is to blame)."""
        desc = TENSORRT.attr(error, "ParserError.desc")()
        return cls(
            node=int(TENSORRT.attr(error, "ParserError.node")()),
            node_name=str(TENSORRT.attr(error, "ParserError.node_name")() or ""),
            op=str(TENSORRT.attr(error, "ParserError.node_operator")() or ""),
            reason=str(desc).strip().splitlines()[0] if desc else "no reason given",
        )

    def describe(self) -> str:
        if self.node < 0 and not self.node_name:
            return self.reason
        where = f"node {self.node}" if self.node >= 0 else "node"
        name = f" {self.node_name!r}" if self.node_name else ""
        op = f" ({self.op})" if self.op else ""
        return f"{where}{name}{op}: {self.reason}"


def parser_error(model_name: str, issues: Sequence[ParserIssue]) -> EngineBuildError:
    """One error naming each rejected node (the first few, then how many more)."""
    shown = "; ".join(issue.describe() for issue in issues[:SHOWN_ERRORS])
    more = f"; and {len(issues) - SHOWN_ERRORS} more" if len(issues) > SHOWN_ERRORS else ""
    return EngineBuildError(
        f"TensorRT's ONNX parser rejected {model_name}: {shown}{more} "
        "(`fusedinf-cc check --target tensorrt` lists what it does not support)"
    )
