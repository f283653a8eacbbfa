r"""The exact law of a linear SDE and the exact weak errors of a scheme against it.

For :math:`dy = (A(t) y + b(t))\,dt + G(t)\,dW` with :math:`K = GG^\top`, a Gaussian start
stays Gaussian:

.. math:: \dot m = A m + b, \qquad \dot\Sigma = A\Sigma + \Sigma A^\top + K .

With constant coefficients the law at time :math:`T` is exact in closed form:
:math:`m_T = e^{AT} m_0 + \int_0^T e^{As}ds\,b`,
:math:`\Sigma_T = e^{AT}\Sigma_0 e^{A^\top T} + \int_0^T e^{As} K e^{A^\top s} ds` (the
integrals by one augmented matrix exponential each, Van Loan 1978, via
:mod:`splitsde.symbolic.numeric`); with time-dependent coefficients the moment ODE is
integrated to round-off tolerance. The stationary law solves
:math:`A\Sigma + \Sigma A^\top + K = 0`.

:func:`linear_sde` reads :math:`A, b, K` from an integrator's SDE *by probing its drift*: the
flows' drift expressions are evaluated with the integrator's own bound fields on basis states
(and checked for affinity), so a field given only as a torch callable works too.

:func:`weak_error_ladder` compares the scheme's exact law (:func:`~splitsde.analysis.affine.
propagate`) with the SDE's exact law at a fixed time over a ladder of steps, and fits log--log
slopes: the finite-time weak order without Monte Carlo.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.integrate
import scipy.linalg
import sympy
import torch

from splitsde.analysis.affine import (
    AFFINE_RTOL,
    NotAffineError,
    UnstableError,
    _as_mean_cov,
    affine_step,
    layout_of,
    propagate,
    stationary,
)
from splitsde.runtime.layout import StateLayout
from splitsde.symbolic.field import field_applications, field_of
from splitsde.symbolic.numeric import forced_response, van_loan
from splitsde.symbolic.spellings import lambdify as spell_lambdify
from splitsde.symbolic.symbols import Block, Parameter, t

__all__ = [
    "LadderResult",
    "LinearSDE",
    "linear_sde",
    "loglog_slopes",
    "second_moments",
    "stationary_bias",
    "weak_error_ladder",
]


@dataclass
class LinearSDE:
    r""":math:`dy = (A(t)y + b(t))dt + G(t)dW`, :math:`K = GG^\top`, on a flat layout.

    ``coefficients(t) -> (A, b, K)`` in float64; ``autonomous`` says whether they depend on
    ``t``.
    """

    coefficients: Callable[[float], tuple[np.ndarray, np.ndarray, np.ndarray]]
    layout: StateLayout
    autonomous: bool

    @property
    def dim(self) -> int:
        return self.layout.dim

    @classmethod
    def constant(cls, A: Any, b: Any, K: Any, layout: StateLayout | None = None) -> LinearSDE:
        """A linear SDE with constant coefficients given as arrays."""
        A = np.asarray(A, np.float64)
        D = A.shape[0]
        b = np.zeros(D) if b is None else np.asarray(b, np.float64).reshape(D)
        K = np.asarray(K, np.float64)
        if K.ndim == 1:
            K = np.diag(K)
        if layout is None:
            layout = StateLayout(tuple(f"y{i}" for i in range(D)), ((),) * D)
        return cls(lambda _t: (A, b, K), layout, True)

    def law(self, t0: float, t1: float, mean0: Any, cov0: Any) -> tuple[np.ndarray, np.ndarray]:
        """Exact mean and covariance at ``t1`` from :math:`N(m_0, \\Sigma_0)` at ``t0``."""
        m0, S0 = _as_mean_cov(mean0, cov0, self.dim)
        T = float(t1) - float(t0)
        if T < 0:
            raise ValueError(f"t1 = {t1} is before t0 = {t0}")
        if T == 0:
            return m0, S0
        if self.autonomous:
            A, b, K = self.coefficients(t0)
            E, Q = van_loan(A, K, np.asarray(T))
            m = E @ m0 + (forced_response(A, b, np.asarray(T)) if np.any(b) else 0.0)
            S = E @ S0 @ E.T + Q
            return m, 0.5 * (S + S.T)
        D = self.dim

        def rhs(tt: float, z: np.ndarray) -> np.ndarray:
            A, b, K = self.coefficients(tt)
            m, S = z[:D], z[D:].reshape(D, D)
            return np.concatenate([A @ m + b, (A @ S + S @ A.T + K).ravel()])

        sol = scipy.integrate.solve_ivp(
            rhs,
            (t0, t1),
            np.concatenate([m0, S0.ravel()]),
            method="DOP853",
            rtol=1e-12,
            atol=1e-14,
        )
        if not sol.success:  # pragma: no cover - DOP853 on a linear ODE
            raise RuntimeError(f"moment ODE failed: {sol.message}")
        z = sol.y[:, -1]
        S = z[D:].reshape(D, D)
        return z[:D], 0.5 * (S + S.T)

    def stationary(self) -> tuple[np.ndarray, np.ndarray]:
        r"""Stationary mean :math:`-A^{-1}b` and covariance (continuous Lyapunov equation)."""
        if not self.autonomous:
            raise ValueError("a time-dependent SDE has no stationary law")
        A, b, K = self.coefficients(0.0)
        ev = np.linalg.eigvals(A)
        if not np.all(ev.real < 0):
            raise UnstableError(
                f"the SDE has no stationary law: its drift matrix has an eigenvalue with real "
                f"part {ev.real.max():.6g} >= 0",
                float(np.exp(ev.real.max())),
            )
        S = scipy.linalg.solve_continuous_lyapunov(A, -K)
        return -np.linalg.solve(A, b), 0.5 * (S + S.T)


def _torch_params(params: Mapping[Parameter, Any]) -> dict[Parameter, torch.Tensor]:
    out = {}
    for p, v in params.items():
        out[p] = (
            v.to(torch.float64)
            if isinstance(v, torch.Tensor)
            else torch.tensor(float(v), dtype=torch.float64)
        )
    return out


def linear_sde(integrator: Any, shapes: Mapping[str, Any] | None = None) -> LinearSDE:
    r"""The integrator's SDE as a :class:`LinearSDE`, probing its total drift (with the bound
    fields) and its noise variances on the flat layout given by ``shapes``.

    Raises :class:`~splitsde.analysis.affine.NotAffineError` when the drift is not affine or
    the noise depends on the state.
    """
    sde = integrator.sde
    layout = layout_of(integrator, shapes)
    D = layout.dim
    blocks: tuple[Block, ...] = tuple(sde.blocks)
    bound = {bf.field: bf.fn for bf in integrator.fields}
    params = _torch_params(integrator.params)
    P = sorted(params, key=str)
    drift, variance = sde.drift, sde.noise_variance
    block_set = set(blocks)
    timed = False
    compiled = []
    for b in blocks:
        e = drift[b]
        apps = sorted(field_applications(e), key=sympy.default_sort_key)
        dummies = [sympy.Dummy(f"f{i}") for i in range(len(apps))]
        e_plain = e.xreplace(dict(zip(apps, dummies)))
        timed |= t in e.free_symbols
        app_fns = []
        for app in apps:
            f, out = field_of(app)
            if f not in bound:
                raise ValueError(
                    f"field {f.name} is not bound in the integrator (is every flow in the word?)"
                )
            timed |= f.time
            arg_fns = [
                spell_lambdify([*blocks, t, *P], a, "torch") for a in app.args[: len(f.depends)]
            ]
            label = app.args[len(f.depends)] if f.time else None
            # the time label of a time-dependent field, compiled once (None: the time itself)
            label_fn = spell_lambdify([t], label, "math") if label is not None else None
            app_fns.append((f, out, arg_fns, label_fn))
        fn = spell_lambdify([*blocks, t, *P, *dummies], e_plain, "torch")
        compiled.append((fn, app_fns))
    var_fns = []
    for b in blocks:
        v = variance[b]
        if v.free_symbols & block_set or field_applications(v):
            raise NotAffineError(
                f"the noise of block {b} depends on the state (multiplicative noise): "
                "not linear-Gaussian"
            )
        timed |= t in v.free_symbols
        var_fns.append(spell_lambdify([t, *P], v, "torch"))

    rng = np.random.default_rng(4321)
    n_check = 2
    B = 1 + D + n_check
    Y = np.zeros((B, D))
    Y[1 : 1 + D] = np.eye(D)
    Y[1 + D :] = rng.standard_normal((n_check, D)) * np.array([[1.0], [3.0]])
    states = [
        torch.from_numpy(np.ascontiguousarray(Y[:, lay.slice]).reshape(B, *lay.shape))
        for lay in layout
    ]
    pvals = [params[p] for p in P]

    def as_tensor(v: Any, like: torch.Tensor) -> torch.Tensor:
        v = torch.as_tensor(v, dtype=torch.float64)
        return v.expand_as(like) if v.shape != like.shape else v

    def coefficients(tt: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        tt = float(tt)
        tt_t = torch.tensor(tt, dtype=torch.float64)
        outs = []
        with torch.no_grad():
            for (fn, app_fns), x in zip(compiled, states):
                vals = []
                for f, out, arg_fns, label_fn in app_fns:
                    args = [as_tensor(af(*states, tt_t, *pvals), states[0]) for af in arg_fns]
                    if f.time:
                        lab = float(label_fn(tt)) if label_fn is not None else tt
                        res = bound[f](*args, lab)
                    else:
                        res = bound[f](*args)
                    vals.append(res[out] if isinstance(res, tuple) else res)
                v = fn(*states, tt_t, *pvals, *vals)
                outs.append(as_tensor(v, x).reshape(B, -1).numpy())
        F = np.concatenate(outs, axis=1)
        b0 = F[0]
        A = (F[1 : 1 + D] - b0).T
        pred = b0 + Y[1 + D :] @ A.T
        scale = np.abs(b0).max(initial=0) + np.abs(Y[1 + D :] @ np.abs(A).T).max(initial=0)
        err = np.abs(F[1 + D :] - pred).max(initial=0) / max(scale, 1e-300)
        if err > AFFINE_RTOL:
            raise NotAffineError(
                f"the SDE's drift is not affine (relative deviation {err:.2e} on a random probe): "
                "the exact analysis applies to linear problems"
            )
        kdiag = []
        for vf, lay in zip(var_fns, layout):
            v = vf(tt_t, *pvals)
            like = torch.zeros(lay.shape, dtype=torch.float64)
            kdiag.append(as_tensor(v, like).reshape(-1).numpy())
        return A, b0, np.diag(np.concatenate(kdiag))

    autonomous = not timed and all(
        t not in e.free_symbols for f in sde.fields.values() for e in (f.definition or {}).values()
    )
    return LinearSDE(coefficients, layout, autonomous)


def second_moments(mean: np.ndarray, cov: np.ndarray) -> np.ndarray:
    r""":math:`E[yy^\top] = \Sigma + mm^\top`."""
    return cov + np.outer(mean, mean)


def loglog_slopes(hs: Sequence[float], errors: Sequence[float]) -> np.ndarray:
    """Slopes of :math:`\\log|e|` against :math:`\\log h` between consecutive steps."""
    hs = np.asarray(hs, np.float64)
    e = np.abs(np.asarray(errors, np.float64))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.diff(np.log(e)) / np.diff(np.log(hs))


@dataclass
class LadderResult:
    """Exact weak errors over a ladder of steps and their log--log slopes.

    ``errors[i]`` is the largest absolute error over the entries of the mean and the second
    moment (or of ``observable``) at ``T`` with step ``hs[i]``; ``order`` is the slope between
    the two smallest steps rounded to an integer when within ``0.1`` of one (else ``None``).
    """

    hs: np.ndarray
    errors: np.ndarray
    slopes: np.ndarray
    T: float
    order: int | None
    details: list[dict[str, np.ndarray]] = field(default_factory=list, repr=False)


def weak_error_ladder(
    integrator: Any,
    T: float,
    hs: Sequence[float],
    mean0: Any,
    cov0: Any,
    shapes: Mapping[str, Any] | None = None,
    *,
    t0: float = 0.0,
    sde: LinearSDE | None = None,
    observable: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
) -> LadderResult:
    r"""Exact finite-time weak errors of ``integrator`` at ``T`` for every step in ``hs``
    (each must divide ``T``), against the SDE's exact law, and the log--log slopes.

    The default observable is every entry of the mean and of :math:`E[yy^\top]` (all linear
    and quadratic observables); ``observable(mean, cov)`` may return any array instead.
    """
    sde = sde or linear_sde(integrator, shapes)
    m_ex, S_ex = sde.law(t0, t0 + T, mean0, cov0)
    obs = observable or (lambda m, S: np.concatenate([m, second_moments(m, S).ravel()]))
    ref = np.asarray(obs(m_ex, S_ex))
    hs = np.asarray(sorted(hs, reverse=True), np.float64)
    errors, details = [], []
    for hh in hs:
        n = T / hh
        if abs(n - round(n)) > 1e-9 * max(1.0, n):
            raise ValueError(f"step {hh} does not divide T = {T}")
        grid = t0 + hh * np.arange(round(n) + 1)
        grid[-1] = t0 + T
        m, S = propagate(integrator, grid, mean0, cov0, shapes)
        val = np.asarray(obs(m, S))
        errors.append(float(np.abs(val - ref).max()))
        details.append({"value": val, "exact": ref})
    errors_a = np.asarray(errors)
    slopes = loglog_slopes(hs, errors_a)
    order = None
    if len(slopes) and np.isfinite(slopes[-1]) and abs(slopes[-1] - round(slopes[-1])) < 0.1:
        order = round(float(slopes[-1]))
    return LadderResult(hs, errors_a, slopes, float(T), order, details)


def stationary_bias(
    integrator: Any,
    h: float,
    shapes: Mapping[str, Any] | None = None,
    sde: LinearSDE | None = None,
) -> dict[str, np.ndarray]:
    r"""The scheme's exact stationary law at step ``h`` against the SDE's: means, covariances,
    second moments and the relative bias of the second moments (entrywise, relative to the
    largest exact entry of the same row and column scale
    :math:`\sqrt{E[y_i^2]E[y_j^2]}`)."""
    sde = sde or linear_sde(integrator, shapes)
    m, S = stationary(affine_step(integrator, 0.0, h, shapes))
    me, Se = sde.stationary()
    M2, M2e = second_moments(m, S), second_moments(me, Se)
    scale = np.sqrt(np.outer(np.diag(M2e), np.diag(M2e)))
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(scale > 0, (M2 - M2e) / scale, 0.0)
    return {
        "mean": m,
        "cov": S,
        "mean_exact": me,
        "cov_exact": Se,
        "second": M2,
        "second_exact": M2e,
        "relative_bias": rel,
    }
