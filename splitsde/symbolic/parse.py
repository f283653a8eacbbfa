"""Parse user text into sympy expressions without ``eval`` of arbitrary code.

The text is tokenised first; only numbers, arithmetic operators, parentheses, commas and names
from an explicit namespace (the caller's symbols plus a fixed set of elementary functions) are
accepted. Only then is it handed to :func:`sympy.parsing.sympy_parser.parse_expr` with that
namespace and no builtins.
"""

from __future__ import annotations

import io
import keyword
import tokenize
from collections.abc import Iterable

import sympy
from sympy.parsing.sympy_parser import parse_expr, standard_transformations

from splitsde.errors import SplitsdeError

__all__ = ["ExpressionError", "parse_expression"]

FUNCTIONS: dict[str, object] = {
    "exp": sympy.exp,
    "log": sympy.log,
    "sqrt": sympy.sqrt,
    "sin": sympy.sin,
    "cos": sympy.cos,
    "tan": sympy.tan,
    "tanh": sympy.tanh,
    "cosh": sympy.cosh,
    "sinh": sympy.sinh,
    "atan": sympy.atan,
    "abs": sympy.Abs,
    "pi": sympy.pi,
    "E": sympy.E,
}

_OPERATORS = {"+", "-", "*", "/", "**", "(", ")", ","}


class ExpressionError(SplitsdeError, ValueError):
    """User text that is not an acceptable expression."""


def parse_expression(text: str, symbols: Iterable[sympy.Symbol] = ()) -> sympy.Expr:
    """Parse ``text`` using only ``symbols`` (by name) and elementary functions.

    >>> from splitsde import blocks
    >>> (x,) = blocks("x")
    >>> parse_expression("(x**2 - 1)**2", [x])
    (x**2 - 1)**2
    """
    if not isinstance(text, str) or not text.strip():
        raise ExpressionError("empty expression")
    names = {str(s): s for s in symbols}
    clash = set(names) & set(FUNCTIONS)
    if clash:
        raise ExpressionError(f"symbol names {sorted(clash)} clash with function names")
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(text).readline))
    except (tokenize.TokenError, IndentationError) as exc:
        raise ExpressionError(f"cannot read {text!r}: {exc}") from exc
    for tok in tokens:
        if tok.type in (tokenize.NEWLINE, tokenize.NL, tokenize.ENDMARKER):
            continue
        if tok.type == tokenize.NUMBER:
            if tok.string.lower().endswith("j"):
                raise ExpressionError(f"complex literal {tok.string!r} is not allowed")
            continue
        if tok.type == tokenize.OP and tok.string in _OPERATORS:
            continue
        if tok.type == tokenize.NAME and not keyword.iskeyword(tok.string):
            if tok.string in names or tok.string in FUNCTIONS:
                continue
            known = ", ".join(sorted(names) + sorted(FUNCTIONS))
            raise ExpressionError(f"unknown name {tok.string!r} in {text!r}; known: {known}")
        raise ExpressionError(f"unexpected {tok.string!r} at column {tok.start[1]} in {text!r}")
    namespace: dict[str, object] = {"__builtins__": {}}
    namespace.update({"Integer": sympy.Integer, "Float": sympy.Float, "Rational": sympy.Rational})
    namespace.update({"Symbol": sympy.Symbol, "Function": sympy.Function})
    namespace.update(FUNCTIONS)
    try:
        expr = parse_expr(
            text,
            local_dict=dict(names),
            global_dict=namespace,
            transformations=standard_transformations,
        )
    except Exception as exc:  # syntax errors and the like, reported with the text
        raise ExpressionError(f"cannot parse {text!r}: {exc}") from exc
    if not isinstance(expr, sympy.Expr):
        raise ExpressionError(f"{text!r} is not a scalar expression")
    return expr
