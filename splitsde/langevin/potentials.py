r"""Potentials for Langevin sampling, with forces and exact Boltzmann statistics.

A potential acts on configurations ``q`` of shape ``(walkers, *event_shape)``. Separable
potentials (harmonic, double well) act on every coordinate independently; Müller--Brown acts
on the last axis of size 2. Forces are analytic where written out, otherwise by autograd
(:class:`TorchPotential`) or by sympy differentiation (:class:`SympyPotential`).

Exact statistics of the Boltzmann density :math:`\rho(q) \propto e^{-U(q)/kT}` come from
closed forms (harmonic) or adaptive quadrature (double well, Müller--Brown) -- independent
references for the samplers.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import cache
from typing import Any

import numpy as np
import scipy.integrate
import scipy.optimize
import sympy
import torch

from splitsde.base.errors import SplitsdeError
from splitsde.symbolic.parse import as_expression, parse_expression
from splitsde.symbolic.spellings import lambdify as spell_lambdify

__all__ = [
    "DoubleWell",
    "Harmonic",
    "MullerBrown",
    "Potential",
    "PotentialError",
    "SympyPotential",
    "TorchPotential",
]


def _autograd_force(
    energy: Callable[[torch.Tensor], torch.Tensor], q: torch.Tensor
) -> torch.Tensor:
    with torch.enable_grad():
        x = q.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(energy(x).sum(), x)
    return -g


class Potential:
    """Base class: ``energy(q)`` per walker, ``force(q) = -grad U`` (autograd by default)."""

    #: Shape of one configuration (per walker) when the potential fixes it, e.g. ``(2,)``.
    event_shape: tuple[int, ...] | None = None
    #: Whether the potential acts on each coordinate independently (1-D statistics apply).
    separable: bool = False
    name: str = "potential"

    def energy(self, q: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def force(self, q: torch.Tensor) -> torch.Tensor:
        return _autograd_force(self.energy, q)

    def laplacian(self, q: torch.Tensor) -> torch.Tensor:
        r""":math:`\Delta U` per walker (exact, by autograd over the coordinates)."""
        with torch.enable_grad():
            x = q.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(self.energy(x).sum(), x, create_graph=True)
            flat = g.reshape(g.shape[0], -1)
            lap = torch.zeros(g.shape[0], dtype=g.dtype, device=g.device)
            for i in range(flat.shape[1]):
                (gi,) = torch.autograd.grad(flat[:, i].sum(), x, retain_graph=True)
                lap = lap + gi.reshape(g.shape[0], -1)[:, i]
        return lap.detach()

    def symbolic_force(self) -> sympy.Expr | None:
        """The force as a sympy expression in the block symbol ``q`` (elementwise), if known."""
        return None

    def moments(self, kT: float) -> dict[str, np.ndarray]:
        """Exact Boltzmann mean and variance per coordinate (``mean``, ``var``)."""
        raise NotImplementedError(f"{self.name}: no exact moments")

    def density(self, x: np.ndarray, kT: float) -> np.ndarray:
        """Normalised 1-D Boltzmann density of one coordinate (separable potentials)."""
        raise NotImplementedError(f"{self.name}: no 1-D density")

    def initial(self, shape: tuple[int, ...], dtype: torch.dtype, device: Any) -> torch.Tensor:
        return torch.zeros(shape, dtype=dtype, device=device)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class _Separable1D(Potential):
    separable = True

    def u(self, x: np.ndarray) -> np.ndarray:  # numpy energy of one coordinate
        raise NotImplementedError

    def _quad(self, kT: float) -> tuple[float, float]:
        return _separable_moments(self, kT)

    def moments(self, kT: float) -> dict[str, np.ndarray]:
        mean, var = self._quad(kT)
        return {"mean": np.array(mean), "var": np.array(var)}

    def density(self, x: np.ndarray, kT: float) -> np.ndarray:
        z = _partition(self, kT)
        return np.exp(-(self.u(np.asarray(x)) - self._umin) / kT) / z

    _umin = 0.0
    _support = 10.0


@cache
def _window(pot: _Separable1D, kT: float) -> tuple[float, list[float]]:
    """Half-width ``L`` of the quadrature range and the energy minima inside it.

    The range grows from the potential's support until the energy at both ends is ``60 kT``
    above the minimum (a hot system spreads beyond the support); the minima within ``60 kT``
    of the lowest are given to ``quad`` as break points, since at small ``kT`` the weight is a
    peak narrower than its first subdivision.
    """
    L = pot._support
    for _ in range(64):
        if np.all(pot.u(np.array([-L, L])) - pot._umin > 60 * kT):
            break
        L *= 2
    xs = np.linspace(-L, L, 20001)
    u = pot.u(xs)
    mid = u[1:-1]
    low = (mid <= u[:-2]) & (mid <= u[2:]) & (mid - u.min() < 60 * kT)
    dx = xs[1] - xs[0]
    points: list[float] = []
    for x in xs[1:-1][low][:20]:
        p = scipy.optimize.minimize_scalar(
            lambda v: float(pot.u(np.array(v))),
            bounds=(x - dx, x + dx),
            method="bounded",
            options={"xatol": 1e-12},
        ).x
        # break points at multiples of the peak's width sqrt(kT / U''(p)), so that quad
        # resolves a peak much narrower than the range
        d = 1e-4 * max(1.0, abs(p))
        curv = float(pot.u(np.array(p + d)) + pot.u(np.array(p - d)) - 2 * pot.u(np.array(p)))
        width = math.sqrt(kT * d * d / curv) if curv > 0 else dx
        for k in (0.0, 1.0, -1.0, 4.0, -4.0, 12.0, -12.0):
            if abs(p + k * width) < L:
                points.append(float(p + k * width))
    points = sorted(set(points))
    return L, points


def _boltzmann_quad(pot: _Separable1D, kT: float, g: Callable[[float], float]) -> float:
    L, points = _window(pot, kT)
    f = lambda x: g(x) * math.exp(-(float(pot.u(np.array(x))) - pot._umin) / kT)  # noqa: E731
    # absolute tolerance on the scale of the range: the first moment of a symmetric well is 0
    return scipy.integrate.quad(
        f, -L, L, points=points or None, limit=200, epsabs=1e-13 * L, epsrel=1e-12
    )[0]


@cache
def _partition(pot: _Separable1D, kT: float) -> float:
    return _boltzmann_quad(pot, kT, lambda x: 1.0)


@cache
def _separable_moments(pot: _Separable1D, kT: float) -> tuple[float, float]:
    z = _partition(pot, kT)
    m1 = _boltzmann_quad(pot, kT, lambda x: x) / z
    m2 = _boltzmann_quad(pot, kT, lambda x: x * x) / z
    return m1, m2 - m1 * m1


class Harmonic(_Separable1D):
    r"""Harmonic potential :math:`U = \sum_i \omega^2 q_i^2 / 2` (per coordinate)."""

    name = "harmonic"

    def __init__(self, omega: float = 1.0) -> None:
        if not omega > 0:
            raise ValueError(f"omega must be positive, got {omega}")
        self.omega = float(omega)
        self._support = 40.0 / self.omega

    def u(self, x: np.ndarray) -> np.ndarray:
        return 0.5 * self.omega**2 * x * x

    def energy(self, q: torch.Tensor) -> torch.Tensor:
        return 0.5 * self.omega**2 * (q * q).reshape(q.shape[0], -1).sum(-1)

    def force(self, q: torch.Tensor) -> torch.Tensor:
        return q * (-(self.omega**2))

    def laplacian(self, q: torch.Tensor) -> torch.Tensor:
        n = q[0].numel()
        return torch.full((q.shape[0],), self.omega**2 * n, dtype=q.dtype, device=q.device)

    def symbolic_force(self) -> sympy.Expr:
        return -(sympy.Float(self.omega) ** 2) * _Q

    def moments(self, kT: float) -> dict[str, np.ndarray]:
        return {"mean": np.array(0.0), "var": np.array(kT / self.omega**2)}

    def density(self, x: np.ndarray, kT: float) -> np.ndarray:
        var = kT / self.omega**2
        return np.exp(-0.5 * np.asarray(x) ** 2 / var) / math.sqrt(2 * math.pi * var)

    def __repr__(self) -> str:
        return f"Harmonic(omega={self.omega})"


class DoubleWell(_Separable1D):
    r"""Double well :math:`U = \sum_i a (q_i^2 - 1)^2` with minima at :math:`\pm 1` and
    barrier height :math:`a` (per coordinate)."""

    name = "double-well"

    def __init__(self, barrier: float = 1.0) -> None:
        if not barrier > 0:
            raise ValueError(f"barrier must be positive, got {barrier}")
        self.barrier = float(barrier)
        self._support = 6.0

    def u(self, x: np.ndarray) -> np.ndarray:
        return self.barrier * (x * x - 1.0) ** 2

    def energy(self, q: torch.Tensor) -> torch.Tensor:
        return (self.barrier * (q * q - 1.0) ** 2).reshape(q.shape[0], -1).sum(-1)

    def force(self, q: torch.Tensor) -> torch.Tensor:
        return q * (q * q - 1.0) * (-4.0 * self.barrier)

    def laplacian(self, q: torch.Tensor) -> torch.Tensor:
        return (self.barrier * (12.0 * q * q - 4.0)).reshape(q.shape[0], -1).sum(-1)

    def symbolic_force(self) -> sympy.Expr:
        return -4 * sympy.Float(self.barrier) * _Q * (_Q**2 - 1)

    def initial(self, shape: tuple[int, ...], dtype: torch.dtype, device: Any) -> torch.Tensor:
        return torch.ones(shape, dtype=dtype, device=device)

    def __repr__(self) -> str:
        return f"DoubleWell(barrier={self.barrier})"


_Q = sympy.Symbol("q", real=True)


class MullerBrown(Potential):
    """The Müller--Brown potential on the last axis (size 2), scaled by ``scale``.

    Müller & Brown, Theor. Chim. Acta 53 (1979) 75. The default ``scale = 0.05`` brings the
    barriers to a few kT at kT = 1.
    """

    name = "muller-brown"
    event_shape = (2,)
    A = (-200.0, -100.0, -170.0, 15.0)
    a = (-1.0, -1.0, -6.5, 0.7)
    b = (0.0, 0.0, 11.0, 0.6)
    c = (-10.0, -10.0, -6.5, 0.7)
    x0 = (1.0, 0.0, -0.5, -1.0)
    y0 = (0.0, 0.5, 1.5, 1.0)
    # region containing essentially all Boltzmann mass at kT ~ 1 with scale 0.05
    bounds = ((-2.5, 1.5), (-1.0, 3.0))

    def __init__(self, scale: float = 0.05) -> None:
        self.scale = float(scale)

    def _terms(self, x: Any, y: Any, lib: Any) -> Any:
        total = 0.0
        for A, a, b, c, x0, y0 in zip(self.A, self.a, self.b, self.c, self.x0, self.y0):
            dx, dy = x - x0, y - y0
            total = total + A * lib.exp(a * dx * dx + b * dx * dy + c * dy * dy)
        return self.scale * total

    def energy(self, q: torch.Tensor) -> torch.Tensor:
        if q.shape[-1] != 2:
            raise ValueError(
                f"Müller-Brown needs a last axis of size 2, got shape {tuple(q.shape)}"
            )
        e = self._terms(q[..., 0], q[..., 1], torch)
        return e.reshape(q.shape[0], -1).sum(-1)

    def u(self, x: float, y: float) -> float:
        return float(self._terms(x, y, np))

    def moments(self, kT: float) -> dict[str, np.ndarray]:
        return _mb_moments(self.scale, kT)

    def initial(self, shape: tuple[int, ...], dtype: torch.dtype, device: Any) -> torch.Tensor:
        q = torch.zeros(shape, dtype=dtype, device=device)
        q[..., 0] = -0.558
        q[..., 1] = 1.442
        return q

    def __repr__(self) -> str:
        return f"MullerBrown(scale={self.scale})"


@cache
def _mb_moments(scale: float, kT: float) -> dict[str, np.ndarray]:
    pot = MullerBrown(scale)
    (x0, x1), (y0, y1) = pot.bounds
    x = np.linspace(x0, x1, 1601)
    y = np.linspace(y0, y1, 1601)
    X, Y = np.meshgrid(x, y, indexing="ij")
    U = pot._terms(X, Y, np)
    w = np.exp(-(U - U.min()) / kT)
    z = scipy.integrate.simpson(scipy.integrate.simpson(w, x=y, axis=1), x=x)
    mx = scipy.integrate.simpson(scipy.integrate.simpson(w * X, x=y, axis=1), x=x) / z
    my = scipy.integrate.simpson(scipy.integrate.simpson(w * Y, x=y, axis=1), x=x) / z
    vx = scipy.integrate.simpson(scipy.integrate.simpson(w * (X - mx) ** 2, x=y, axis=1), x=x) / z
    vy = scipy.integrate.simpson(scipy.integrate.simpson(w * (Y - my) ** 2, x=y, axis=1), x=x) / z
    return {"mean": np.array([mx, my]), "var": np.array([vx, vy])}


class PotentialError(SplitsdeError, ValueError):
    """A potential that cannot be used as given (wrong event shape, wrong output shape)."""


class TorchPotential(Potential):
    r"""Any torch energy function ``energy(q) -> (walkers,)``; forces :math:`-\nabla U` and
    the Laplacian :math:`\Delta U` by autograd.

    ``event_shape`` is the shape of one configuration, e.g. ``(2,)`` for a potential on the
    plane or ``(atoms, 3)``. Given, it is checked on every call (a state of another shape is
    refused with a :class:`PotentialError` naming both shapes). Omitted, the energy must work
    on configurations of any shape (like the built-in separable potentials): it is probed once
    on two walkers of one coordinate, and a function that fails there or does not return one
    value per walker is refused at construction, asking for ``event_shape``.
    """

    def __init__(
        self,
        energy: Callable[[torch.Tensor], torch.Tensor],
        name: str = "torch",
        event_shape: tuple[int, ...] | None = None,
    ) -> None:
        if not callable(energy):
            raise PotentialError(f"TorchPotential {name!r}: energy must be a function of q")
        self._energy = energy
        self.name = name
        if event_shape is not None:
            shape = (event_shape,) if isinstance(event_shape, int) else tuple(event_shape)
            if not shape or not all(
                isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in shape
            ):
                raise PotentialError(
                    f"TorchPotential {name!r}: event_shape must be a tuple of positive "
                    f"integers, got {event_shape!r}"
                )
            event_shape = shape
        self.event_shape = event_shape
        self._probe()

    def _probe(self) -> None:
        """One call on zeros of two walkers: the energy must run and return shape ``(2,)``."""
        shape = (2, *(self.event_shape or (1,)))
        q = torch.zeros(shape, dtype=torch.float64)
        try:
            e = self._energy(q)
        except Exception as err:
            if self.event_shape is not None:
                raise PotentialError(
                    f"TorchPotential {self.name!r}: the energy fails on configurations of "
                    f"shape {self.event_shape} ({type(err).__name__}: {err})"
                ) from err
            raise PotentialError(
                f"TorchPotential {self.name!r}: the energy fails on configurations of one "
                f"coordinate ({type(err).__name__}: {err}); give the shape of one "
                "configuration, e.g. TorchPotential(energy, event_shape=(2,))"
            ) from err
        if not isinstance(e, torch.Tensor) or tuple(e.shape) != (2,):
            got = tuple(e.shape) if isinstance(e, torch.Tensor) else type(e).__name__
            raise PotentialError(
                f"TorchPotential {self.name!r}: the energy must return one value per walker, "
                f"a tensor of shape (walkers,); on {shape[0]} walkers of shape {shape[1:]} it "
                f"returned {got}"
            )

    def energy(self, q: torch.Tensor) -> torch.Tensor:
        if self.event_shape is not None and tuple(q.shape[1:]) != self.event_shape:
            raise PotentialError(
                f"TorchPotential {self.name!r} acts on configurations of shape "
                f"{self.event_shape}; got positions of shape {tuple(q.shape)} (walkers first)"
            )
        return self._energy(q)

    def __repr__(self) -> str:
        return f"TorchPotential({self.name})"


class SympyPotential(_Separable1D):
    r"""A separable potential from a sympy expression (or text) in one coordinate ``q``.

    The force :math:`-U'(q)` is derived by sympy and lowered to torch; it is also the symbolic
    definition of the force field, so the exact analysis applies when it is linear.
    """

    def __init__(self, expr: sympy.Expr | str, name: str = "sympy", support: float = 10.0) -> None:
        if isinstance(expr, str):
            expr = parse_expression(expr, [_Q])
        expr = as_expression(expr, "SympyPotential")
        free = expr.free_symbols - {_Q}
        if free:
            raise ValueError(f"potential uses unknown symbols {sorted(map(str, free))}; use q")
        self.expr = expr
        self.name = name
        self._support = support
        self._force_expr = -sympy.diff(expr, _Q)
        self._u_t = spell_lambdify([_Q], expr, "torch")
        self._f_t = spell_lambdify([_Q], self._force_expr, "torch")
        self._lap_t = spell_lambdify([_Q], sympy.diff(expr, _Q, 2), "torch")
        self._u_np = spell_lambdify([_Q], expr, "numpy")
        xs = np.linspace(-support, support, 20001)
        self._umin = float(np.min(self._u_np(xs)))

    def u(self, x: np.ndarray) -> np.ndarray:
        return self._u_np(x)

    def _elementwise(self, fn: Callable, q: torch.Tensor) -> torch.Tensor:
        v = fn(q)
        if not isinstance(v, torch.Tensor):
            v = torch.full_like(q, float(v))
        return v

    def energy(self, q: torch.Tensor) -> torch.Tensor:
        return self._elementwise(self._u_t, q).reshape(q.shape[0], -1).sum(-1)

    def force(self, q: torch.Tensor) -> torch.Tensor:
        return self._elementwise(self._f_t, q)

    def laplacian(self, q: torch.Tensor) -> torch.Tensor:
        return self._elementwise(self._lap_t, q).reshape(q.shape[0], -1).sum(-1)

    def symbolic_force(self) -> sympy.Expr:
        return self._force_expr

    def __repr__(self) -> str:
        return f"SympyPotential({self.expr})"
