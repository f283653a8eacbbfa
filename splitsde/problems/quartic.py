r"""A quartic potential :math:`U(q) = a q^4/4 + b q^2/2` with quadrature references.

The Boltzmann averages :math:`\langle f(q)\rangle = \int f e^{-U/k_BT} / \int e^{-U/k_BT}`
are computed by adaptive quadrature (:class:`~splitsde.problems.boltzmann.SeparableProblem`):
the reference for Monte Carlo weak-order estimation of nonlinear problems (the force
:math:`-a q^3 - b q` makes every splitting inexact).
"""

from __future__ import annotations

import numpy as np
import sympy
import torch

from splitsde.langevin.dynamics import LangevinSystem, overdamped, underdamped
from splitsde.langevin.potentials import SympyPotential
from splitsde.problems.boltzmann import SeparableProblem

__all__ = ["QuarticProblem", "quartic"]


class QuarticProblem(SeparableProblem):
    """A Langevin system on the quartic potential and its exact (quadrature) averages."""

    name = "quartic"

    def __init__(
        self,
        system: LangevinSystem,
        a: float,
        b: float,
        kT: float,
        mass: float,
        is_underdamped: bool,
    ) -> None:
        super().__init__(system, kT, mass, is_underdamped)
        self.a, self.b = a, b

    def u(self, q: np.ndarray | float) -> np.ndarray | float:
        return self.a * q**4 / 4 + self.b * q**2 / 2

    def initial_state(
        self, walkers: int, generator: torch.Generator | None = None
    ) -> dict[str, torch.Tensor]:
        return self.system.initial_state(walkers, generator=generator)

    def __repr__(self) -> str:
        kind = "underdamped" if self.underdamped else "overdamped"
        return f"QuarticProblem(a={self.a}, b={self.b}, kT={self.kT}, {kind})"


def quartic(
    a: float = 1.0,
    b: float = 0.0,
    *,
    gamma: float = 1.0,
    kT: float = 1.0,
    mass: float = 1.0,
    overdamped_dynamics: bool = False,
) -> QuarticProblem:
    """Langevin dynamics on :math:`U = a q^4/4 + b q^2/2` (``a > 0``)."""
    if not a > 0:
        raise ValueError(f"a must be positive (a confining quartic), got {a}")
    q = sympy.Symbol("q", real=True)
    expr = sympy.nsimplify(a) * q**4 / 4 + sympy.nsimplify(b) * q**2 / 2
    pot = SympyPotential(expr, name="quartic")
    if overdamped_dynamics:
        system = overdamped(pot, kT=kT)
    else:
        system = underdamped(pot, gamma=gamma, kT=kT, mass=mass)
    return QuarticProblem(
        system, float(a), float(b), float(kT), float(mass), not overdamped_dynamics
    )
