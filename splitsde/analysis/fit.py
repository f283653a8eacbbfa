r"""The weak order of a scheme from a ladder of noisy averages -- with a verdict.

Averages :math:`v_i` of an observable at steps :math:`h_i` (Monte Carlo estimates with
covariance :math:`\Sigma`, full when the runs share their random numbers) are fitted by
generalised least squares to the bias model

.. math:: v_i = \varphi_\star + C h_i^{p} \qquad\text{or}\qquad
          v_i = \varphi_\star + C h_i^{p} + D h_i^{p+1}

(the leading term, or the leading term and the next one). The reference
:math:`\varphi_\star` is explicit:

* ``"exact"`` -- a number (closed form, quadrature), no error;
* ``"estimate"`` -- an :class:`Estimate`: its error is common to every point and enters the
  covariance as :math:`\sigma_\star^2\mathbf 1\mathbf 1^\top`;
* ``"extrapolated"`` -- :math:`\varphi_\star` is a fitted parameter (Richardson-style);
* ``"fine"`` -- a fine-step run is one more point of the ladder and :math:`\varphi_\star` is
  fitted, so the fine run's own error :math:`C h_{\rm ref}^p + \dots` is part of the model
  rather than ignored.

The model is linear in :math:`(\varphi_\star, C, D)` for fixed :math:`p`, so :math:`p` is
found by minimising the profile :math:`\chi^2(p)` over a grid and refining (no start value,
no local minimum of a joint nonlinear fit), and its confidence interval is the profile
interval :math:`\{p : \chi^2(p) - \chi^2_{\min} \le z^2 s\}` with
:math:`s = \max(1, \chi^2_{\min}/\nu)`.

**Goodness of fit is part of the result.** A fit is *accepted* when its p-value is at least
``alpha`` (default :data:`ALPHA`). The asymptotic subset of the ladder is selected by a stated
rule (:func:`fit_order`): on the full ladder fit the leading-term model; if it is rejected or
does not pin an integer order (below), fit the model with the next term, which counts as
rejected, too, when the next term outweighs the leading one somewhere on the fitted steps
(:math:`|D| h_{\max} \ge |C|`: that is no asymptotic regime); if neither pins an order,
drop the largest step and repeat, while a model keeps at least one degree of freedom. The
first accepted fit that pins an integer order is used, else the first accepted fit (on the
largest subset), else the leading-term fit of the whole ladder. The :class:`Verdict`
then certifies an integer order only if

1. some fit was accepted,
2. a bias is resolved at all (the model without bias, :math:`v_i = \varphi_\star`, is
   rejected at level ``alpha``),
3. the order's confidence interval is narrower than one and contains exactly one positive
   integer :math:`n` (a wide interval that happens to contain one integer pins nothing),
4. the fitted bias is resolved (above :math:`z` standard errors) at three or more of the
   fitted steps -- with a fitted reference, its differences to the smallest step -- so the
   order does not rest on the largest steps alone, and
5. the integer models agree: with the powers fixed, the :math:`h^n` coefficient is resolved
   next to :math:`h^{n+1}`, and no :math:`h^{n-1}` coefficient is resolved in the richest
   accepted model with it (:math:`h^{n-1}, h^n, h^{n+1}`, else :math:`h^{n-1}, h^n`): a lower
   order with a small coefficient can masquerade as order :math:`n` when the later terms
   dominate the ladder. Unresolved is not excluded, so the largest :math:`h^{n-1}`
   coefficient the data allow (the end of its confidence interval in the simplest accepted
   model with it, :math:`h^{n-1}, h^n`, else :math:`h^{n-1}, h^n, h^{n+1}`) must also stay
   below the :math:`h^n` term at three or more of the fitted steps.

A certificate is a statement about the ladder it was computed on: a term of lower order that
stays below the error bars at every step cannot be seen by any fit, so the smallest step and
the number of walkers bound what is certified (the report says on which steps).

Otherwise the result is reported as *not certified*, with the reason and what to do. The
p-value uses the :math:`\chi^2_\nu` law for a known covariance; when the covariance was
estimated from ``samples`` independent batches it uses the Hotelling-type
:math:`F(\nu, n_b - n)` law of :math:`\chi^2 (n_b - n) / (\nu (n_b - 1))`.

References: weak-order estimation of SDE integrators, Kloeden & Platen, *Numerical Solution
of SDEs* (Springer 1992), sec. 14.1 and 17.1; profile-likelihood intervals, Venzon &
Moolgavkar, Appl. Statist. 37 (1988) 87; Hotelling's :math:`T^2`, Anderson, *An Introduction
to Multivariate Statistical Analysis* (Wiley 2003), sec. 5.2.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.optimize
import scipy.stats

from splitsde.base.stats import Estimate

__all__ = [
    "ALPHA",
    "Estimate",
    "FitAttempt",
    "OrderFit",
    "Verdict",
    "fit_order",
    "model_band",
]

#: Default significance level: a fit with a p-value below it is rejected.
ALPHA = 0.01

_P_MIN, _P_MAX = 0.2, 8.0  # search range of the order


@dataclass(frozen=True)
class FitAttempt:
    """One model fitted on one subset of the ladder while selecting the asymptotic regime."""

    hs: tuple[float, ...]
    model: str
    order: float
    chi2: float
    dof: int
    p_value: float
    accepted: bool

    def __str__(self) -> str:
        state = "accepted" if self.accepted else "rejected"
        return (
            f"h <= {max(self.hs):g} ({len(self.hs)} steps), {self.model}: p = {self.order:.3f}, "
            f"chi2/dof = {self.chi2:.3g}/{self.dof}, p-value {self.p_value:.3g} ({state})"
        )


@dataclass(frozen=True)
class Verdict:
    """Whether the data certify an integer weak order, and if not, why and what to do."""

    certified: bool
    order: int | None
    reason: str
    suggestions: tuple[str, ...] = ()

    def __str__(self) -> str:
        if self.certified:
            return f"certified: weak order {self.order} ({self.reason})"
        out = f"NOT CERTIFIED: {self.reason}"
        if self.suggestions:
            out += "; to fix: " + "; ".join(self.suggestions)
        return out


@dataclass(frozen=True)
class OrderFit:
    r"""Fit of :math:`v = \varphi_\star + C h^p\,[+ D h^{p+1}]` (see the module docstring).

    ``order``/``order_se`` and ``interval``: :math:`p` and its profile confidence interval at
    ``level`` (``order_se`` is half its width over :math:`z`); ``coefficient`` (:math:`C`),
    ``next_coefficient`` (:math:`D`, zero for the leading-term model); ``reference`` and
    ``reference_se``: :math:`\varphi_\star` (given or fitted) and ``reference_kind``;
    ``chi2``/``dof``/``p_value``: goodness of fit of the selected model on the steps ``hs``
    (``dropped``: steps left out as outside the asymptotic regime); ``attempts``: every
    model/subset tried; ``verdict``: the :class:`Verdict`.
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
    p_value: float = float("nan")
    alpha: float = ALPHA
    next_coefficient: float = 0.0
    next_coefficient_se: float = 0.0
    model: str = "C h^p"
    hs: tuple[float, ...] = ()
    dropped: tuple[float, ...] = ()
    reference_kind: str = "exact"
    lower: float = float("nan")
    upper: float = float("nan")
    attempts: tuple[FitAttempt, ...] = ()
    verdict: Verdict | None = None

    @property
    def interval(self) -> tuple[float, float]:
        """The confidence interval of the order at ``level`` (``-inf``/``inf`` where the data
        do not bound it)."""
        if not (math.isnan(self.lower) or math.isnan(self.upper)):
            return self.lower, self.upper
        z = float(scipy.stats.norm.ppf(0.5 + self.level / 2))
        return self.order - z * self.order_se, self.order + z * self.order_se

    @property
    def accepted(self) -> bool:
        """Whether the selected model passes the goodness-of-fit test (p-value >= alpha)."""
        return bool(self.p_value >= self.alpha)

    @property
    def certified(self) -> bool:
        return bool(self.verdict is not None and self.verdict.certified)

    @property
    def certified_order(self) -> int | None:
        return self.verdict.order if self.verdict is not None and self.verdict.certified else None

    def contains(self, p: float) -> bool:
        lo, hi = self.interval
        return lo <= p <= hi

    def __str__(self) -> str:
        lo, hi = self.interval
        txt = (
            f"order {self.order:.3f} ± {self.order_se:.3f} ({100 * self.level:.0f}% CI "
            f"[{lo:.3f}, {hi:.3f}]), C = {self.coefficient:.4g}, chi2/dof = {self.chi2:.3g}/"
            f"{self.dof}, p-value {self.p_value:.3g}"
        )
        if self.verdict is not None:
            txt += f"; {self.verdict}"
        return txt


# ---------------------------------------------------------------------------------------------
# One model on one subset
# ---------------------------------------------------------------------------------------------
@dataclass
class _Model:
    """The whitened problem of one subset: ``v = r + X(p) beta`` with ``r`` known or fitted."""

    x: np.ndarray  # h / hscale
    hscale: float
    vw: np.ndarray  # whitened values (minus a known reference)
    Linv: np.ndarray
    fit_ref: bool
    next_term: bool

    @property
    def n_linear(self) -> int:
        return int(self.fit_ref) + 1 + int(self.next_term)

    @property
    def dof(self) -> int:
        return len(self.x) - self.n_linear - 1

    def design(self, p: float) -> np.ndarray:
        cols = []
        if self.fit_ref:
            cols.append(np.ones_like(self.x))
        cols.append(self.x**p)
        if self.next_term:
            cols.append(self.x ** (p + 1))
        return self.Linv @ np.stack(cols, axis=1)

    def solve(self, p: float) -> tuple[np.ndarray, float, np.ndarray]:
        X = self.design(p)
        beta, *_ = np.linalg.lstsq(X, self.vw, rcond=None)
        r = self.vw - X @ beta
        return beta, float(r @ r), X

    def chi2(self, p: float) -> float:
        return self.solve(p)[1]


def _profile_minimum(m: _Model) -> float:
    grid = np.linspace(_P_MIN, _P_MAX, 157)
    vals = np.array([m.chi2(p) for p in grid])
    i = int(np.argmin(vals))
    lo, hi = grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)]
    res = scipy.optimize.minimize_scalar(
        m.chi2, bounds=(lo, hi), method="bounded", options={"xatol": 1e-10}
    )
    return float(res.x) if res.fun <= vals[i] else float(grid[i])


def _profile_bound(m: _Model, p_hat: float, target: float, direction: int) -> float:
    """Where the profile chi^2 first exceeds ``target`` going from ``p_hat`` in ``direction``;
    +-inf when it stays below within the search range."""
    edge = _P_MIN if direction < 0 else _P_MAX
    grid = np.linspace(p_hat, edge, 120)
    prev = p_hat
    for p in grid[1:]:
        if m.chi2(p) > target:
            return float(scipy.optimize.brentq(lambda q: m.chi2(q) - target, prev, p, xtol=1e-8))
        prev = p
    return -math.inf if direction < 0 else math.inf


def _p_value(chi2: float, dof: int, n: int, samples: int | None) -> float:
    if dof < 1:
        return float("nan")
    if samples is not None and samples > n + 1:
        f = chi2 * (samples - n) / (dof * (samples - 1))
        return float(scipy.stats.f.sf(f, dof, samples - n))
    return float(scipy.stats.chi2.sf(chi2, dof))


def _fit_one(
    h: np.ndarray,
    v: np.ndarray,
    cov: np.ndarray,
    ref: float | None,
    next_term: bool,
    level: float,
    samples: int | None,
    alpha: float,
) -> dict[str, Any]:
    hscale = float(np.exp(np.mean(np.log(h))))  # C fitted at a central step: well conditioned
    L = np.linalg.cholesky(cov)
    Linv = np.linalg.inv(L)
    fit_ref = ref is None
    vw = Linv @ (v - (0.0 if fit_ref else ref))
    m = _Model(h / hscale, hscale, vw, Linv, fit_ref, next_term)
    p = _profile_minimum(m)
    beta, chi2, X = m.solve(p)
    dof = m.dof
    s = max(1.0, chi2 / dof) if dof > 0 else 1.0
    z = float(scipy.stats.norm.ppf(0.5 + level / 2))
    target = chi2 + z * z * s
    lower = _profile_bound(m, p, target, -1)
    upper = _profile_bound(m, p, target, +1)
    # covariance of all parameters (linear ones and p) from the Jacobian at the optimum
    k = 0
    r0 = float(beta[0]) if fit_ref else float(ref)
    if fit_ref:
        k = 1
    c = float(beta[k])
    d = float(beta[k + 1]) if next_term else 0.0
    dmodel_dp = m.Linv @ ((c * m.x**p + d * m.x ** (p + 1)) * np.log(m.x))
    J = np.column_stack([X, dmodel_dp])
    pcov = np.linalg.pinv(J.T @ J) * s
    se = np.sqrt(np.abs(np.diag(pcov)))
    c_se = float(se[k])
    d_se = float(se[k + 1]) if next_term else 0.0
    r_se = float(se[0]) if fit_ref else 0.0
    # the model without any bias (v = reference): is a bias resolved at all?
    if fit_ref:
        one = m.Linv @ np.ones_like(m.x)
        r_null = m.vw - one * float(one @ m.vw) / float(one @ one)
    else:
        r_null = m.vw
    null_dof = len(h) - int(fit_ref)
    null_p = _p_value(float(r_null @ r_null), null_dof, len(h), samples)
    return {
        "data": (h, v, cov, ref, level),
        "alpha": alpha,
        "order": p,
        "lower": lower,
        "upper": upper,
        "order_se": (upper - lower) / (2 * z) if math.isfinite(upper - lower) else math.inf,
        # C h^p = c (h / hscale)^p
        "coefficient": c / hscale**p,
        "coefficient_se": c_se / hscale**p,
        "resolved": null_p < alpha,
        "null_p_value": null_p,
        "next_coefficient": d / hscale ** (p + 1),
        "next_coefficient_se": d_se / hscale ** (p + 1),
        "reference": r0,
        "reference_se": r_se,
        "chi2": chi2,
        "dof": dof,
        "p_value": _p_value(chi2, dof, len(h), samples),
        # an asymptotic expansion: the next term must stay a correction on the whole fitted
        # range, or p is not the order of an asymptotic regime (C h^p + D h^(p+1) with
        # D h > C can mimic any power)
        "dominated": bool(next_term and abs(d) * float(m.x.max()) >= abs(c)),
        "model": "C h^p + D h^(p+1)" if next_term else "C h^p",
    }


# ---------------------------------------------------------------------------------------------
# Selection and verdict
# ---------------------------------------------------------------------------------------------
def _verdict(best: dict[str, Any] | None, attempts: list[FitAttempt], alpha: float) -> Verdict:
    if best is None:
        worst = min(attempts, key=lambda a: a.p_value) if attempts else None
        detail = (
            f" (largest p-value {max(a.p_value for a in attempts):.2g} < {alpha:g}; on all "
            f"steps: chi2/dof = {worst.chi2:.3g}/{worst.dof})"
            if worst is not None
            else ""
        )
        return Verdict(
            False,
            None,
            "not in the asymptotic regime: the bias model C h^p (+ D h^(p+1)) is rejected on "
            "every subset of the ladder" + detail,
            (
                "use smaller steps (the largest ones are outside the asymptotic regime)",
                "use an exact or fine-step reference (reference='fine') if the reference "
                "itself may be biased",
                "check the error bars: runs that are not independent or not in equilibrium "
                "make them too small (longer burn-in)",
            ),
        )
    lo, hi = best["lower"], best["upper"]
    rng = f"[{lo:.3g}, {hi:.3g}]"
    if not best["resolved"]:
        return Verdict(
            False,
            None,
            "no bias resolved: the averages are consistent with the reference at every step "
            f"(p-value {best['null_p_value']:.2g} >= {alpha:g} without any bias term; the "
            "scheme may be exact for this observable, or the error bars are too large)",
            (
                "more walkers (the error bars shrink as 1/sqrt(walkers))",
                "common random numbers across steps (common_noise=True)",
                "larger steps, within the stability bound",
            ),
        )
    ints = [n for n in range(1, 9) if lo <= n <= hi]
    if not (math.isfinite(lo) and math.isfinite(hi)) or len(ints) > 1 or hi - lo >= 1.0:
        return Verdict(
            False,
            None,
            f"inconclusive: the order's confidence interval {rng} is too wide to pin an "
            "integer order (a certificate needs it narrower than 1)",
            (
                "more walkers: about 4x to halve the interval",
                "common random numbers across steps (common_noise=True)",
                "a wider ladder (a larger ratio of the largest to the smallest step)",
            ),
        )
    if not ints:
        return Verdict(
            False,
            None,
            f"the fitted order {best['order']:.3f} (interval {rng}) is not an integer: the "
            "steps may not be in the asymptotic regime, or the reference may be biased",
            (
                "use smaller steps",
                "use an exact or fine-step reference (reference='fine')",
                "more walkers, if the interval is narrow only because of underestimated errors",
            ),
        )
    n = ints[0]
    why = best.get("integer_check", _integer_check(best, n))
    if why:
        return Verdict(
            False,
            None,
            f"the order interval {rng} contains only {n}, but {why}",
            (
                "use smaller steps (reach the regime where the leading term dominates)",
                "more walkers",
            ),
        )
    return Verdict(
        True,
        n,
        f"order interval {rng}, {best['model']} accepted on h <= {max(best['hs']):g} with "
        f"p-value {best['p_value']:.2g} >= {alpha:g}",
    )


def _power_z(r: dict[str, Any], powers: Sequence[int]) -> tuple[float, int, float]:
    """z-score of the first coefficient of the linear GLS fit ``v = r + sum_k c_k h^k`` over
    ``powers`` (fixed integers) on the fit's subset, its degrees of freedom and p-value."""
    zk, dof, pv, _, _ = _power_fit(r, powers)
    return zk, dof, pv


def _power_fit(r: dict[str, Any], powers: Sequence[int]) -> tuple[float, int, float, float, float]:
    """:func:`_power_z`, and the first coefficient and its standard error in the units of
    the data (the coefficient of ``h^powers[0]``)."""
    h, v, cov, ref, _ = r["data"]
    hscale = float(np.exp(np.mean(np.log(h))))
    x = h / hscale
    Linv = np.linalg.inv(np.linalg.cholesky(cov))
    cols = ([np.ones_like(x)] if ref is None else []) + [x**k for k in powers]
    X = Linv @ np.stack(cols, axis=1)
    y = Linv @ (v - (0.0 if ref is None else ref))
    dof = len(h) - X.shape[1]
    beta, *_ = np.linalg.lstsq(X, y, rcond=None)
    res = y - X @ beta
    s = max(1.0, float(res @ res) / dof) if dof > 0 else 1.0
    se = np.sqrt(np.abs(np.diag(np.linalg.pinv(X.T @ X))) * s)
    k = 0 if ref is not None else 1
    zk = float(beta[k] / se[k]) if se[k] > 0 else math.inf
    pv = float(scipy.stats.chi2.sf(float(res @ res), dof)) if dof > 0 else math.nan
    scale = hscale ** powers[0]
    return zk, dof, pv, float(beta[k]) / scale, float(se[k]) / scale


def _resolved_steps(r: dict[str, Any], z: float) -> int:
    """At how many fitted steps the fitted bias is resolved: ``|C h^p + D h^(p+1)|`` above
    ``z`` standard errors (with a fitted reference: its difference to the smallest step,
    against the standard error of that difference, the smallest step counting as one)."""
    h, _, cov, ref, _ = r["data"]
    b = r["coefficient"] * h ** r["order"] + r["next_coefficient"] * h ** (r["order"] + 1)
    d = np.diag(cov)
    if ref is not None:
        return int(np.sum(np.abs(b) > z * np.sqrt(d)))
    diff_se = np.sqrt(np.clip(d + d[0] - 2 * cov[:, 0], 0.0, None))
    return 1 + int(np.sum((np.abs(b - b[0]) > z * diff_se)[1:]))


def _integer_check(r: dict[str, Any], n: int) -> str:
    """Why the integer order ``n`` cannot be certified from this fit's data, or ``""``: the
    :math:`h^n` term must be resolved next to :math:`h^{n+1}`, and no :math:`h^{n-1}` term may
    be resolved next to :math:`h^n, h^{n+1}` (a lower order with a small coefficient, masked
    over the ladder by the larger terms after it) -- nor allowed by the data to outweigh the
    :math:`h^n` term on all but two of the fitted steps."""
    z = float(scipy.stats.norm.ppf(0.5 + r["data"][4] / 2))
    h = r["data"][0]
    k = _resolved_steps(r, z)
    if k < 3:
        return (
            f"the fitted bias is resolved at only {k} of the steps it was fitted on (a power "
            "law needs three: the order would rest on the largest steps alone)"
        )
    zn, dof, _, cn, _ = _power_fit(r, [n, n + 1])
    if dof >= 1 and abs(zn) <= z:
        return (
            f"the h^{n} term is not resolved when h^{n + 1} is fitted next to it "
            f"(|z| = {abs(zn):.2g})"
        )
    if n >= 2:
        # the richest model with an h^(n-1) term that the data accept (the terms after h^n
        # must be in it, or their curvature reads as an h^(n-1) term)
        for powers in ([n - 1, n, n + 1], [n - 1, n]):
            zl, dof, pv = _power_z(r, powers)
            if dof >= 1 and pv >= r.get("alpha", ALPHA):
                if abs(zl) > z:
                    return (
                        f"an h^{n - 1} term is resolved next to the higher ones (|z| = "
                        f"{abs(zl):.2g}): the order may be {n - 1} with a small leading "
                        "coefficient, masked on this ladder by the terms after it"
                    )
                break
        # not resolved is not excluded: the h^(n-1) term the data still allow (the end of
        # its confidence interval in the simplest accepted model with it) must stay below
        # the h^n term at three or more of the fitted steps (as the bias itself must be
        # resolved at three), or order n-1 with a small coefficient describes the ladder too
        for powers in ([n - 1, n], [n - 1, n, n + 1]):
            _, dof, pv, cl, cl_se = _power_fit(r, powers)
            if dof >= 1 and pv >= r.get("alpha", ALPHA):
                allowed = abs(cl) + z * cl_se
                crossover = allowed / abs(cn) if cn != 0 else math.inf
                above = int(np.sum(h > crossover))
                if above < 3:
                    return (
                        f"an h^{n - 1} term is not excluded: up to {allowed:.2g} h^{n - 1} is "
                        f"allowed by the data, larger than the h^{n} term ({abs(cn):.2g} "
                        f"h^{n}) for h <= {crossover:.2g}, so the h^{n} term dominates at only "
                        f"{above} of the fitted steps (three are needed): order {n - 1} with "
                        "a small coefficient fits this ladder as well"
                    )
                break
    return ""


def _decisive(r: dict[str, Any], alpha: float) -> bool:
    """Whether an accepted fit pins an integer order (the certification rule)."""
    lo, hi = r["lower"], r["upper"]
    if not (r["resolved"] and math.isfinite(lo) and math.isfinite(hi) and hi - lo < 1.0):
        return False
    ints = [n for n in range(1, 9) if lo <= n <= hi]
    if len(ints) != 1:
        return False
    r["integer_check"] = _integer_check(r, ints[0])
    return not r["integer_check"]


def _between(r: dict[str, Any]) -> bool:
    """Whether a fit's order interval is finite and falls between two integers (a sign that
    the largest steps bias the order)."""
    lo, hi = r["lower"], r["upper"]
    return math.isfinite(lo) and math.isfinite(hi) and math.floor(hi) < math.ceil(lo) and lo > 0


def _as_cov(s: np.ndarray, n: int) -> np.ndarray:
    if s.ndim == 1:
        if s.shape != (n,):
            raise ValueError("hs, values and ses must be 1-D and of equal length")
        if np.any(~(s > 0)) or not np.all(np.isfinite(s)):
            raise ValueError("standard errors must be positive and finite")
        return np.diag(s * s)
    if s.shape != (n, n):
        raise ValueError(f"a covariance of the values must be ({n}, {n}), got {s.shape}")
    cov = 0.5 * (s + s.T)
    if not np.all(np.isfinite(cov)) or np.any(np.linalg.eigvalsh(cov) <= 0):
        raise ValueError("the covariance of the values must be positive definite")
    return cov


def fit_order(
    hs: Sequence[float],
    values: Sequence[float],
    ses: Sequence[float] | np.ndarray,
    reference: float | Estimate | None = None,
    *,
    level: float = 0.95,
    alpha: float = ALPHA,
    next_term: bool | None = None,
    select: bool = True,
    samples: int | None = None,
    reference_kind: str | None = None,
) -> OrderFit:
    r"""Fit :math:`v_i = \varphi_\star + C h_i^p\,[+ D h_i^{p+1}]` and judge it.

    Parameters
    ----------
    hs, values:
        The steps and the averages at them.
    ses:
        Standard errors (independent points) or the full covariance matrix of ``values``
        (points that share random numbers are correlated).
    reference:
        :math:`\varphi_\star`: a number (exact), an :class:`Estimate` (its error is common to
        every point), or ``None`` (fitted; at least four steps).
    alpha:
        Significance level of the goodness-of-fit test (a fit with a p-value below it is
        rejected).
    next_term:
        ``True``: only the model with the next term; ``False``: only the leading term;
        ``None`` (default): the leading term first, then the next term (see the module
        docstring).
    select:
        Select the asymptotic subset by dropping the largest steps while the models are
        rejected (see the module docstring); ``False`` fits all steps.
    samples:
        Number of independent batches the covariance was estimated from (``None``: known).
    reference_kind:
        How the reference was obtained, for the report (default: ``"exact"``, ``"estimate"``
        or ``"extrapolated"`` from ``reference``; ``"fine"`` when a fine-step run is among the
        points).
    """
    h = np.asarray(hs, np.float64)
    v = np.asarray(values, np.float64)
    if h.ndim != 1 or v.shape != h.shape:
        raise ValueError("hs, values and ses must be 1-D and of equal length")
    if np.any(~(h > 0)) or not np.all(np.isfinite(h)):
        raise ValueError("steps must be positive and finite")
    if not np.all(np.isfinite(v)):
        raise ValueError("values must be finite")
    if len(set(h.tolist())) != len(h):
        raise ValueError("the steps must be distinct")
    cov = _as_cov(np.asarray(ses, np.float64), len(h))
    fitted_ref = reference is None
    if fitted_ref and len(h) < 4:
        raise ValueError("fitting the reference too needs at least four steps")
    if not fitted_ref and len(h) < 3:
        raise ValueError("an order fit with a goodness-of-fit test needs at least three steps")
    if isinstance(reference, Estimate):
        ref, ref_se = float(reference.value), float(reference.se)
        cov = cov + ref_se**2
        kind = "estimate"
    elif reference is None:
        ref, ref_se, kind = None, 0.0, "extrapolated"
    else:
        ref, ref_se, kind = float(reference), 0.0, "exact"
    kind = reference_kind or kind
    order = np.argsort(h)
    h, v, cov = h[order], v[order], cov[np.ix_(order, order)]
    models = [False, True] if next_term is None else [bool(next_term)]
    attempts: list[FitAttempt] = []
    accepted: list[dict[str, Any]] = []
    fallback: dict[str, Any] | None = None
    done = False
    n = len(h)
    while n >= int(fitted_ref) + 3 and not done:
        for nt in models:
            n_par = int(fitted_ref) + 2 + int(nt)
            if n - n_par < 1:
                continue
            r = _fit_one(h[:n], v[:n], cov[:n, :n], ref, nt, level, samples, alpha)
            r["hs"] = tuple(h[:n].tolist())
            ok = bool(r["p_value"] >= alpha) and not r["dominated"]
            attempts.append(
                FitAttempt(r["hs"], r["model"], r["order"], r["chi2"], r["dof"], r["p_value"], ok)
            )
            if fallback is None:
                fallback = r
            if ok:
                accepted.append(r)
                if _decisive(r, alpha):
                    done = True
                    break
        if not select:
            break
        n -= 1
    best = next((r for r in accepted if _decisive(r, alpha)), accepted[0] if accepted else None)
    chosen = best or fallback
    if chosen is None:
        raise ValueError(
            f"{len(h)} steps are too few for a fit with a goodness-of-fit test "
            f"({'four' if fitted_ref else 'three'} or more are needed)"
        )
    verdict = _verdict(best, attempts, alpha)
    used = set(chosen["hs"])
    return OrderFit(
        order=chosen["order"],
        order_se=chosen["order_se"],
        coefficient=chosen["coefficient"],
        coefficient_se=chosen["coefficient_se"],
        reference=chosen["reference"],
        reference_se=chosen["reference_se"] if fitted_ref else ref_se,
        reference_fitted=fitted_ref,
        chi2=chosen["chi2"],
        dof=chosen["dof"],
        level=level,
        p_value=chosen["p_value"],
        alpha=alpha,
        next_coefficient=chosen["next_coefficient"],
        next_coefficient_se=chosen["next_coefficient_se"],
        model=chosen["model"],
        hs=chosen["hs"],
        dropped=tuple(x for x in h.tolist() if x not in used),
        reference_kind=kind,
        lower=chosen["lower"],
        upper=chosen["upper"],
        attempts=tuple(attempts),
        verdict=verdict,
    )


def model_band(
    fit: OrderFit,
    hs: Sequence[float],
    values: Sequence[float],
    cov: np.ndarray,
    h_eval: Sequence[float],
    points: int = 25,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r"""The fitted bias curve :math:`C h^p\,[+ D h^{p+1}]` at ``h_eval`` and its confidence
    band: the envelope of the curves refitted (linear parameters by GLS) at every order in the
    fit's profile interval -- the band that goes with the order's interval.

    ``hs``, ``values``, ``cov``: the data the fit was made from (the fitted subset is taken
    from ``fit.hs``). Returns ``(curve, lower, upper)``.
    """
    h = np.asarray(hs, np.float64)
    idx = [int(np.flatnonzero(np.isclose(h, x, rtol=1e-12, atol=0))[0]) for x in fit.hs]
    hsub = h[idx]
    vsub = np.asarray(values, np.float64)[idx]
    C = _as_cov(np.asarray(cov, np.float64), len(h))[np.ix_(idx, idx)]
    if not fit.reference_fitted:
        C = C + fit.reference_se**2
    hscale = float(np.exp(np.mean(np.log(hsub))))
    Linv = np.linalg.inv(np.linalg.cholesky(C))
    ref = None if fit.reference_fitted else fit.reference
    nt = fit.model != "C h^p"
    m = _Model(
        hsub / hscale, hscale, Linv @ (vsub - (0.0 if ref is None else ref)), Linv, ref is None, nt
    )
    x = np.asarray(h_eval, np.float64) / hscale

    def curve(p: float) -> np.ndarray:
        beta = m.solve(p)[0]
        k = int(m.fit_ref)
        out = beta[k] * x**p
        if nt:
            out = out + beta[k + 1] * x ** (p + 1)
        return out

    lo, hi = fit.interval
    lo = lo if math.isfinite(lo) else _P_MIN
    hi = hi if math.isfinite(hi) else _P_MAX
    curves = np.array([curve(p) for p in np.linspace(lo, hi, points)])
    return curve(fit.order), curves.min(axis=0), curves.max(axis=0)
