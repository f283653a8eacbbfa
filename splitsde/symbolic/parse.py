r"""Parse user text into sympy expressions, without ``eval`` and with bounded cost.

Text from a user (a potential ``"(q**2 - 1)**2"``, a field definition, ...) is read by a small
recursive-descent parser that builds the sympy expression itself: nothing is ever handed to
Python's ``eval``, ``exec``, :func:`sympy.sympify` or ``parse_expr``. The grammar is that of
Python arithmetic::

    expr    := term (("+" | "-") term)*
    term    := unary (("*" | "/") unary)*
    unary   := ("+" | "-") unary | power
    power   := atom ("**" unary)?              right-associative: 2**3**2 = 2**9
    atom    := number | name | name "(" expr ("," expr)* ")" | "(" expr ")"
    number  := decimal integer or decimal float (12, 0.5, 1e-3)

Names are looked up in an explicit namespace: the caller's symbols plus the elementary
functions and constants of :data:`FUNCTIONS`. Only ASCII is accepted (a ``²`` or a full-width
``ｘ`` is refused rather than silently normalised), and the cost of every result is bounded
before sympy computes it, so ``9**9**9**9`` is refused at once instead of running for ever:

* at most :data:`MAX_LENGTH` characters and :data:`MAX_DEPTH` levels of nesting;
* every number, literal or computed from numbers, lies in the float64 range
  (:math:`10^{-308} < |x| < 10^{308}`, or zero): the value is estimated *before* a power of
  numbers is evaluated;
* a numeric exponent of a non-numeric base is at most :data:`MAX_EXPONENT` in size
  (expanding :math:`(x + y + z)^{n}` creates :math:`O(n^2)` terms);
* no division by zero or other infinity survives.

Every refusal is an :class:`ExpressionError` whose message points at the offending column.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import mpmath
import sympy

from splitsde.base.caret import caret
from splitsde.base.errors import SplitsdeError

__all__ = [
    "FUNCTIONS",
    "MAX_DEPTH",
    "MAX_EXPONENT",
    "MAX_LENGTH",
    "ExpressionError",
    "as_expression",
    "parse_expression",
    "refuse_text",
]

#: Functions (one argument each) and constants that user text may use.
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
    "sign": sympy.sign,
    "erf": sympy.erf,
    "erfc": sympy.erfc,
    "pi": sympy.pi,
    "E": sympy.E,
}

#: Longest accepted text, in characters.
MAX_LENGTH = 10_000
#: Deepest accepted nesting (parentheses, signs, powers, function calls).
MAX_DEPTH = 100
#: Largest accepted size of a numeric exponent of a non-numeric base (``x**100``).
MAX_EXPONENT = 100
#: Base-10 logarithm of the largest magnitude a number may have (the float64 range).
MAX_LOG10 = 308.0

_TOKEN = re.compile(
    r"(?P<space>[ \t\r\n]+)"
    r"|(?P<number>(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)"
    r"|(?P<name>[A-Za-z_][A-Za-z0-9_]*)"
    r"|(?P<op>\*\*|[-+*/(),])"
)
_HINTS = {
    "^": "; write powers as **",
    "[": "; group with ( )",
    "{": "; group with ( )",
    "=": "; give an expression, not an equation",
    "'": "; text in quotes is not an expression",
    '"': "; text in quotes is not an expression",
    ".": "; attribute access is not allowed",
}


class ExpressionError(SplitsdeError, ValueError):
    """User text that is not an acceptable expression."""


@dataclass(frozen=True)
class _Tok:
    kind: str  # "number", "name", "op" or "end"
    text: str
    pos: int


def _tokens(text: str) -> list[_Tok]:
    out: list[_Tok] = []
    i = 0
    while i < len(text):
        c = text[i]
        if not c.isascii():
            name = unicodedata.name(c, "unnamed character")
            raise ExpressionError(
                f"character {c!r} (U+{ord(c):04X} {name}) is not allowed: expressions use "
                "ASCII letters, digits and + - * / ** ( ) ," + caret(text, i)
            )
        m = _TOKEN.match(text, i)
        if m is None:
            hint = _HINTS.get(c, "")
            raise ExpressionError(f"unexpected character {c!r}{hint}" + caret(text, i))
        if m.lastgroup != "space":
            if m.lastgroup == "number" and m.end() < len(text):
                nxt = text[m.end()]
                if nxt.isalnum() or nxt in "_.":
                    raise ExpressionError(
                        f"malformed number {text[i : m.end() + 1]!r}; write numbers like 12, "
                        "0.5 or 1e-3 and products with *" + caret(text, m.end())
                    )
            out.append(_Tok(m.lastgroup or "", m.group(), i))
        i = m.end()
    out.append(_Tok("end", "", len(text)))
    return out


def _log10_abs(x: sympy.Number) -> float:
    """:math:`\\log_{10}|x|` of a nonzero sympy number, without overflowing a float."""
    if isinstance(x, sympy.Rational):
        return math.log10(abs(x.p)) - math.log10(x.q)
    return float(mpmath.log10(abs(x)._to_mpmath(53)))


def _short(n: sympy.Number, operand: bool = False) -> str:
    """A number for a message: floats in ``%g`` form, long integers cut in the middle, and
    (as an ``operand`` of ``**``) fractions and negative numbers in parentheses."""
    shown = f"{float(n):g}" if isinstance(n, sympy.Float) else sympy.sstr(n)
    if len(shown) > 40:
        shown = f"{shown[:20]}...{shown[-10:]} ({len(shown)} characters)"
    if operand and (n.is_negative or (isinstance(n, sympy.Rational) and n.q != 1)):
        shown = f"({shown})"
    return shown


class _Parser:
    def __init__(self, text: str, names: Mapping[str, sympy.Basic]) -> None:
        self.text = text
        self.names = names
        self.toks = _tokens(text)
        self.i = 0
        self.depth = 0

    # -- helpers ------------------------------------------------------------------------------
    def error(self, message: str, pos: int) -> ExpressionError:
        return ExpressionError(message + caret(self.text, pos))

    @property
    def tok(self) -> _Tok:
        return self.toks[self.i]

    def take(self, op: str) -> bool:
        if self.tok.kind == "op" and self.tok.text == op:
            self.i += 1
            return True
        return False

    def expect(self, op: str, opened: _Tok) -> None:
        if not self.take(op):
            got = "the end" if self.tok.kind == "end" else repr(self.tok.text)
            raise self.error(
                f"expected {op!r} to close the {opened.text!r} at column {opened.pos + 1}, "
                f"found {got}",
                self.tok.pos,
            )

    def deeper(self, pos: int) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.error(f"expression nested more than {MAX_DEPTH} levels deep", pos)

    # -- grammar ------------------------------------------------------------------------------
    def parse(self) -> sympy.Expr:
        e = self.expr()
        if self.tok.kind != "end":
            raise self.error(f"unexpected {self.tok.text!r}", self.tok.pos)
        return e

    def expr(self) -> sympy.Expr:
        terms = [self.term()]
        while self.tok.kind == "op" and self.tok.text in "+-":
            sign = self.tok.text
            self.i += 1
            term = self.term()
            terms.append(-term if sign == "-" else term)
        return terms[0] if len(terms) == 1 else sympy.Add(*terms)

    def term(self) -> sympy.Expr:
        factors = [self.unary()]
        while self.tok.kind == "op" and self.tok.text in ("*", "/"):
            op = self.tok
            self.i += 1
            f = self.unary()
            if op.text == "/":
                if f.is_zero:
                    raise self.error("division by zero", op.pos)
                f = sympy.Pow(f, -1)
            factors.append(f)
        return factors[0] if len(factors) == 1 else sympy.Mul(*factors)

    def unary(self) -> sympy.Expr:
        if self.tok.kind == "op" and self.tok.text in "+-":
            op = self.tok
            self.i += 1
            self.deeper(op.pos)
            e = self.unary()
            self.depth -= 1
            return -e if op.text == "-" else e
        return self.power()

    def power(self) -> sympy.Expr:
        base = self.atom()
        if self.tok.kind == "op" and self.tok.text == "**":
            op = self.tok
            self.i += 1
            self.deeper(op.pos)
            exp = self.unary()
            self.depth -= 1
            return self.pow(base, exp, op.pos)
        return base

    def pow(self, base: sympy.Expr, exp: sympy.Expr, pos: int) -> sympy.Expr:
        if isinstance(exp, sympy.Number) and not isinstance(base, sympy.Number):
            if abs(exp) > MAX_EXPONENT:
                raise self.error(
                    f"exponent {_short(exp)} is too large: a numeric exponent of a non-numeric "
                    f"base is at most {MAX_EXPONENT} in size",
                    pos,
                )
        elif isinstance(exp, sympy.Number) and isinstance(base, sympy.Number):
            if base.is_zero:
                if exp.is_negative:
                    raise self.error("division by zero (0 to a negative power)", pos)
            else:
                size = float(exp) * _log10_abs(base)
                if abs(size) > MAX_LOG10:
                    raise self.error(
                        f"{_short(base, True)}**{_short(exp, True)} is about 10**{size:.3g}, "
                        "outside the float64 range (10**-308 to 10**308)",
                        pos,
                    )
        return sympy.Pow(base, exp)

    def atom(self) -> sympy.Expr:
        tok = self.tok
        if tok.kind == "number":
            self.i += 1
            return self.number(tok)
        if tok.kind == "name":
            self.i += 1
            return self.name(tok)
        if tok.kind == "op" and tok.text == "(":
            self.i += 1
            self.deeper(tok.pos)
            e = self.expr()
            self.expect(")", tok)
            self.depth -= 1
            return e
        if tok.kind == "end":
            raise self.error("the expression ends too early", tok.pos)
        raise self.error(f"unexpected {tok.text!r}", tok.pos)

    def number(self, tok: _Tok) -> sympy.Expr:
        d = Decimal(tok.text)
        if d != 0 and abs(d.adjusted()) > MAX_LOG10:
            raise self.error(
                f"number {tok.text[:20]}{'...' if len(tok.text) > 20 else ''} is outside the "
                "float64 range (10**-308 to 10**308)",
                tok.pos,
            )
        if re.fullmatch(r"[0-9]+", tok.text):
            return sympy.Integer(int(tok.text))
        return sympy.Float(tok.text)

    def name(self, tok: _Tok) -> sympy.Expr:
        if tok.text in self.names:
            value = self.names[tok.text]
            if self.tok.kind == "op" and self.tok.text == "(":
                raise self.error(f"{tok.text!r} is a symbol, not a function", self.tok.pos)
            return value
        fn = FUNCTIONS.get(tok.text)
        if fn is None:
            known = ", ".join(sorted(self.names) + sorted(FUNCTIONS))
            raise self.error(f"unknown name {tok.text!r}; known: {known}", tok.pos)
        if not callable(fn):  # a constant: pi, E
            return fn  # type: ignore[return-value]
        if not (self.tok.kind == "op" and self.tok.text == "("):
            raise self.error(f"function {tok.text!r} needs an argument: {tok.text}(...)", tok.pos)
        opened = self.tok
        self.i += 1
        self.deeper(opened.pos)
        args = [self.expr()]
        while self.take(","):
            args.append(self.expr())
        self.expect(")", opened)
        self.depth -= 1
        if len(args) != 1:
            raise self.error(
                f"function {tok.text!r} takes 1 argument, got {len(args)}", opened.pos
            )
        return fn(*args)  # type: ignore[operator]


def _check_numbers(expr: sympy.Expr, text: str) -> None:
    if expr.has(sympy.zoo, sympy.nan, sympy.oo, -sympy.oo):
        raise ExpressionError(f"{text!r} is not finite (a division by zero?)")
    if expr.has(sympy.I) or any(
        p.is_number and p.is_real is False for p in expr.atoms(sympy.Pow, sympy.Function)
    ):
        raise ExpressionError(f"{text!r} is not real: it evaluates to {sympy.sstr(expr)}")
    for n in expr.atoms(sympy.Number):
        if not n.is_zero and abs(_log10_abs(n)) > MAX_LOG10:
            raise ExpressionError(
                f"{text!r}: the number {_short(n)} is outside the float64 range "
                "(10**-308 to 10**308)"
            )


def parse_expression(text: str, symbols: Iterable[sympy.Symbol] = ()) -> sympy.Expr:
    """Parse ``text`` using only ``symbols`` (by name) and the elementary functions.

    >>> from splitsde import blocks
    >>> (x,) = blocks("x")
    >>> parse_expression("(x**2 - 1)**2", [x])
    (x**2 - 1)**2
    >>> print(parse_expression("2**3**2"), parse_expression("-2**2"))
    512 -4
    >>> parse_expression("9**9**9**9")  # refused before sympy computes 9**387420489
    Traceback (most recent call last):
    ...
    splitsde.symbolic.parse.ExpressionError: 9**387420489 is about 10**3.7e+08, outside ...
    """
    if not isinstance(text, str):
        raise ExpressionError(f"an expression must be a string, got {type(text).__name__}")
    if not text.strip():
        raise ExpressionError("empty expression")
    if len(text) > MAX_LENGTH:
        raise ExpressionError(
            f"expression of {len(text)} characters is too long (at most {MAX_LENGTH})"
        )
    names: dict[str, sympy.Basic] = {}
    for s in symbols:
        if not isinstance(s, sympy.Symbol):
            raise ExpressionError(f"symbols must be sympy symbols, got {s!r}")
        names[s.name] = s
    clash = set(names) & set(FUNCTIONS)
    if clash:
        raise ExpressionError(f"symbol names {sorted(clash)} clash with function names")
    expr = _Parser(text, names).parse()
    if not isinstance(expr, sympy.Expr):
        raise ExpressionError(f"{text!r} is not a scalar expression")
    _check_numbers(expr, text)
    return expr


def as_expression(
    value: Any,
    where: str,
    symbols: Iterable[sympy.Symbol] | None = None,
    error: Callable[[str], Exception] = ExpressionError,
) -> sympy.Expr:
    """``value`` as a sympy expression, for every place that accepts an expression.

    Numbers and sympy objects are converted with ``sympify(strict=True)``, which never parses
    text. A string is parsed by :func:`parse_expression` in the namespace ``symbols`` when the
    caller has one, and refused otherwise. ``where`` names the argument in messages; ``error``
    is the error type of the caller.
    """
    if isinstance(value, str):
        if symbols is None:
            raise error(
                f"{where}: got the string {value!r}; build expressions from symbols, or parse "
                "text with splitsde.parse_expression(text, symbols)"
            )
        try:
            return parse_expression(value, symbols)
        except ExpressionError as exc:
            raise error(f"{where}: {exc}") from None
    try:
        e = sympy.sympify(value, strict=True)
    except (sympy.SympifyError, TypeError, ValueError) as exc:
        raise error(f"{where}: {value!r} is not a symbolic expression") from exc
    if not isinstance(e, sympy.Expr):
        raise error(f"{where}: {value!r} is not a scalar expression")
    return e


def refuse_text(
    value: Any, where: str, error: Callable[[str], Exception] = ExpressionError
) -> None:
    """Raise ``error`` if ``value`` is, or holds (in nested lists, tuples, arrays or mapping
    values), a string: for arguments such as matrices that sympy would otherwise sympify --
    that is, ``eval`` -- entry by entry."""
    if isinstance(value, str | bytes):
        raise error(
            f"{where}: got the string {value!r}; build expressions from symbols, or parse "
            "text with splitsde.parse_expression(text, symbols)"
        )
    if isinstance(value, sympy.Basic):
        return
    if isinstance(value, Mapping):
        value = list(value.values())
    if hasattr(value, "tolist") and not isinstance(value, sympy.Basic):
        value = value.tolist()
    if isinstance(value, list | tuple):
        for v in value:
            refuse_text(v, where, error)
