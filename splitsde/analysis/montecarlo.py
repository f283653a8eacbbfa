r"""Monte Carlo weak-order estimation for problems without an exact answer for the scheme.

Averages of an observable are estimated with :func:`splitsde.integrate` (the one time loop)
over many independent walkers, with batch-means standard errors
(:func:`splitsde.stats.walker_batch_means`: whole walkers form the batches, so no
autocorrelation time has to be estimated). A bias model

.. math:: \bar\varphi(h) = \varphi_\star + C\,h^p

is then fitted by generalised least squares to the averages over a ladder of steps, against

* a known reference :math:`\varphi_\star` (exact or quadrature; its standard error, if any, is
  a fully correlated error common to every point), or
* no reference: :math:`\varphi_\star` is fitted too (Richardson-style extrapolation; needs at
  least four steps).

The fitted order comes with its standard error and a confidence interval (normal quantile;
errors are inflated by :math:`\sqrt{\chi^2/\nu}` when the fit is worse than the error bars
allow, so a bad model widens the interval instead of hiding).

Reference for weak-order estimation of SDE integrators: Kloeden & Platen, *Numerical
Solution of SDEs* (Springer 1992), sec. 14.1; batch means: Flyvbjerg & Petersen,
J. Chem. Phys. 91 (1989) 461 (here with independent walkers as batches).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.optimize
import scipy.stats
import torch

from splitsde.integrate import integrate
from splitsde.observers import Running
from splitsde.stats import walker_batch_means

__all__ = [
    "Estimate",
    "OrderFit",
    "WeakOrderResult",
    "final_average",
    "fit_order",
    "stationary_average",
    "weak_order",
]

Observable = Callable[[Mapping[str, torch.Tensor]], torch.Tensor]


@dataclass(frozen=True)
class Estimate:
    """A Monte Carlo average with its standard error."""

    value: float
    se: float
    samples: int = 0

    def interval(self, level: float = 0.95) -> tuple[float, float]:
        z = float(scipy.stats.norm.ppf(0.5 + level / 2))
        return self.value - z * self.se, self.value + z * self.se

    def __str__(self) -> str:
        return f"{self.value:.6g} ± {self.se:.2g}"


def _per_walker(x: torch.Tensor) -> torch.Tensor:
    """Average an observable's trailing (coordinate) axes: one number per walker."""
    x = x.to(torch.float64)
    return x.reshape(x.shape[0], -1).mean(dim=1) if x.ndim > 1 else x


def stationary_average(
    integrator: Any,
    y0: Mapping[str, torch.Tensor],
    observable: Observable,
    *,
    h: float,
    steps: int,
    burn_in: int,
    seed: int,
    every: int = 1,
    batches: int = 64,
) -> Estimate:
    r"""Time-and-walker average of ``observable`` after ``burn_in`` steps, with a batch-means
    standard error over independent walkers.

    ``observable(state)`` returns ``(walkers,)`` or ``(walkers, ...)``; trailing axes are
    averaged (coordinates of a separable problem are exchangeable).
    """
    if steps < 1 or burn_in < 0:
        raise ValueError("steps must be positive and burn_in non-negative")
    obs = Running(lambda t, s: _per_walker(observable(s)), "phi", burn_in=burn_in, every=every)
    res = integrate(integrator, y0, h=h, steps=burn_in + steps, seed=seed, observers=[obs])
    fin = res.finals["phi"]
    st = walker_batch_means(fin["mean"], fin["mean_sq"], batches=batches)
    walkers = int(fin["mean"].shape[0])
    return Estimate(float(st["mean"]), float(st["mean_se"]), walkers * fin["count"])


def final_average(
    integrator: Any,
    y0: Mapping[str, torch.Tensor],
    observable: Observable,
    *,
    h: float,
    steps: int,
    seed: int,
    batches: int = 64,
) -> Estimate:
    """Average of ``observable`` at the end of the run over independent walkers."""
    res = integrate(integrator, y0, h=h, steps=steps, seed=seed)
    v = _per_walker(observable(res.final))
    st = walker_batch_means(v, v * v, batches=batches)
    return Estimate(float(st["mean"]), float(st["mean_se"]), int(v.shape[0]))


@dataclass(frozen=True)
class OrderFit:
    r"""Fit of :math:`\bar\varphi(h) = \varphi_\star + C h^p`.

    ``order``/``order_se``: :math:`p` and its standard error; ``interval``: the confidence
    interval at ``level``; ``reference`` and ``reference_se``: :math:`\varphi_\star` (given or
    fitted); ``chi2``/``dof``: goodness of fit (errors are inflated by
    :math:`\sqrt{\chi^2/\nu}` when it exceeds one).
    """

    order: float
    order_se: float
    coefficient: float
    coefficient_se: float
    reference: float
    reference_se: float
    reference_fitted: bool
    chi2: float
    dof: int
    level: float = 0.95

    @property
    def interval(self) -> tuple[float, float]:
        z = float(scipy.stats.norm.ppf(0.5 + self.level / 2))
        return self.order - z * self.order_se, self.order + z * self.order_se

    def contains(self, p: float) -> bool:
        lo, hi = self.interval
        return lo <= p <= hi

    def __str__(self) -> str:
        lo, hi = self.interval
        return (
            f"order {self.order:.3f} ± {self.order_se:.3f} ({100 * self.level:.0f}% CI "
            f"[{lo:.3f}, {hi:.3f}]), C = {self.coefficient:.4g}"
        )


def fit_order(
    hs: Sequence[float],
    values: Sequence[float],
    ses: Sequence[float],
    reference: float | Estimate | None = None,
    *,
    level: float = 0.95,
) -> OrderFit:
    r"""Generalised least-squares fit of :math:`v_i = \varphi_\star + C h_i^p`.

    ``reference`` is :math:`\varphi_\star` (a number, exact) or an :class:`Estimate` (its
    error is common to all points, so it enters the covariance as
    :math:`\sigma_\star^2 \mathbf 1\mathbf 1^\top`); ``None`` fits :math:`\varphi_\star`
    as well (at least four steps).
    """
    h = np.asarray(hs, np.float64)
    v = np.asarray(values, np.float64)
    s = np.asarray(ses, np.float64)
    if not (h.shape == v.shape == s.shape) or h.ndim != 1:
        raise ValueError("hs, values and ses must be 1-D and of equal length")
    if np.any(h <= 0) or np.any(s <= 0):
        raise ValueError("steps and standard errors must be positive")
    fitted_ref = reference is None
    if fitted_ref and len(h) < 4:
        raise ValueError("fitting the reference too needs at least four steps")
    if not fitted_ref and len(h) < 2:
        raise ValueError("an order fit needs at least two steps")
    if isinstance(reference, Estimate):
        ref, ref_se = reference.value, reference.se
    else:
        ref, ref_se = (0.0 if reference is None else float(reference)), 0.0
    cov = np.diag(s * s) + ref_se**2
    L = np.linalg.cholesky(cov)
    hscale = float(np.exp(np.mean(np.log(h))))  # fit C at a central step: better conditioned
    x = h / hscale

    def model(theta: np.ndarray) -> np.ndarray:
        if fitted_ref:
            r, c, p = theta
        else:
            (c, p), r = theta, ref
        return r + c * x**p

    def resid(theta: np.ndarray) -> np.ndarray:
        return np.linalg.solve(L, v - model(theta))

    # start from a log-log fit of |v - r0| against h (r0: the reference, or the value at the
    # smallest step when the reference is fitted too)
    r0 = v[np.argmin(h)] if fitted_ref else ref
    d = v - r0
    ok = np.abs(d) > 0
    p0 = np.polyfit(np.log(x[ok]), np.log(np.abs(d[ok])), 1)[0] if ok.sum() >= 2 else 1.0
    p0 = float(np.clip(p0, 0.25, 6.0))
    sign = float(np.sign(np.median(d[ok]))) if ok.any() else 1.0
    c0 = sign * float(np.median(np.abs(d[ok]) / x[ok] ** p0)) if ok.any() else 1.0
    theta0 = np.array([r0, c0, p0] if fitted_ref else [c0, p0])
    sol = scipy.optimize.least_squares(resid, theta0, method="lm", xtol=1e-14, ftol=1e-14)
    J = sol.jac
    dof = len(h) - len(theta0)
    chi2 = float(np.sum(sol.fun**2))
    try:
        pcov = np.linalg.inv(J.T @ J)
    except np.linalg.LinAlgError:
        pcov = np.full((len(theta0), len(theta0)), np.inf)
    if dof > 0 and chi2 / dof > 1:
        pcov = pcov * (chi2 / dof)
    se = np.sqrt(np.abs(np.diag(pcov)))
    if fitted_ref:
        r, c, p = sol.x
        r_se, c_se, p_se = se
    else:
        (c, p), r = sol.x, ref
        c_se, p_se, r_se = se[0], se[1], ref_se
    # C was fitted at the central step: C h^p = c (h / hscale)^p
    C = c / hscale**p
    C_se = c_se / hscale**p
    return OrderFit(
        float(p),
        float(p_se),
        float(C),
        float(C_se),
        float(r),
        float(r_se),
        fitted_ref,
        chi2,
        dof,
        level,
    )


@dataclass
class WeakOrderResult:
    """Averages over a step ladder and the fitted weak order."""

    hs: np.ndarray
    estimates: list[Estimate]
    fit: OrderFit
    reference: float | Estimate | None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def biases(self) -> np.ndarray:
        return np.array([e.value for e in self.estimates]) - self.fit.reference


def weak_order(
    make_integrator: Callable[[float], Any] | Any,
    hs: Sequence[float],
    y0: Mapping[str, torch.Tensor] | Callable[[float], Mapping[str, torch.Tensor]],
    observable: Observable,
    *,
    reference: float | Estimate | None = None,
    mode: str = "stationary",
    T: float | None = None,
    burn_in_time: float = 0.0,
    sample_time: float | None = None,
    every: int = 1,
    seed: int = 0,
    level: float = 0.95,
    batches: int = 64,
) -> WeakOrderResult:
    r"""Estimate the weak order of a scheme from Monte Carlo averages over the steps ``hs``.

    ``mode="stationary"``: long-time averages (``burn_in_time`` then ``sample_time`` of
    simulated time per walker) -- the invariant-measure bias; ``mode="final"``: the average at
    time ``T`` -- the finite-time weak error. ``make_integrator`` is an integrator or a
    function ``h -> integrator``; ``y0`` a state or a function ``h -> state``. ``reference``
    as in :func:`fit_order` (``None``: extrapolated). Each step uses its own seed
    (``seed + i``), so the estimates are independent.
    """
    if mode not in ("stationary", "final"):
        raise ValueError(f"mode must be 'stationary' or 'final', got {mode!r}")
    estimates = []
    for i, hh in enumerate(hs):
        integ = make_integrator if hasattr(make_integrator, "program") else make_integrator(hh)
        start = y0(hh) if callable(y0) else y0
        if mode == "stationary":
            if sample_time is None:
                raise ValueError("stationary mode needs sample_time")
            steps = max(1, round(sample_time / hh))
            burn = round(burn_in_time / hh)
            est = stationary_average(
                integ,
                start,
                observable,
                h=hh,
                steps=steps,
                burn_in=burn,
                seed=seed + i,
                every=every,
                batches=batches,
            )
        else:
            if T is None:
                raise ValueError("final mode needs T")
            n = T / hh
            if abs(n - round(n)) > 1e-9 * max(1.0, n):
                raise ValueError(f"step {hh} does not divide T = {T}")
            est = final_average(
                integ, start, observable, h=hh, steps=round(n), seed=seed + i, batches=batches
            )
        estimates.append(est)
    fit = fit_order(
        hs, [e.value for e in estimates], [e.se for e in estimates], reference, level=level
    )
    return WeakOrderResult(np.asarray(hs, np.float64), estimates, fit, reference)
