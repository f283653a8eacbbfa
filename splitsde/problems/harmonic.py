r"""The harmonic oscillator, underdamped and overdamped, built on :mod:`splitsde.langevin`.

Underdamped (:math:`U = \omega^2 q^2/2`, letters A, B, O as in :mod:`splitsde.langevin`):

.. math:: dq = p/M\,dt, \qquad dp = -\omega^2 q\,dt - \gamma p\,dt + \sqrt{2\gamma k_BT M}\,dW,

stationary law :math:`q \sim N(0, k_BT/\omega^2)`, :math:`p \sim N(0, M k_BT)`, independent.
Overdamped: :math:`dq = -\omega^2 q\,dt + \sqrt{2k_BT}\,dW` (letters B, O; ``"BO"`` is
Euler--Maruyama), stationary :math:`N(0, k_BT/\omega^2)`.

The force field carries the symbolic definition :math:`F(q) = -\omega^2 q` with
:math:`\omega` a parameter, so the symbolic analysis keeps :math:`\omega` as a symbol and the
torch force is lowered from the same definition.
"""

from __future__ import annotations

from typing import Any

import sympy

from splitsde.langevin.dynamics import LangevinSystem, overdamped, underdamped
from splitsde.langevin.potentials import Harmonic
from splitsde.problems.linear import LinearProblem
from splitsde.symbolic.symbols import Parameter

__all__ = [
    "HarmonicProblem",
    "ParametricHarmonic",
    "harmonic",
    "harmonic_potential",
    "overdamped_harmonic",
]

OMEGA = Parameter("omega", positive=True)


class ParametricHarmonic(Harmonic):
    """A harmonic potential whose symbolic force keeps :math:`\\omega` as a parameter."""

    def symbolic_force(self) -> sympy.Expr:
        (q,) = super().symbolic_force().free_symbols
        return -(OMEGA**2) * q


def harmonic_potential(omega: float = 1.0) -> ParametricHarmonic:
    """A harmonic potential whose symbolic force is :math:`-\\omega^2 q` with the parameter
    ``omega`` (bind its value as the system parameter ``omega``)."""
    return ParametricHarmonic(omega)


class HarmonicProblem(LinearProblem):
    """A harmonic oscillator with named exact moments (``q2``, ``p2``, ``qp``)."""

    underdamped: bool

    def moments(self, mean: Any, cov: Any) -> dict[str, float]:
        """Second moments :math:`E[q^2], E[p^2], E[qp]` of a law on the flat state."""
        import numpy as np

        m = np.asarray(mean, np.float64).reshape(-1)
        S = np.asarray(cov, np.float64) + np.outer(m, m)
        if not self.underdamped:
            return {"q2": float(S[0, 0])}
        return {"q2": float(S[0, 0]), "p2": float(S[1, 1]), "qp": float(S[0, 1])}

    def stationary_moments_exact(self) -> dict[str, float]:
        """The SDE's stationary second moments (closed form)."""
        return {
            k: float(v.xreplace(self.symbol_values)) for k, v in self.stationary_formulas().items()
        }

    def stationary_formulas(self) -> dict[str, sympy.Expr]:
        """The SDE's stationary second moments as formulas in the parameters."""
        P = {p.name: p for p in self.sde.parameters}
        kT = P["kT"]
        if not self.underdamped:
            return {"q2": kT / OMEGA**2}
        M = P["M"]
        return {"q2": kT / OMEGA**2, "p2": M * kT, "qp": sympy.Integer(0)}


def harmonic(
    omega: float = 1.0, gamma: float = 1.0, kT: float = 1.0, mass: float = 1.0
) -> HarmonicProblem:
    """The underdamped harmonic oscillator (blocks ``q``, ``p``; letters ``A``, ``B``, ``O``)."""
    if not omega > 0:
        raise ValueError(f"omega must be positive, got {omega}")
    base = underdamped(ParametricHarmonic(omega), gamma=gamma, kT=kT, mass=mass)
    params = {**base.params, "omega": float(omega)}
    # no torch callable: the force is lowered from its definition (one source of truth)
    system = LangevinSystem(
        base.sde,
        params,
        {},
        base.potentials,
        kT,
        mass,
        True,
        f"harmonic oscillator (omega={omega:g})",
    )
    P = {p.name: p for p in base.sde.parameters}
    M, g, T = P["M"], P["gamma"], P["kT"]
    A = sympy.Matrix([[0, 1 / M], [-(OMEGA**2), -g]])
    K = sympy.diag(0, 2 * g * T * M)
    prob = HarmonicProblem("harmonic oscillator", system, A, sympy.zeros(2, 1), K)
    prob.underdamped = True
    return prob


def overdamped_harmonic(omega: float = 1.0, kT: float = 1.0) -> HarmonicProblem:
    """The overdamped harmonic oscillator (block ``q``; letters ``B`` drift, ``O`` noise)."""
    if not omega > 0:
        raise ValueError(f"omega must be positive, got {omega}")
    base = overdamped(ParametricHarmonic(omega), kT=kT)
    params = {**base.params, "omega": float(omega)}
    system = LangevinSystem(
        base.sde,
        params,
        {},
        base.potentials,
        kT,
        1.0,
        False,
        f"overdamped harmonic oscillator (omega={omega:g})",
    )
    T = {p.name: p for p in base.sde.parameters}["kT"]
    prob = HarmonicProblem(
        "overdamped harmonic oscillator",
        system,
        sympy.Matrix([[-(OMEGA**2)]]),
        sympy.zeros(1, 1),
        sympy.Matrix([[2 * T]]),
    )
    prob.underdamped = False
    return prob
