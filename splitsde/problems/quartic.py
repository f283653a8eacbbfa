r"""A quartic potential :math:`U(q) = a q^4/4 + b q^2/2` with quadrature references.

The Boltzmann averages :math:`\langle f(q)\rangle = \int f e^{-U/k_BT} / \int e^{-U/k_BT}`
are computed by adaptive quadrature (``scipy.integrate.quad``, relative tolerance
:math:`10^{-12}`): the reference for Monte Carlo weak-order estimation of nonlinear problems
(the force :math:`-a q^3 - b q` makes every splitting inexact).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import scipy.integrate
import sympy
import torch

from splitsde.langevin.dynamics import LangevinSystem, overdamped, underdamped
from splitsde.langevin.potentials import SympyPotential

__all__ = ["QuarticProblem", "quartic"]


class QuarticProblem:
    """A Langevin system on the quartic potential and its exact (quadrature) averages."""

    def __init__(
        self,
        system: LangevinSystem,
        a: float,
        b: float,
        kT: float,
        mass: float,
        is_underdamped: bool,
    ) -> None:
        self.system = system
        self.a, self.b, self.kT, self.mass = a, b, kT, mass
        self.underdamped = is_underdamped
        self.potential = system.potential

    def integrator(self, word: Any, **kwargs: Any) -> Any:
        return self.system.integrator(word, **kwargs)

    def u(self, q: np.ndarray | float) -> np.ndarray | float:
        return self.a * q**4 / 4 + self.b * q**2 / 2

    def average(self, f: Callable[[float], float]) -> float:
        r"""Exact Boltzmann average of ``f(q)`` (one coordinate) by adaptive quadrature."""
        # the density is negligible where U/kT > 800 (e^-800 underflows anyway)
        umax = 800.0 * self.kT
        qmax = (4 * umax / self.a) ** 0.25 if self.a > 0 else math.sqrt(2 * umax / self.b)
        umin = min(0.0, -(self.b**2) / (4 * self.a)) if self.a > 0 else 0.0
        w = lambda q: math.exp(-(self.u(q) - umin) / self.kT)  # noqa: E731
        opts = {"limit": 400, "epsabs": 0.0, "epsrel": 1e-12}
        z = scipy.integrate.quad(w, -qmax, qmax, **opts)[0]
        return scipy.integrate.quad(lambda q: f(q) * w(q), -qmax, qmax, **opts)[0] / z

    def stationary_moments_exact(self) -> dict[str, float]:
        """:math:`\\langle q^2\\rangle`, :math:`\\langle q^4\\rangle` (quadrature) and
        :math:`\\langle p^2\\rangle = M k_BT` (underdamped)."""
        out = {"q2": self.average(lambda q: q * q), "q4": self.average(lambda q: q**4)}
        if self.underdamped:
            out["p2"] = self.mass * self.kT
        return out

    def initial_state(self, walkers: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
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
