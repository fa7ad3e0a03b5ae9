"""Layouts: which models share a bundle.

A layout names each bundle and the models it holds; a model may sit in several bundles (with
pooled weights their copies cost one). The two fixed deployments are layouts too: unfused, a
bundle per model, and fused, a bundle per function. Functions map a function's name to the
models one of its requests calls, in the order it calls them.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence

from fusedinf_cc.common.errors import UserInputError

Functions = Mapping[str, Sequence[str]]


class Layout(Mapping[str, frozenset[str]]):
    """Bundle name -> the models it holds. Immutable and hashable, so a search can judge each
    layout once."""

    __slots__ = ("_bundles", "_hash")

    def __init__(self, bundles: Mapping[str, Iterable[str]] | None = None):
        self._bundles = {name: frozenset(models) for name, models in (bundles or {}).items()}
        self._hash: int | None = None

    @classmethod
    def unfused(cls, functions: Functions) -> Layout:
        """A bundle per model the functions call, named after it."""
        return cls({model: [model] for model in used_models(functions)})

    @classmethod
    def fused(cls, functions: Functions) -> Layout:
        """A bundle per function, named after it."""
        return cls(functions)

    @classmethod
    def of_groups(cls, groups: Iterable[frozenset[str]]) -> Layout:
        """Bundles with names made up: a model alone keeps its name, groups are g00, g01, ..."""
        groups = set(groups)
        solos = sorted((g for g in groups if len(g) == 1), key=sorted)
        several = sorted((g for g in groups if len(g) > 1), key=sorted)
        named = {next(iter(g)): g for g in solos}
        named |= {f"g{index:02d}": g for index, g in enumerate(several)}
        return cls(named)

    def __getitem__(self, name: str) -> frozenset[str]:
        return self._bundles[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._bundles)

    def __len__(self) -> int:
        return len(self._bundles)

    def __hash__(self) -> int:
        if self._hash is None:
            self._hash = hash(frozenset(self._bundles.items()))
        return self._hash

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Layout):
            return self._bundles == other._bundles
        return NotImplemented

    def __repr__(self) -> str:
        return f"Layout({self.lists()})"

    @property
    def groups(self) -> frozenset[frozenset[str]]:
        """The bundles' model sets, without their names."""
        return frozenset(self._bundles.values())

    def lists(self) -> dict[str, list[str]]:
        """Each bundle's models sorted, as JSON and a bundle spec write them."""
        return {name: sorted(models) for name, models in self._bundles.items()}

    def completed(self, functions: Functions) -> Layout:
        """This layout, and a bundle of its own (named after it) for each called model in none."""
        grouped = {model for models in self._bundles.values() for model in models}
        alone = {m: [m] for m in used_models(functions) if m not in grouped}
        return Layout({**self._bundles, **alone})


def used_models(functions: Functions) -> list[str]:
    """Every model some function calls, sorted."""
    return sorted({model for models in functions.values() for model in models})


def auto_groups(functions: Functions) -> Layout:
    """Models that exactly the same functions call are always requested together: each such set
    of two or more models is one group. Fusing a group loads nothing that a request skips and
    copies no model into two bundles."""
    callers: dict[str, set[str]] = {}
    for function, used in functions.items():
        for model in used:
            callers.setdefault(model, set()).add(function)
    together: dict[frozenset[str], list[str]] = {}
    for model in sorted(callers):
        together.setdefault(frozenset(callers[model]), []).append(model)
    sets = sorted(sorted(models) for models in together.values() if len(models) > 1)
    return Layout({f"g{index:02d}": models for index, models in enumerate(sets)})


def check_groups(groups: Mapping[str, Iterable[str]], models: Iterable[str]) -> None:
    """Each group holds distinct models among `models`, and is named after none of them
    (a group of one may carry its model's name)."""
    known = set(models)
    for group, members in groups.items():
        members = list(members)
        unknown = set(members) - known
        if unknown or not members or len(set(members)) < len(members):
            raise UserInputError(
                f"--fused-groups: group {group!r} needs distinct, known models "
                f"(unknown: {sorted(unknown)})"
            )
        if group in known and members != [group]:
            raise UserInputError(f"--fused-groups: group {group!r} has a model's name")
