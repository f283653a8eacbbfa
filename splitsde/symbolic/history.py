r"""Field values from earlier steps: the history of a multistep solver.

A multistep solver (Adams--Bashforth, exponential Adams / DEIS, iPNDM) combines the value of a
field at the start of the current slice with its values at the starts of the same slice in the
previous steps:

.. math:: z_{n+1} = \Phi z_n + \sum_{j=0}^{r} C_{n,j}\, u(z_{n-j}, t_{n-j}).

In a solver's :class:`~splitsde.symbolic.update.Update` the past values are written
``Lagged(u(z, t), j)``: *the value the application* ``u(z, t)`` *had* ``j`` *steps earlier*. The
compiled program evaluates ``u(z, t)`` once per step and carries the last ``r`` values to the
next step (:attr:`splitsde.compose.program.Program.history`), so a multistep method costs one
evaluation per step. Before ``j`` steps have been taken ``Lagged(., j)`` is zero; the solver's
coefficients for unavailable lags are zero too (lower-order warm start), which its
coefficient group learns from the past slice starts it receives
(:class:`~splitsde.symbolic.update.NumericCoefficients` with ``history > 0``).

Reference: Hairer, Nørsett & Wanner, *Solving Ordinary Differential Equations I*, ch. III.1
(explicit Adams methods); Hochbruck & Ostermann, *Acta Numerica* 19 (2010), sec. 2.5
(exponential multistep methods).
"""

from __future__ import annotations

import sympy

from splitsde.symbolic.field import field_of

__all__ = ["Lagged", "lagged_applications"]


class Lagged(sympy.Function):
    """``Lagged(app, j)``: the value of the field application ``app`` ``j >= 1`` steps ago."""

    nargs = 2

    @classmethod
    def eval(cls, app, lag):
        if field_of(app) is None:
            raise TypeError(f"Lagged needs an applied field, got {app}")
        if lag.is_Number and not (lag.is_Integer and lag >= 1):
            raise ValueError(f"a lag is a positive integer number of steps, got {lag}")
        return None

    @property
    def application(self) -> sympy.Expr:
        return self.args[0]

    @property
    def lag(self) -> int:
        return int(self.args[1])

    def _eval_is_real(self):
        return True

    def _latex(self, printer):
        return printer._print(self.args[0]) + r"\big|_{n-" + printer._print(self.args[1]) + "}"


def lagged_applications(expr: sympy.Basic) -> set[Lagged]:
    """All ``Lagged`` nodes inside ``expr``."""
    return set(expr.atoms(Lagged))
