"""Graph passes: each module does one job on the models under fusion (see `base.FusionPass`)."""

from fusedinf_cc.passes.base import (
    FusionOptions,
    FusionPass,
    FusionState,
    PassContext,
    PassOutcome,
    ShareSpec,
)

__all__ = [
    "FusionOptions",
    "FusionPass",
    "FusionState",
    "PassContext",
    "PassOutcome",
    "ShareSpec",
]
