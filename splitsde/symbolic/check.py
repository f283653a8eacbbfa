"""Validation of the symbolic expressions a user builds (drifts, noises, energies, custom
updates): only blocks, parameters, ``t`` and declared fields may appear."""

from __future__ import annotations

from typing import Any

import sympy
from sympy.core.function import AppliedUndef

from splitsde.symbolic.field import field_of
from splitsde.symbolic.symbols import Block, Parameter, t

__all__ = ["check_expression"]


def check_expression(expr: Any, where: str) -> sympy.Expr:
    """Sympify ``expr`` and reject symbols that are neither blocks, parameters nor ``t``.

    Strings are refused here: parse user text with :func:`splitsde.parse_expression`, which
    uses a restricted namespace instead of ``eval``.
    """
    if isinstance(expr, str):
        raise TypeError(
            f"{where}: got the string {expr!r}; build expressions from symbols, or parse text "
            "with splitsde.parse_expression(text, symbols)"
        )
    try:
        e = sympy.sympify(expr, strict=True)
    except (sympy.SympifyError, TypeError) as exc:
        raise TypeError(f"{where}: {expr!r} is not a symbolic expression") from exc
    bad = [s for s in e.free_symbols if not (isinstance(s, Block | Parameter) or s == t)]
    if bad:
        names = ", ".join(sorted(map(str, bad)))
        raise ValueError(
            f"{where}: unknown symbol(s) {names}; declare them with splitsde.blocks(...) or "
            "splitsde.parameters(...), or use splitsde.t for time"
        )
    for app in e.atoms(AppliedUndef):
        if field_of(app) is None:
            raise ValueError(
                f"{where}: {app} is an undefined function; declare it as a splitsde.Field"
            )
    if e.has(sympy.zoo, sympy.nan, sympy.oo, -sympy.oo):
        raise ValueError(f"{where}: {e} is not finite")
    return e
