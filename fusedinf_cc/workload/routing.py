"""Routing: which bundles, whole or by parts, one request of a function runs."""

from __future__ import annotations

from typing import NamedTuple

from fusedinf_cc.common.errors import UserInputError
from fusedinf_cc.workload.layout import Functions, Layout


class Call(NamedTuple):
    """What one request runs on one bundle: the whole (model None) or one model's part."""

    bundle: str
    model: str | None = None

    @property
    def name(self) -> str:
        """What the loader is asked for, with `bundle=`: the model, or the bundle itself."""
        return self.model or self.bundle


Routes = dict[str, list[Call]]


def route(functions: Functions, layout: Layout) -> Routes:
    """What each function's request runs, fixed ahead of time: the fewest bundles that hold
    its models, each run whole where the function uses all of it (one session) and else by
    the parts of the models it uses. Between bundles that cover as much, a whole beats parts
    and a smaller bundle a larger one."""
    holders: dict[str, list[str]] = {}
    for bundle, members in layout.items():
        for model in members:
            holders.setdefault(model, []).append(bundle)
    calls: Routes = {}
    for function, used in functions.items():
        remaining = set(used)
        chosen: list[tuple[str, set[str]]] = []
        while remaining:
            candidates = {b for model in remaining for b in holders.get(model, [])}
            if not candidates:
                raise UserInputError(
                    f"function {function!r} uses {sorted(remaining)}, which no bundle holds"
                )
            best = min(candidates, key=lambda b: _preference(layout[b], remaining, b))
            covered = set(layout[best]) & remaining
            chosen.append((best, covered))
            remaining -= covered
        order = {model: index for index, model in enumerate(used)}
        chosen.sort(key=lambda pick: min(order[m] for m in pick[1]))
        function_calls = []
        for bundle, covered in chosen:
            if covered == layout[bundle]:
                function_calls.append(Call(bundle))
            else:
                function_calls += [Call(bundle, m) for m in used if m in covered]
        calls[function] = function_calls
    return calls


def _preference(
    members: frozenset[str], remaining: set[str], name: str
) -> tuple[int, bool, int, str]:
    """How `route` ranks a bundle for the models a function still needs (least is best)."""
    return (-len(members & remaining), not members <= remaining, len(members), name)
