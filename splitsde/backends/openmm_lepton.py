"""sympy expressions printed in OpenMM's Lepton expression language.

Lepton writes powers with ``^``, has ``sqrt``, ``exp``, ``select`` and no named constants; every
number is printed as a double so that no integer division can occur.
"""

from __future__ import annotations

import sympy
from sympy.printing.str import StrPrinter

from splitsde.symbolic.spellings import lepton_call

__all__ = ["lepton"]


class _LeptonPrinter(StrPrinter):
    """sympy -> Lepton (``^`` powers, doubles everywhere)."""

    def _print_Pow(self, expr: sympy.Pow, rational: bool = False) -> str:
        b, e = expr.args
        if e == sympy.Rational(1, 2):
            return f"sqrt({self._print(b)})"
        if e == -1:
            return f"1/({self._print(b)})"
        if e == sympy.Rational(-1, 2):
            return f"1/sqrt({self._print(b)})"
        base = self._print(b) if b.is_Symbol else f"({self._print(b)})"
        return (
            f"{base}^{self._print(e)}" if e.is_Integer and e > 0 else f"{base}^({self._print(e)})"
        )

    def _print_Rational(self, expr: sympy.Rational) -> str:
        return repr(float(expr))

    def _print_Integer(self, expr: sympy.Integer) -> str:
        return str(int(expr))

    def _print_Float(self, expr: sympy.Float) -> str:
        return repr(float(expr))

    def _print_Function(self, expr: sympy.Expr) -> str:
        # elementary functions (phi1 included) from the one table of spellings
        return lepton_call(type(expr).__name__, [self._print(a) for a in expr.args])

    def _print_Exp1(self, expr: sympy.Expr) -> str:
        return "exp(1)"

    def _print_Pi(self, expr: sympy.Expr) -> str:
        return repr(float(sympy.pi))


def lepton(e: sympy.Expr) -> str:
    """``e`` as a Lepton expression string."""
    return _LeptonPrinter().doprint(e)
