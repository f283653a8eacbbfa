r"""Symbols of the symbolic layer: state blocks, parameters, time, step length, noises.

Every symbol kind is its own subclass of :class:`sympy.Symbol`, so a block ``q`` and a
parameter ``q`` are different objects to sympy and the classifier can ask "which blocks does
this expression depend on?" by type alone.

A **block** is a named part of the state (``q``, ``p``; ``x``, ``m``). At run time a block is a
tensor of any shape ``(batch, ...)``; symbolically it is one real scalar, because every
coefficient acts elementwise (scalars, or small matrices coupling whole blocks, broadcast over
the elements of the blocks).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import sympy

__all__ = [
    "LETTER",
    "Block",
    "Coefficient",
    "FieldValue",
    "NoiseSymbol",
    "Parameter",
    "Temporary",
    "blocks",
    "h",
    "parameters",
    "t",
]

_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*\Z")
#: The name of a flow, a letter of the word grammar: an upper-case ASCII letter followed by
#: optional digits (``A``, ``B``, ``O``, ``B0``, ``B1``).
LETTER = re.compile(r"[A-Z][0-9]*\Z")


def _check_name(name: str, kind: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(
            f"invalid {kind} name {name!r}: use a letter followed by letters, digits or '_'"
        )
    return name


class Block(sympy.Symbol):
    """A named state block (a tensor of any shape at run time, a real scalar symbolically)."""

    def __new__(cls, name: str, **assumptions):
        _check_name(name, "block")
        assumptions.setdefault("real", True)
        return super().__new__(cls, name, **assumptions)


class Parameter(sympy.Symbol):
    """A symbolic parameter (friction, temperature, mass, schedule constant ...).

    Its value is bound at lowering time and may be a number or a tensor that broadcasts
    against the blocks (per-particle masses, for example). Declare ``positive=True`` where it
    holds: sympy then simplifies square roots and exponentials of the derived solvers.
    """

    def __new__(cls, name: str, **assumptions):
        _check_name(name, "parameter")
        assumptions.setdefault("real", True)
        return super().__new__(cls, name, **assumptions)


class NoiseSymbol(sympy.Symbol):
    r"""A standard normal variable :math:`\xi \sim N(0, 1)`, one per element of a block."""

    def __new__(cls, name: str, **assumptions):
        assumptions.setdefault("real", True)
        return super().__new__(cls, name, **assumptions)


class FieldValue(sympy.Symbol):
    """The value of one field evaluation inside a compiled program (a tensor slot)."""

    def __new__(cls, name: str, **assumptions):
        assumptions.setdefault("real", True)
        return super().__new__(cls, name, **assumptions)


class Temporary(sympy.Symbol):
    """A temporary tensor inside a solver's update (a Runge--Kutta stage, say)."""

    def __new__(cls, name: str, **assumptions):
        assumptions.setdefault("real", True)
        return super().__new__(cls, name, **assumptions)


class Coefficient(sympy.Symbol):
    """A hoisted coefficient: a state-free quantity computed in float64 once per (slice, grid)."""

    def __new__(cls, name: str, **assumptions):
        assumptions.setdefault("real", True)
        return super().__new__(cls, name, **assumptions)


#: The time variable of every SDE. Inside a solver's update it is the start of the slice.
t = sympy.Symbol("t", real=True)
#: The length of a time slice (inside a solver) or of a whole step (in a composed word).
h = sympy.Symbol("h", positive=True)


def _split_names(names: str | Iterable[str]) -> list[str]:
    if isinstance(names, str):
        return names.replace(",", " ").split()
    return list(names)


def blocks(names: str | Iterable[str], **assumptions) -> tuple[Block, ...]:
    """Create several blocks at once: ``q, p = blocks("q p")``."""
    return tuple(Block(n, **assumptions) for n in _split_names(names))


def parameters(names: str | Iterable[str], **assumptions) -> tuple[Parameter, ...]:
    """Create several parameters at once: ``gamma, kT = parameters("gamma kT", positive=True)``."""
    return tuple(Parameter(n, **assumptions) for n in _split_names(names))
