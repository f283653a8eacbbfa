r"""Exponential integrators for flows "linear part + fields": multistep (DEIS, iPNDM) and
Runge--Kutta in an exponential clock (:math:`\rho`RK-DEIS).

A flow of the form

.. math:: dz = A(t)\,z\,dt + \sum_k v_k(t)\,u_k(z, t)\,dt + G(t)\,dW,

with :math:`u_k` field outputs (a force, a noise prediction :math:`\varepsilon_\theta`), has the
exact variation-of-constants solution over a slice :math:`[t_n, t_{n+1}]`

.. math:: z_{n+1} = \Phi(t_{n+1}, t_n) z_n
          + \sum_k \int_{t_n}^{t_{n+1}} \Phi(t_{n+1}, \tau) v_k(\tau) u_k(z(\tau), \tau)\,d\tau
          + \text{(exact Gaussian noise)}.

The linear part and the noise are solved exactly (the core's linear solver); only the field is
approximated:

* :class:`ExponentialMultistep` -- the field along the slice is replaced by the Lagrange
  polynomial through its values at the last :math:`r+1` slice starts, in a chosen variable:
  the time :math:`t` (tAB-DEIS), the exponential clock :math:`\rho` (:math:`\rho`AB-DEIS) or
  :math:`\log\rho` (the multistep DEIS of ``diffusers``). The coefficients
  :math:`C_{n,j} = \int \Phi(t_{n+1},\tau) v(\tau)\,\ell_j(\tau)\,d\tau` are integrated once per
  grid; order :math:`r = 0` is exponential Euler (DDIM for VP with :math:`\varepsilon`-prediction).
  ``weights="adams-bashforth"`` uses the fixed Adams--Bashforth weights instead (iPNDM).
  Lower orders start the run (warm start). One field evaluation per step; the past values come
  from the program's history (:mod:`splitsde.symbolic.history`).
* :class:`ExponentialRungeKutta` -- classical Runge--Kutta (Euler, Heun, Kutta-3, RK4) in the
  clock variable :math:`\rho` for :math:`y = \Phi(t_n, \cdot) z`.

**Exponential clock.** For one block and one field term, :math:`\Phi(t_b, \tau) v(\tau)\,d\tau
= k(t_b)\,d\rho(\tau)` defines the clock :math:`\rho` and its weight :math:`k`; in
:math:`y = z/\Phi` and :math:`\rho` the flow reads :math:`dy/d\rho = k\,u`. For diffusion models
:math:`\rho = \sigma_t/\alpha_t` (DEIS, Zhang & Chen 2023). A clock known in closed form
(:class:`ExponentialClock`, supplied by an instance) makes the coefficients exact integrals of
polynomials in :math:`\rho`; without one the coefficients are Gauss--Legendre quadratures in
:math:`t` (and the clock, if asked for, is itself a quadrature).

References: Hochbruck & Ostermann, *Exponential integrators*, Acta Numerica 19 (2010) 209--286;
Zhang & Chen, *Fast sampling of diffusion models with exponential integrator* (DEIS), ICLR 2023;
Liu, Ren, Lin & Zhao, *Pseudo numerical methods for diffusion models on manifolds* (PNDM),
ICLR 2022 (iPNDM: Zhang & Chen 2023, app.).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np
import scipy.linalg
import sympy

from splitsde.base.errors import SplitsdeError
from splitsde.symbolic.field import field_of
from splitsde.symbolic.history import Lagged
from splitsde.symbolic.numeric import gauss_legendre as _gauss_legendre
from splitsde.symbolic.solve import (
    ExponentialEuler,
    Solver,
    TimeIntegration,
    _clock,
    _linear_form,
    _time_integral,
)
from splitsde.symbolic.spellings import lambdify as _spell_lambdify
from splitsde.symbolic.symbols import Block, Coefficient, Parameter, Temporary, h, t
from splitsde.symbolic.update import CoefficientDef, CoefficientSymbols, NumericCoefficients, Update

__all__ = [
    "ADAMS_BASHFORTH",
    "TABLEAUS",
    "ExponentialClock",
    "ExponentialMultistep",
    "ExponentialRungeKutta",
    "GridTooShortError",
]

#: Fixed Adams--Bashforth weights of the newest-first past values, by number of values.
ADAMS_BASHFORTH: tuple[tuple[Fraction, ...], ...] = (
    (Fraction(1),),
    (Fraction(3, 2), Fraction(-1, 2)),
    (Fraction(23, 12), Fraction(-16, 12), Fraction(5, 12)),
    (Fraction(55, 24), Fraction(-59, 24), Fraction(37, 24), Fraction(-9, 24)),
)

#: Explicit Runge--Kutta tableaus ``(c, a, b, order)`` by name.
TABLEAUS: dict[str, tuple[tuple, tuple, tuple, int]] = {
    "euler": ((0,), ((),), (1,), 1),
    "heun": ((0, 1), ((), (1,)), (Fraction(1, 2), Fraction(1, 2)), 2),
    "kutta3": (
        (0, Fraction(1, 2), 1),
        ((), (Fraction(1, 2),), (-1, 2)),
        (Fraction(1, 6), Fraction(2, 3), Fraction(1, 6)),
        3,
    ),
    "rk4": (
        (0, Fraction(1, 2), Fraction(1, 2), 1),
        ((), (Fraction(1, 2),), (0, Fraction(1, 2)), (0, 0, 1)),
        (Fraction(1, 6), Fraction(1, 3), Fraction(1, 3), Fraction(1, 6)),
        4,
    ),
}

_VARIABLES = ("t", "rho", "log-rho")
MAX_ORDER = 3


@functools.lru_cache(maxsize=16)
def gauss_legendre(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Gauss--Legendre nodes and weights on [0, 1] (cached: asked for once per slice)."""
    return _gauss_legendre(n)


class GridTooShortError(SplitsdeError, ValueError):
    """A multistep solver run on a grid with fewer steps than its order needs."""


class ExponentialClock:
    r"""The exponential clock :math:`\rho(t)` and weight :math:`k(t)` of a semilinear flow
    with one block and one field term: :math:`\Phi(t_b, \tau)\,v(\tau)\,d\tau = k(t_b)\,
    d\rho(\tau)` for every :math:`t_b`.

    Subclasses implement :meth:`rho` and :meth:`weight` (float64, vectorised over times, the
    flow's own time variable) and may override :meth:`time_of` (the inverse of :math:`\rho`;
    the default bisects). The solvers check the defining identity numerically on the first
    slice of every grid, so a clock that does not belong to the flow is refused.
    """

    name: str = "rho"

    def rho(self, times: np.ndarray, params: Mapping[Parameter, Any]) -> np.ndarray:
        raise NotImplementedError

    def weight(self, times: np.ndarray, params: Mapping[Parameter, Any]) -> np.ndarray:
        raise NotImplementedError

    def time_of(
        self,
        rho: np.ndarray,
        lo: np.ndarray,
        hi: np.ndarray,
        params: Mapping[Parameter, Any],
    ) -> np.ndarray:
        """Times in ``[lo, hi]`` with ``rho(time) = rho`` (monotone clock), by bisection."""
        rho = np.asarray(rho, np.float64)
        a = np.broadcast_to(np.asarray(lo, np.float64), rho.shape).copy()
        b = np.broadcast_to(np.asarray(hi, np.float64), rho.shape).copy()
        ra = self.rho(a, params)
        increasing = self.rho(b, params) > ra
        for _ in range(200):
            mid = 0.5 * (a + b)
            below = (self.rho(mid, params) < rho) == increasing
            a = np.where(below, mid, a)
            b = np.where(below, b, mid)
            if np.all(b - a <= 4 * np.finfo(np.float64).eps * np.maximum(1.0, np.abs(b))):
                break
        return 0.5 * (a + b)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name})"


# ---------------------------------------------------------------------------------------------
# Structure of the flow
# ---------------------------------------------------------------------------------------------
@dataclass
class _Semilinear:
    """A flow split into its exactly solved part (linear + non-field atoms + noise) and its
    field terms ``v_k(t) u_k``."""

    changed: tuple[Block, ...]
    exact: Solver  # the exact solver of the linear part (with non-field atoms and noise)
    fields: list[sympy.Expr]  # field applications u_k (written with t)
    v: list[list[sympy.Expr]]  # v[k][i]: coefficient of u_k in the drift of changed block i
    A: sympy.Matrix
    stochastic: bool
    params: list[Parameter]
    extra_terms: bool = False


def _semilinear(flow: Any, what: str) -> _Semilinear:
    from splitsde.symbolic.flow import Flow

    lf = _linear_form(flow)
    if lf.multiplicative:
        raise ValueError(f"{what} needs additive noise: {lf.multiplicative}")
    Z = lf.changed
    fields, v, rest = [], [], []
    for u, vk in zip(lf.atoms, lf.v):
        fo = field_of(u)
        if fo is not None:
            f, _ = fo
            if tuple(u.args[: len(f.depends)]) != tuple(f.depends):
                raise ValueError(f"{what}: field term {u} is not evaluated at its own blocks")
            fields.append(u)
            v.append(vk)
        elif u in lf.approximate:
            raise ValueError(
                f"{what} approximates field terms only; {lf.approximate[u]} (a nonlinear term "
                "that is not a field output)"
            )
        else:
            rest.append((u, vk))
    if not fields:
        raise ValueError(f"{what}: the flow has no field term to approximate")
    drift = {}
    for i, b in enumerate(Z):
        e = sum((lf.A[i, j] * z for j, z in enumerate(Z)), sympy.Integer(0))
        e += sum((vk[i] * u for u, vk in rest), sympy.Integer(0))
        drift[b] = e
    noise = {b: g for b, g in zip(Z, lf.noise) if g != 0}
    drift = {b: e for b, e in drift.items() if e != 0}
    if not drift and not noise:
        exact = None
    else:
        exact = ExponentialEuler().derive(Flow(drift, noise))
        if not exact.exact:
            raise ValueError(
                f"{what}: the linear part has no exact solver ({exact.reason}); it must be "
                "linear in the changed blocks with a common clock c(t) A0"
            )
    exprs = [*lf.A, *(e for vk in v for e in vk)]
    params = sorted({s for e in exprs for s in e.free_symbols if isinstance(s, Parameter)}, key=str)
    return _Semilinear(Z, exact, fields, v, lf.A, bool(noise), params, bool(rest))


def _linear_exprs(sl: _Semilinear) -> tuple[list[sympy.Expr], Update | None]:
    """The exactly solved part's new value per changed block (blocks themselves if none)."""
    if sl.exact is None:
        return list(sl.changed), None
    upd = sl.exact.update
    by = dict(zip(upd.targets, upd.exprs))
    return [by.get(b, b) for b in sl.changed], upd


class _Propagator:
    r"""Float64 :math:`\Phi(t_0 + s, t_0)` of the linear part ``A(t) = c(t) A0`` and the field
    coefficients :math:`v_k(t)`."""

    def __init__(self, sl: _Semilinear, nodes: int) -> None:
        P = sl.params
        self.P = P
        clock = _clock(sl.A)
        if clock is None:
            raise ValueError(
                "the linear part has no common clock A(t) = c(t) A0; exponential integrators "
                "need one"
            )
        c, A0 = clock
        dC, _ = _time_integral(c, TimeIntegration(nodes))
        self.n = len(sl.changed)
        self.zero = all(e == 0 for e in sl.A)
        self._A0 = _spell_lambdify(P, A0, "numpy")
        self._dC = _spell_lambdify([t, h, *P], dC, "numpy")
        self._v = [[_spell_lambdify([t, *P], e, "numpy") for e in vk] for vk in sl.v]

    def values(self, params: Mapping[Parameter, Any]) -> list[float]:
        try:
            return [float(params[p]) for p in self.P]
        except KeyError as exc:
            raise ValueError(f"missing value of parameter {exc.args[0]}") from None
        except TypeError as exc:
            raise TypeError("exponential integrators need scalar parameters") from exc

    def phi(self, t0: np.ndarray, s: np.ndarray, pv: list[float]) -> np.ndarray:
        """``(..., n, n)``: the propagator from ``t0`` over ``s`` (``s`` may be negative)."""
        t0, s = np.broadcast_arrays(np.asarray(t0, np.float64), np.asarray(s, np.float64))
        eye = np.eye(self.n)
        if self.zero:
            return np.broadcast_to(eye, (*t0.shape, self.n, self.n)).copy()
        A0 = np.asarray(self._A0(*pv), np.float64).reshape(self.n, self.n)
        dC = np.broadcast_to(np.asarray(self._dC(t0, s, *pv), np.float64), t0.shape)
        if np.allclose(A0, np.diag(np.diag(A0))):
            out = np.zeros((*t0.shape, self.n, self.n))
            idx = np.arange(self.n)
            out[..., idx, idx] = np.exp(np.diag(A0) * dC[..., None])
            return out
        flat = dC.reshape(-1)
        return scipy.linalg.expm(A0[None] * flat[:, None, None]).reshape(*t0.shape, self.n, self.n)

    def v(self, k: int, times: np.ndarray, pv: list[float]) -> np.ndarray:
        """``(..., n)``: the coefficient of field term ``k`` at ``times``."""
        times = np.asarray(times, np.float64)
        with np.errstate(all="ignore"):
            rows = [
                np.broadcast_to(np.asarray(fn(times, *pv), np.float64), times.shape)
                for fn in self._v[k]
            ]
        return np.stack(rows, axis=-1)


def _lagrange(nodes: np.ndarray, x: np.ndarray) -> np.ndarray:
    r"""``(len(nodes), *x.shape)``: the Lagrange basis :math:`\ell_j(x)` through ``nodes``."""
    out = []
    for j, xj in enumerate(nodes):
        ell = np.ones_like(x)
        for m, xm in enumerate(nodes):
            if m != j:
                ell = ell * (x - xm) / (xj - xm)
        out.append(ell)
    return np.stack(out)


def _check_clock(
    clock: ExponentialClock,
    prop: _Propagator,
    t0: float,
    s: float,
    pv: list[float],
    params: Mapping[Parameter, Any],
) -> None:
    r"""The clock identity :math:`\Phi(t_b, \tau) v(\tau) = k(t_b)\,\rho'(\tau)` at one point."""
    tau = t0 + 0.5 * s
    end = t0 + s
    lhs = float(prop.phi(tau, end - tau, pv)[0, 0] * prop.v(0, tau, pv)[0])
    d = 1e-5 * abs(s)
    rho = clock.rho(np.array([tau - d, tau + d]), params)
    rhs = float(clock.weight(np.array([end]), params)[0] * (rho[1] - rho[0]) / (2 * d))
    if not (math.isfinite(lhs) and math.isfinite(rhs)) or abs(lhs - rhs) > 1e-4 * max(
        abs(lhs), abs(rhs), 1e-300
    ):
        raise ValueError(
            f"the clock {clock!r} is not the exponential clock of this flow: at t = {tau:.6g}, "
            f"Phi(t_b, t) v(t) = {lhs:.6g} but k(t_b) drho/dt = {rhs:.6g}"
        )


def _require_scalar(sl: _Semilinear, what: str) -> None:
    if len(sl.changed) != 1 or len(sl.fields) != 1:
        raise ValueError(
            f"{what} needs one changed block and one field term (the scalar exponential clock); "
            f"this flow changes {', '.join(b.name for b in sl.changed)} and has "
            f"{len(sl.fields)} field term(s): use variable='t'"
        )


# ---------------------------------------------------------------------------------------------
# Multistep
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ExponentialMultistep:
    r"""Exponential multistep solver of order ``order`` (0--3) in ``variable``.

    .. math:: z_{n+1} = \Phi(t_{n+1}, t_n) z_n + \sum_{j=0}^{q} C_{n,j}\,u(z_{n-j}, t_{n-j})
              + L\xi, \qquad q = \min(r, n),

    :math:`C_{n,j} = \int_{t_n}^{t_{n+1}} \Phi(t_{n+1},\tau) v(\tau)\,\ell_j(x(\tau))\,d\tau`,
    :math:`\ell_j` the Lagrange basis in :math:`x \in \{t, \rho, \log\rho\}` through the last
    :math:`q+1` slice starts. ``weights="adams-bashforth"`` uses
    :math:`C_{n,j} = w^{(q)}_j C_{n}^{(0)}` with the fixed Adams--Bashforth weights
    (iPNDM). Order ``r`` has global order :math:`r+1` on a deterministic flow; with noise the
    field is frozen in an SDE and the weak order is 1. The fixed iPNDM weights are the
    Adams--Bashforth weights of *equal* steps in the clock (where iPNDM equals
    :math:`\rho`AB of the same order); on other grids its declared order is 2.

    Parameters
    ----------
    order:
        :math:`r \in \{0, 1, 2, 3\}`; the first :math:`r` steps of a run use lower orders.
    variable:
        ``"t"`` (tAB), ``"rho"`` (:math:`\rho`AB), ``"log-rho"`` (needs ``clock``).
    clock:
        An :class:`ExponentialClock` known in closed form; without one the coefficients are
        Gauss--Legendre quadratures in :math:`t` with ``nodes`` nodes.
    weights:
        ``"lagrange"`` (DEIS) or ``"adams-bashforth"`` (iPNDM).
    """

    order: int = 0
    variable: str = "t"
    clock: ExponentialClock | None = None
    weights: str = "lagrange"
    nodes: int = 16
    name: str = ""

    def __post_init__(self) -> None:
        if isinstance(self.order, bool) or int(self.order) != self.order:
            raise ValueError(f"order must be an integer, got {self.order!r}")
        if not 0 <= self.order <= MAX_ORDER:
            raise ValueError(
                f"exponential multistep order {self.order} is not supported: orders 0 to "
                f"{MAX_ORDER} (at most {MAX_ORDER + 1} past field values)"
            )
        if self.variable not in _VARIABLES:
            raise ValueError(f"unknown variable {self.variable!r}; choose one of {_VARIABLES}")
        if self.weights not in ("lagrange", "adams-bashforth"):
            raise ValueError("weights must be 'lagrange' or 'adams-bashforth'")
        if self.variable == "log-rho" and self.clock is None:
            raise ValueError("variable='log-rho' needs a clock (the absolute rho of the flow)")
        if self.nodes < 2:
            raise ValueError("quadrature needs at least 2 nodes")

    @property
    def label(self) -> str:
        if self.name:
            return self.name
        if self.weights == "adams-bashforth":
            return f"iPNDM (Adams-Bashforth {self.order + 1} in the exponential integrator)"
        var = {"t": "t", "rho": "rho", "log-rho": "log-rho"}[self.variable]
        return f"exponential multistep ({var}AB{self.order})"

    def derive(self, flow: Any) -> Solver:
        what = self.label
        sl = _semilinear(flow, what)
        if self.variable != "t" or self.clock is not None:
            _require_scalar(sl, f"{what} with variable {self.variable!r} or a clock")
        base, lin = _linear_exprs(sl)
        prop = _Propagator(sl, self.nodes)
        group = NumericCoefficients(
            tuple(
                ("C", k, j, i)
                for k in range(len(sl.fields))
                for j in range(self.order + 1)
                for i in range(len(sl.changed))
            ),
            lambda t0, s, params, past=None: self._coefficients(sl, prop, t0, s, params, past),
            method=self._method_text(),
            autonomous=False,
            history=self.order,
        )
        coefs: dict[Coefficient, CoefficientDef] = dict(lin.coefficients) if lin else {}
        exprs = []
        for i, b in enumerate(sl.changed):
            e = base[i]
            for k, u in enumerate(sl.fields):
                if all(vk == 0 for vk in sl.v[k][i : i + 1]):
                    continue
                for j in range(self.order + 1):
                    c = Coefficient(f"C{k}{j}_{b.name}")
                    coefs[c] = CoefficientDef(
                        numeric=group, key=("C", k, j, i), method=group.method
                    )
                    e += c * (u if j == 0 else Lagged(u, j))
            exprs.append(e)
        noises = lin.noises if lin else ()
        upd = Update(tuple(sl.changed), tuple(exprs), noises, coefficients=coefs)
        order = 1 if sl.stochastic else self.order + 1
        if self.weights == "adams-bashforth" and not sl.stochastic:
            # fixed weights are Adams-Bashforth only for equal steps in the clock; on smoothly
            # varying grids the weight mismatch is O(h), so the global order is 2
            order = min(order, 2)
        why = (
            f"field term(s) {', '.join(map(str, sl.fields))} interpolated by a degree-"
            f"{self.order} polynomial in {self.variable} through past values; linear part and "
            "noise exact"
        )
        if self.weights == "adams-bashforth":
            why = (
                f"field term(s) replaced by fixed Adams-Bashforth combinations of the last "
                f"{self.order + 1} values; linear part and noise exact"
            )
        notes = [f"warm start: orders 0..{self.order - 1} on the first steps"] if self.order else []
        if sl.stochastic:
            notes.append("stochastic flow: the field is frozen in an SDE, weak order 1")
        return Solver(
            method=what,
            exact=False,
            reason=why,
            update=upd,
            weak_order=order,
            strong_order=None,
            time=self._method_text(),
            notes=tuple(notes),
        )

    def _method_text(self) -> str:
        if self.clock is not None:
            return f"exponential clock {self.clock.name} (closed form; Gauss-Legendre in rho)"
        return f"Gauss-Legendre quadrature ({self.nodes} nodes) per grid"

    # -- coefficients -----------------------------------------------------------------------------
    def _coefficients(
        self,
        sl: _Semilinear,
        prop: _Propagator,
        t0: np.ndarray,
        s: np.ndarray,
        params: Mapping[Parameter, Any],
        past: np.ndarray,
    ) -> dict[Any, np.ndarray]:
        pv = prop.values(params)
        n_rows = t0.shape[0]
        K, n, r = len(sl.fields), len(sl.changed), self.order
        if past is None:
            past = np.zeros((n_rows, 0))
        out = {key: np.zeros(n_rows) for key in self._keys(K, n)}
        avail = np.sum(np.cumprod(np.isfinite(past), axis=1), axis=1) if r else np.zeros(n_rows)
        if r and n_rows and avail[-1] < r:
            raise GridTooShortError(
                f"{self.label} needs at least {r + 1} steps to reach order {r} (warm start with "
                f"lower orders); the grid has {n_rows} step(s)"
            )
        if self.clock is not None and n_rows:
            _check_clock(self.clock, prop, float(t0[0]), float(s[0]), pv, params)
        for row in range(n_rows):
            q = int(min(r, avail[row]))
            starts = np.concatenate([[t0[row]], past[row, :q]])
            C = self._row(sl, prop, float(t0[row]), float(s[row]), starts, q, pv, params)
            for k in range(K):
                for j in range(q + 1):
                    for i in range(n):
                        out[("C", k, j, i)][row] = C[k, j, i]
        return out

    def _keys(self, K: int, n: int) -> list[tuple]:
        return [("C", k, j, i) for k in range(K) for j in range(self.order + 1) for i in range(n)]

    def _row(
        self,
        sl: _Semilinear,
        prop: _Propagator,
        t0: float,
        s: float,
        starts: np.ndarray,
        q: int,
        pv: list[float],
        params: Mapping[Parameter, Any],
    ) -> np.ndarray:
        """``C[k, j, i]`` for one slice, lags ``j <= q``."""
        K, n = len(sl.fields), len(sl.changed)
        C = np.zeros((K, q + 1, n))
        x, w = gauss_legendre(self.nodes)
        if self.clock is not None:  # one block, one field term: exact in rho
            clock = self.clock
            r0, r1 = clock.rho(np.array([t0, t0 + s]), params)
            k_end = float(clock.weight(np.array([t0 + s]), params)[0])
            if self.weights == "adams-bashforth":
                C[0, :, 0] = k_end * (r1 - r0) * np.array([float(a) for a in ADAMS_BASHFORTH[q]])
                return C
            rho_nodes = clock.rho(starts, params)
            if q == 0:
                C[0, 0, 0] = k_end * (r1 - r0)
            elif self.variable == "log-rho":
                # integrate in w = log|rho| (dρ = ρ dw): the integrand is entire in w
                if r0 * r1 <= 0:
                    raise ValueError("log-rho needs a clock that keeps its sign over a slice")
                w0, w1 = math.log(abs(r0)), math.log(abs(r1))
                wg = w0 + x * (w1 - w0)
                ell = _lagrange(np.log(np.abs(rho_nodes)), wg)
                rho_g = math.copysign(1.0, r0) * np.exp(wg)
                C[0, :, 0] = k_end * (w1 - w0) * (ell @ (w * rho_g))
            else:
                rho_g = r0 + x * (r1 - r0)
                if self.variable == "rho":
                    ell = _lagrange(rho_nodes, rho_g)
                else:  # a polynomial in t, integrated in rho at the times of the rho nodes
                    lo, hi = min(t0, t0 + s), max(t0, t0 + s)
                    ell = _lagrange(starts, clock.time_of(rho_g, lo, hi, params))
                C[0, :, 0] = k_end * (r1 - r0) * (ell @ w)
            return C
        # quadrature in t: C_kj = s sum_g w_g Phi(end, tau_g) v_k(tau_g) l_j(x(tau_g))
        tau = t0 + x * s
        phi = prop.phi(tau, (t0 + s) - tau, pv)  # (G, n, n)
        base = np.stack(
            [np.einsum("gab,gb->ga", phi, prop.v(k, tau, pv)) * s for k in range(K)]
        )  # (K, G, n)
        if self.weights == "adams-bashforth" or q == 0:
            c0 = np.einsum("kgn,g->kn", base, w)
            if q == 0:
                C[:, 0, :] = c0
                return C
            ab = np.array([float(a) for a in ADAMS_BASHFORTH[q]])
            return c0[:, None, :] * ab[None, :, None]
        if self.variable == "t":
            ell = _lagrange(starts, tau)  # (q+1, G)
        else:  # rho without a clock: rho relative to t0 by quadrature
            ell = _lagrange(
                self._relative_rho(prop, t0, starts, pv), self._relative_rho(prop, t0, tau, pv)
            )
        C[:] = np.einsum("kgn,jg,g->kjn", base, ell, w)
        return C

    def _relative_rho(
        self, prop: _Propagator, t0: float, times: np.ndarray, pv: list[float]
    ) -> np.ndarray:
        r""":math:`\int_{t_0}^{\tau} \Phi(t_0, u) v(u)\,du` at ``times`` (Gauss--Legendre)."""
        x, w = gauss_legendre(self.nodes)
        out = []
        for tau in np.atleast_1d(times):
            u = t0 + x * (tau - t0)
            phi = prop.phi(u, t0 - u, pv)[:, 0, 0]
            out.append(float(np.sum(w * phi * prop.v(0, u, pv)[:, 0]) * (tau - t0)))
        return np.array(out)


# ---------------------------------------------------------------------------------------------
# Runge--Kutta in the clock
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ExponentialRungeKutta:
    r"""Explicit Runge--Kutta in the exponential clock (:math:`\rho`RK-DEIS).

    With :math:`y = \Phi(t_n, \cdot)\,z` the flow reads :math:`dy/d\rho = k(t_n)\,u`; a
    Runge--Kutta method with tableau :math:`(c, a, b)` in :math:`\rho` gives

    .. math:: z_i = \Phi(\tau_i, t_n) z_n + k(\tau_i)\Delta\rho \sum_{j<i} a_{ij} U_j, \quad
              U_i = u(z_i, \tau_i), \quad
              z_{n+1} = \Phi(t_{n+1}, t_n) z_n + k(t_{n+1}) \Delta\rho \sum_i b_i U_i,

    :math:`\rho(\tau_i) = \rho(t_n) + c_i\Delta\rho`. ``tableau`` is ``"euler"`` (= DDIM),
    ``"heun"`` (= EDM's Heun sampler in :math:`\sigma`), ``"kutta3"`` or ``"rk4"``; the global
    order is the tableau's. One field evaluation per stage. Needs an :class:`ExponentialClock`
    (a deterministic flow with one block and one field term).
    """

    tableau: str = "heun"
    clock: ExponentialClock | None = None
    name: str = ""

    def __post_init__(self) -> None:
        if self.tableau not in TABLEAUS:
            raise ValueError(f"unknown tableau {self.tableau!r}; tableaus: {', '.join(TABLEAUS)}")
        if self.clock is None:
            raise ValueError("rho Runge-Kutta needs an exponential clock (clock=...)")

    @property
    def stages(self) -> int:
        return len(TABLEAUS[self.tableau][0])

    @property
    def order(self) -> int:
        return TABLEAUS[self.tableau][3]

    def derive(self, flow: Any) -> Solver:
        what = self.name or f"rhoRK-{self.tableau}"
        sl = _semilinear(flow, what)
        _require_scalar(sl, what)
        if sl.stochastic:
            raise ValueError(f"{what} is a solver for deterministic flows; this flow has noise")
        if sl.extra_terms:
            raise ValueError(f"{what}: the flow has state-free forcing terms; not supported")
        c, a, b, _ = TABLEAUS[self.tableau]
        prop = _Propagator(sl, 16)
        keys = ["phi_end", *(f"B{i}" for i in range(len(b)))]
        for i in range(1, len(c)):
            keys += [f"phi{i}", f"tau{i}", *(f"A{i}{j}" for j in range(i))]
        group = NumericCoefficients(
            tuple(keys),
            lambda t0, s, params: self._coefficients(prop, t0, s, params),
            method=f"exponential clock {self.clock.name} (closed form)",
            autonomous=False,
        )
        coef = CoefficientSymbols(group, lambda key: f"{key}_rk")

        (zb,) = sl.changed
        (u,) = sl.fields
        f, out = field_of(u)
        lets = []
        U = [u]
        for i in range(1, len(c)):
            zi = Temporary(f"z{i}")
            e = coef(f"phi{i}") * zb + sum(
                (coef(f"A{i}{j}") * U[j] for j in range(i) if a[i][j] != 0), sympy.Integer(0)
            )
            lets.append((zi, e))
            label = t + h if c[i] == 1 else coef(f"tau{i}")
            args = [zi if arg == zb else arg for arg in u.args[: len(f.depends)]]
            ui = Temporary(f"U{i}")  # one evaluation per stage, read by the later stages
            lets.append((ui, f.apply(out, (*args, label) if f.time else args)))
            U.append(ui)
        new = coef("phi_end") * zb + sum(
            (coef(f"B{i}") * U[i] for i in range(len(b)) if b[i] != 0), sympy.Integer(0)
        )
        upd = Update((zb,), (new,), (), tuple(lets), coef.defs)
        return Solver(
            method=what,
            exact=False,
            reason=f"Runge-Kutta ({self.tableau}) in the exponential clock {self.clock.name}; "
            "linear part exact",
            update=upd,
            weak_order=self.order,
            time=group.method,
        )

    def _coefficients(
        self, prop: _Propagator, t0: np.ndarray, s: np.ndarray, params: Mapping[Parameter, Any]
    ) -> dict[str, np.ndarray]:
        pv = prop.values(params)
        clock = self.clock
        c, a, b, _ = TABLEAUS[self.tableau]
        end = t0 + s
        if len(t0):
            _check_clock(clock, prop, float(t0[0]), float(s[0]), pv, params)
        r0, r1 = clock.rho(t0, params), clock.rho(end, params)
        dr = r1 - r0
        out = {"phi_end": prop.phi(t0, s, pv)[..., 0, 0]}
        k_end = clock.weight(end, params)
        for i, bi in enumerate(b):
            out[f"B{i}"] = k_end * dr * float(bi)
        for i in range(1, len(c)):
            ci = float(c[i])
            if c[i] == 1:
                tau = end
            else:
                lo, hi = np.minimum(t0, end), np.maximum(t0, end)
                tau = clock.time_of(r0 + ci * dr, lo, hi, params)
            out[f"tau{i}"] = tau
            out[f"phi{i}"] = prop.phi(t0, tau - t0, pv)[..., 0, 0]
            k_i = clock.weight(tau, params)
            for j in range(i):
                out[f"A{i}{j}"] = k_i * dr * float(a[i][j] if j < len(a[i]) else 0)
        return out


def declared_tableau(name: str) -> tuple[Sequence, Sequence, Sequence, int]:
    """The ``(c, a, b, order)`` of a named tableau."""
    return TABLEAUS[name]
