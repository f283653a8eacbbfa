"""A registry of named methods: what the method table in the docs is generated from.

Presets, solver strategies and samplers register a *describer* -- a function that builds
:class:`MethodInfo` rows from the code's own declarations (declared orders, the compiled
program's field evaluations, which sub-flows are solved exactly) when the table is made, so
the table cannot drift from the code::

    from splitsde.base.methods import MethodInfo, register_method

    def _rows():
        yield MethodInfo(name="SPS", kind="diffusion sampler", weak_order="1", ...)

    register_method("diffusion samplers", _rows)

This module imports nothing from the library, so any module can register at import time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

__all__ = ["MethodInfo", "register_method", "registered_methods"]


@dataclass(frozen=True)
class MethodInfo:
    """One row of the method table.

    Attributes
    ----------
    name:
        The method's name (``"BAOAB"``, ``"Euler-Maruyama"``).
    kind:
        ``"Langevin preset"``, ``"solver strategy"``, ``"diffusion sampler"``, ...
    weak_order:
        The declared weak order (``"exact"`` for exact solvers).
    invariant:
        What is known about its invariant measure.
    evaluations:
        Field evaluations per step (or per slice, for a sub-flow solver), from the compiled
        program or measured.
    exact_subflows:
        The sub-flows solved exactly.
    reference:
        Where the method comes from.
    """

    name: str
    kind: str
    weak_order: str
    invariant: str
    evaluations: str
    exact_subflows: str
    reference: str


_DESCRIBERS: dict[str, Callable[[], MethodInfo | Iterable[MethodInfo]]] = {}


def register_method(key: str, describe: Callable[[], MethodInfo | Iterable[MethodInfo]]) -> None:
    """Register (or replace) the describer ``key``; it is called when the table is made."""
    if not callable(describe):
        raise TypeError("describe must be a callable returning MethodInfo rows")
    _DESCRIBERS[key] = describe


def registered_methods(kind: str | None = None) -> list[MethodInfo]:
    """All rows of all registered describers (in registration order), optionally one kind."""
    rows: list[MethodInfo] = []
    for key, describe in _DESCRIBERS.items():
        out = describe()
        for row in [out] if isinstance(out, MethodInfo) else list(out):
            if not isinstance(row, MethodInfo):
                raise TypeError(f"describer {key!r} returned {type(row).__name__}, not MethodInfo")
            if kind is None or row.kind == kind:
                rows.append(row)
    return rows
