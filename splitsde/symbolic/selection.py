r"""Per-walker random selections inside a solver's update.

Randomized solvers (the Poisson midpoint method) choose, independently for every walker, which
of several candidate points to evaluate a field at. Two symbolic pieces express this:

* ``Indicator(u, lo, hi)`` -- :math:`\mathbf 1[\mathrm{lo} \le u < \mathrm{hi}]` for a uniform
  draw :math:`u` (a :class:`~splitsde.symbolic.symbols.NoiseSymbol` declared with
  ``NoiseSpec(..., kind="uniform")``, one number per walker);
* ``Selected(F(args), u, lo, hi)`` -- the field application evaluated **only for the walkers
  with** :math:`\mathrm{lo} \le u < \mathrm{hi}`, zero for the others. The compiled program
  calls the field once on the selected walkers (and not at all when none is selected); the
  expected number of evaluations per walker is :math:`\mathrm{hi} - \mathrm{lo}`, which is what
  :meth:`~splitsde.compose.program.Program.evaluations_per_step` reports.

Uniform draws come from the run's noise source in program order (architecture rule 3), so a
seed reproduces the selections bit for bit.
"""

from __future__ import annotations

import sympy

from splitsde.symbolic.field import field_of
from splitsde.symbolic.symbols import NoiseSymbol

__all__ = ["Indicator", "Selected", "selected_applications"]


def _check_bounds(u: sympy.Expr, lo: sympy.Expr, hi: sympy.Expr, what: str) -> None:
    if not isinstance(u, NoiseSymbol):
        raise TypeError(f"{what} needs a uniform noise symbol, got {u}")
    if lo.is_Number and hi.is_Number and not (0 <= lo < hi <= 1):
        raise ValueError(f"{what}: need 0 <= lo < hi <= 1, got [{lo}, {hi})")


class Indicator(sympy.Function):
    r"""``Indicator(u, lo, hi)`` :math:`= \mathbf 1[\mathrm{lo} \le u < \mathrm{hi}]` per walker."""

    nargs = 3

    @classmethod
    def eval(cls, u, lo, hi):
        _check_bounds(u, lo, hi, "Indicator")
        return None

    def _eval_is_real(self):
        return True

    def _latex(self, printer):
        u, lo, hi = (printer._print(a) for a in self.args)
        return rf"\mathbf{{1}}[{lo} \le {u} < {hi}]"


class Selected(sympy.Function):
    """``Selected(F(args), u, lo, hi)``: ``F(args)`` for walkers with ``lo <= u < hi``, else 0."""

    nargs = 4

    @classmethod
    def eval(cls, app, u, lo, hi):
        if field_of(app) is None:
            raise TypeError(f"Selected needs an applied field, got {app}")
        _check_bounds(u, lo, hi, "Selected")
        return None

    @property
    def application(self) -> sympy.Expr:
        return self.args[0]

    @property
    def mask(self) -> tuple[sympy.Expr, sympy.Expr, sympy.Expr]:
        return self.args[1], self.args[2], self.args[3]

    def _eval_is_real(self):
        return True


def selected_applications(expr: sympy.Basic) -> set[Selected]:
    """All ``Selected`` nodes inside ``expr``."""
    return set(expr.atoms(Selected))
