r"""Nonlinear Langevin test problems with quadrature references: double well, Müller--Brown.

Every splitting of Langevin dynamics on a nonlinear force is inexact, so its invariant measure
is biased; the bias of a configurational average is measured against the Boltzmann average

.. math:: \langle f\rangle = \frac{\int f(q)\,e^{-U(q)/k_BT}\,dq}{\int e^{-U(q)/k_BT}\,dq},

computed here by quadrature, independently of any sampler:

* separable potentials (one coordinate at a time: the double well
  :math:`U = a(q^2-1)^2`, the quartic of :mod:`~splitsde.problems.quartic`): adaptive
  Gauss--Kronrod quadrature (``scipy.integrate.quad``, relative tolerance :math:`10^{-12}`) over
  the interval where :math:`U - U_{\min} < 800\,k_BT`;
* Müller--Brown (two coordinates): a composite Gauss--Legendre rule (``panels`` panels of 16
  nodes per axis) over a box widened until :math:`U - U_{\min} > 60\,k_BT` on its edges.

Each problem names a few observables (``"q2"``, ``"q4"``, ``"U"``, ...) with both a torch
callable for the walkers and the quadrature reference, which is what
:func:`~splitsde.analysis.montecarlo.estimate_weak_order` and the bias tables need.

References: Gauss--Kronrod quadrature, Piessens et al., *QUADPACK* (Springer 1983); the
Müller--Brown potential, Müller & Brown, Theor. Chim. Acta 53 (1979) 75.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from functools import cached_property
from typing import Any

import numpy as np
import scipy.integrate
import torch

from splitsde.langevin.dynamics import LangevinSystem, overdamped, underdamped
from splitsde.langevin.potentials import DoubleWell, MullerBrown, Potential

__all__ = [
    "BoltzmannProblem",
    "MullerBrownProblem",
    "SeparableProblem",
    "double_well",
    "muller_brown",
]

TorchObservable = Callable[[Mapping[str, torch.Tensor]], torch.Tensor]


class BoltzmannProblem:
    """A Langevin system on a potential with named observables and their Boltzmann averages.

    ``observables[name]`` is ``(torch callable on a state, numpy function of the
    configuration)``; :meth:`reference` integrates the latter against the Boltzmann density.
    """

    name = "Boltzmann problem"

    def __init__(
        self, system: LangevinSystem, kT: float, mass: float, is_underdamped: bool
    ) -> None:
        self.system = system
        self.kT, self.mass = float(kT), float(mass)
        self.underdamped = is_underdamped
        self.potential: Potential = system.potential
        self._references: dict[str, float] = {}

    @property
    def observables(self) -> dict[str, tuple[TorchObservable, Callable[..., Any]]]:
        raise NotImplementedError

    def integrator(self, word: Any, **kwargs: Any) -> Any:
        return self.system.integrator(word, **kwargs)

    def initial_state(
        self, walkers: int, generator: torch.Generator | None = None
    ) -> dict[str, torch.Tensor]:
        return self.system.initial_state(walkers, generator=generator)

    def average(self, f: Callable[..., Any]) -> float:
        """Boltzmann average of the configurational function ``f`` by quadrature."""
        raise NotImplementedError

    def observable(self, name: str) -> TorchObservable:
        """The torch callable of a named observable (``state -> (walkers, ...)``)."""
        try:
            return self.observables[name][0]
        except KeyError:
            raise ValueError(
                f"{self.name} has no observable {name!r}; choose one of "
                f"{', '.join(self.observables)}"
            ) from None

    def reference(self, name: str) -> float:
        """The Boltzmann average of a named observable (quadrature, cached)."""
        if name not in self._references:
            self.observable(name)  # validates the name
            self._references[name] = self.average(self.observables[name][1])
        return self._references[name]

    def stationary_moments_exact(self) -> dict[str, float]:
        """Every named observable's Boltzmann average (and :math:`\\langle p^2\\rangle = Mk_BT`
        for underdamped dynamics)."""
        out = {k: self.reference(k) for k in self.observables}
        if self.underdamped:
            out["p2"] = self.mass * self.kT
        return out

    def __repr__(self) -> str:
        kind = "underdamped" if self.underdamped else "overdamped"
        return f"{type(self).__name__}({self.name}, kT={self.kT}, {kind})"


class SeparableProblem(BoltzmannProblem):
    """A separable potential (each coordinate independent): 1-D adaptive quadrature.

    ``u(q)`` is the energy of one coordinate (numpy); observables act per coordinate and are
    averaged over coordinates by the estimators.
    """

    def u(self, q: np.ndarray | float) -> np.ndarray | float:
        return self.potential.u(np.asarray(q, np.float64))

    @cached_property
    def _support(self) -> tuple[float, float, float]:
        """(umin, qlo, qhi): where U - umin < 800 kT (e^-800 underflows anyway)."""
        grid = np.linspace(-50.0, 50.0, 200_001)
        u = np.asarray(self.u(grid), np.float64)
        umin = float(u.min())
        inside = np.flatnonzero(u - umin < 800.0 * self.kT)
        if inside[0] == 0 or inside[-1] == len(grid) - 1:
            raise ValueError(f"{self.name}: the potential does not confine within |q| < 50")
        return umin, float(grid[inside[0] - 1]), float(grid[inside[-1] + 1])

    def average(self, f: Callable[..., Any]) -> float:
        r"""Exact Boltzmann average of ``f(q)`` (one coordinate) by adaptive quadrature."""
        umin, lo, hi = self._support
        w = lambda q: math.exp(-(float(self.u(q)) - umin) / self.kT)  # noqa: E731
        opts = {"limit": 400, "epsabs": 1e-13, "epsrel": 1e-12}
        z = scipy.integrate.quad(w, lo, hi, **opts)[0]
        return scipy.integrate.quad(lambda q: f(q) * w(q), lo, hi, **opts)[0] / z

    @property
    def observables(self) -> dict[str, tuple[TorchObservable, Callable[..., Any]]]:
        return {
            "q": (lambda s: s["q"], lambda q: q),
            "q2": (lambda s: s["q"] ** 2, lambda q: q * q),
            "q4": (lambda s: s["q"] ** 4, lambda q: q**4),
            "U": (self._torch_energy, lambda q: float(self.u(q))),
        }

    def _torch_energy(self, s: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Potential energy per coordinate."""
        q = s["q"]
        return self.potential.energy(q.reshape(-1, 1)).reshape(q.shape)


class DoubleWellProblem(SeparableProblem):
    """Langevin dynamics on the double well :math:`U = a (q^2 - 1)^2` per coordinate."""

    name = "double well"


class MullerBrownProblem(BoltzmannProblem):
    """Langevin dynamics on the Müller--Brown potential (two coordinates per walker)."""

    name = "Müller-Brown"

    def __init__(self, *args: Any, panels: int = 32, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.panels = int(panels)

    @cached_property
    def _rule(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, float]:
        """Nodes and weights (x, wx, y, wy) of the composite Gauss--Legendre rule and umin."""
        pot = self.potential
        assert isinstance(pot, MullerBrown)
        (x0, x1), (y0, y1) = pot.bounds
        gx = np.linspace(x0 - 5.0, x1 + 5.0, 1001)
        gy = np.linspace(y0 - 5.0, y1 + 5.0, 1001)
        umin = float(pot._terms(*np.meshgrid(gx, gy, indexing="ij"), np).min())
        edge = np.linspace(0.0, 1.0, 801)

        def border(x0: float, x1: float, y0: float, y1: float) -> float:
            xs, ys = x0 + (x1 - x0) * edge, y0 + (y1 - y0) * edge
            return float(
                min(
                    pot._terms(xs, np.full_like(edge, y0), np).min(),
                    pot._terms(xs, np.full_like(edge, y1), np).min(),
                    pot._terms(np.full_like(edge, x0), ys, np).min(),
                    pot._terms(np.full_like(edge, x1), ys, np).min(),
                )
            )

        # widen the box until U on its edge is 60 kT above the minimum (e^-60: no mass left)
        for _ in range(40):
            if border(x0, x1, y0, y1) - umin >= 60.0 * self.kT:
                break
            x0, x1, y0, y1 = x0 - 0.25, x1 + 0.25, y0 - 0.25, y1 + 0.25
        else:
            raise ValueError(
                f"Müller-Brown at kT = {self.kT:g}: no box within 10 units of the minima holds "
                "all of the Boltzmann mass"
            )
        self.box = ((x0, x1), (y0, y1))
        t, w = np.polynomial.legendre.leggauss(16)

        def composite(a: float, b: float) -> tuple[np.ndarray, np.ndarray]:
            edges = np.linspace(a, b, self.panels + 1)
            half = 0.5 * np.diff(edges)[:, None]
            mid = 0.5 * (edges[1:] + edges[:-1])[:, None]
            return (mid + half * t).ravel(), (half * w).ravel()

        x, wx = composite(x0, x1)
        y, wy = composite(y0, y1)
        return x, wx, y, wy, umin

    def average(self, f: Callable[..., Any]) -> float:
        """Boltzmann average of ``f(x, y)`` (vectorised over numpy arrays)."""
        x, wx, y, wy, umin = self._rule
        X, Y = np.meshgrid(x, y, indexing="ij")
        pot = self.potential
        assert isinstance(pot, MullerBrown)
        rho = np.exp(-(pot._terms(X, Y, np) - umin) / self.kT) * np.outer(wx, wy)
        return float(np.sum(np.asarray(f(X, Y)) * rho) / np.sum(rho))

    @property
    def observables(self) -> dict[str, tuple[TorchObservable, Callable[..., Any]]]:
        pot = self.potential
        assert isinstance(pot, MullerBrown)
        return {
            "x": (lambda s: s["q"][..., 0], lambda x, y: x),
            "y": (lambda s: s["q"][..., 1], lambda x, y: y),
            "x2": (lambda s: s["q"][..., 0] ** 2, lambda x, y: x * x),
            "y2": (lambda s: s["q"][..., 1] ** 2, lambda x, y: y * y),
            "U": (lambda s: pot.energy(s["q"]), lambda x, y: pot._terms(x, y, np)),
        }


def _system(
    pot: Potential, gamma: float, kT: float, mass: float, overdamped_dynamics: bool
) -> LangevinSystem:
    if overdamped_dynamics:
        return overdamped(pot, kT=kT)
    return underdamped(pot, gamma=gamma, kT=kT, mass=mass)


def double_well(
    barrier: float = 1.0,
    *,
    gamma: float = 1.0,
    kT: float = 1.0,
    mass: float = 1.0,
    overdamped_dynamics: bool = False,
) -> DoubleWellProblem:
    """Langevin dynamics on :math:`U = a (q^2 - 1)^2` (``a = barrier``) with quadrature
    references for ``"q"``, ``"q2"``, ``"q4"`` and ``"U"``."""
    pot = DoubleWell(barrier)
    return DoubleWellProblem(
        _system(pot, gamma, kT, mass, overdamped_dynamics), kT, mass, not overdamped_dynamics
    )


def muller_brown(
    scale: float = 0.05,
    *,
    gamma: float = 1.0,
    kT: float = 1.0,
    mass: float = 1.0,
    overdamped_dynamics: bool = False,
    panels: int = 32,
) -> MullerBrownProblem:
    """Langevin dynamics on the Müller--Brown potential (scaled by ``scale``) with quadrature
    references for ``"x"``, ``"y"``, ``"x2"``, ``"y2"`` and ``"U"``."""
    pot = MullerBrown(scale)
    return MullerBrownProblem(
        _system(pot, gamma, kT, mass, overdamped_dynamics),
        kT,
        mass,
        not overdamped_dynamics,
        panels=panels,
    )
