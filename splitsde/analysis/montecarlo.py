r"""Monte Carlo weak-order estimation for problems without an exact answer for the scheme.

Averages of an observable are estimated with :func:`splitsde.integrate` (the one time loop)
over many independent walkers; whole walkers form the batches of the error bars, so no
autocorrelation time has to be estimated. :func:`estimate_weak_order` runs a ladder of steps
and fits the bias model of :mod:`splitsde.analysis.fit`,

.. math:: \bar\varphi(h) = \varphi_\star + C\,h^p \;[+ D\,h^{p+1}],

judging the fit (goodness of fit, asymptotic subset, a :class:`~splitsde.analysis.fit.Verdict`)
so that a confident order is never reported when the data reject it.

* **Common random numbers** (default): every step of the ladder is driven by the same
  Brownian path, coarsened (:class:`~splitsde.analysis.common_noise.CommonNoise`), so the
  averages at different steps are strongly correlated and their differences -- the biases --
  are far more precise than their spread. The full covariance of the averages (from the
  walkers' values at every step) enters the fit, and the gain is measured: the variance of a
  bias difference with independent noise over its variance with common noise
  (:attr:`WeakOrderResult.variance_reduction`).
* **The reference** is explicit: a number (exact, quadrature), an
  :class:`~splitsde.analysis.fit.Estimate`, ``"extrapolated"`` (fitted) or ``"fine"`` (a
  fine-step run on the same path, one more point of the fit, whose own error is part of the
  model).
* **An unstable step** (a non-finite state, or walkers whose values lie more than
  :data:`DIVERGED_MADS` median absolute deviations from the median) is recorded with the step
  and sub-step where it diverged, and, for linear problems, the scheme's stability bound; the
  rest of the ladder is kept.
* **Several processes**: under ``torch.distributed`` (see
  :mod:`splitsde.analysis.distributed`) the walkers are sharded, every rank draws from its own
  stream seeded from ``(seed, rank)``, and the float64 sums of the walkers' values and their
  products are all-reduced.

References: weak-order estimation of SDE integrators, Kloeden & Platen, *Numerical Solution
of SDEs* (Springer 1992), sec. 14.1 and 17.1; batch means: Flyvbjerg & Petersen, J. Chem.
Phys. 91 (1989) 461 (here with independent walkers as batches); common random numbers:
Glasserman, *Monte Carlo Methods in Financial Engineering* (Springer 2004), sec. 4.1.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from splitsde.analysis.common_noise import CommonNoise, brownian_levels, fine_step
from splitsde.analysis.distributed import World, current_world, rank_seed
from splitsde.analysis.fit import ALPHA, Estimate, OrderFit, Verdict, fit_order
from splitsde.base.errors import SplitsdeError
from splitsde.base.progress import progress_bar
from splitsde.base.stats import walker_batch_means
from splitsde.runtime.integrate import integrate
from splitsde.runtime.integrator import NonFiniteError
from splitsde.runtime.noise import GaussianNoise
from splitsde.runtime.observers import Running

__all__ = [
    "Estimate",
    "LadderPoint",
    "MonteCarloOptions",
    "OrderFit",
    "WeakOrderResult",
    "estimate_weak_order",
    "final_average",
    "fit_order",
    "ladder_cost",
    "stationary_average",
]

Observable = Callable[[Mapping[str, torch.Tensor]], torch.Tensor]


class LadderError(SplitsdeError, ValueError):
    """A step ladder or its options cannot be run."""


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


# ---------------------------------------------------------------------------------------------
# The ladder estimator
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LadderPoint:
    """One step of a Monte Carlo ladder: its average, or why there is none.

    ``status`` is ``"ok"``, ``"unstable"`` (the run diverged; ``message`` says at which step
    and sub-step, ``stability_bound`` is the scheme's linear stability bound when the problem
    is linear) or ``"reference"`` (the fine-step run of ``reference="fine"``).
    """

    h: float
    status: str
    estimate: Estimate | None
    steps: int
    message: str = ""
    stability_bound: float | None = None


@dataclass
class WeakOrderResult:
    """Averages over a step ladder, the fitted weak order and its verdict.

    ``hs``/``estimates``: the steps that ran stably and their averages (``points`` has every
    step, unstable ones included, and the fine-step run); ``cov``: the covariance of the
    averages entering the fit (``fit_hs`` order); ``fit``: the
    :class:`~splitsde.analysis.fit.OrderFit` (``None`` with too few stable steps);
    ``variance_reduction``: median over the steps of the variance of the difference to the
    smallest step's average with independent noise over that with common random numbers;
    ``independent_fit``: the same fit with the correlations dropped (what independent noise
    with the same walkers would have given).
    """

    hs: np.ndarray
    estimates: list[Estimate]
    fit: OrderFit | None
    reference: float | Estimate | str | None
    extra: dict[str, Any] = field(default_factory=dict)
    points: list[LadderPoint] = field(default_factory=list)
    fit_hs: np.ndarray = field(default_factory=lambda: np.zeros(0))
    cov: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    reference_kind: str = "exact"
    fine: LadderPoint | None = None
    common_noise: bool = True
    variance_reduction: float | None = None
    independent_fit: OrderFit | None = None
    walkers: int = 0
    world_size: int = 1
    walker_steps: int = 0
    wall_time: float = 0.0
    mode: str = "stationary"
    T: float | None = None
    declared_order: int | None = None
    observable: str = "observable"
    bias_se: np.ndarray = field(default_factory=lambda: np.zeros(0))

    @property
    def biases(self) -> np.ndarray:
        """Averages minus the (given or fitted) reference, at :attr:`hs`."""
        ref = self.fit.reference if self.fit is not None else np.nan
        return np.array([e.value for e in self.estimates]) - ref

    @property
    def unstable(self) -> list[LadderPoint]:
        return [p for p in self.points if p.status == "unstable"]

    @property
    def verdict(self) -> Verdict:
        if self.fit is not None and self.fit.verdict is not None:
            return self.fit.verdict
        n = len(self.estimates)
        why = self.extra.get("fit_error") or "too few for a fit with a goodness-of-fit test"
        return Verdict(
            False,
            None,
            f"{n} step(s) ran stably: {why}",
            ("use more steps, below the stability bound",),
        )

    @property
    def certified_order(self) -> int | None:
        v = self.verdict
        return v.order if v.certified else None

    def format(self, verdict: bool = True) -> str:
        """The ladder, the fit and (with ``verdict``) the verdict as readable text."""
        what = (
            f"final {self.observable} at T = {self.T:g}"
            if self.mode == "final"
            else f"stationary average of {self.observable}"
        )
        noise = "common random numbers" if self.common_noise else "independent noise per step"
        lines = [
            f"Monte Carlo weak order: {what}; {self.walkers} walkers"
            + (f" on {self.world_size} processes" if self.world_size > 1 else "")
            + f", {noise}, {self.walker_steps:.3g} walker-steps in {self.wall_time:.1f} s"
        ]
        ref_value = self.fit.reference if self.fit is not None else math.nan
        lines.append(f"  {'h':>10}  {'average':>12} {'± se':>9}  {'bias':>11} {'± se':>9}")
        bias_se = dict(zip(self.fit_hs.tolist(), self.bias_se.tolist()))
        used = set(self.fit.hs) if self.fit is not None else set()
        for p in self.points:
            if p.status == "unstable":
                bound = (
                    f" (linear stability bound h < {p.stability_bound:.6g})"
                    if p.stability_bound is not None
                    else ""
                )
                lines.append(f"  {p.h:>10.6g}  unstable: {p.message}{bound}")
                continue
            e = p.estimate
            assert e is not None
            tag = "  fine-step reference run" if p.status == "reference" else ""
            if p.status == "ok" and self.fit is not None and p.h not in used:
                tag = "  (left out: outside the asymptotic regime)"
            lines.append(
                f"  {p.h:>10.6g}  {e.value:>12.6g} {e.se:>9.2g}  {e.value - ref_value:>+11.4g} "
                f"{bias_se.get(p.h, math.nan):>9.2g}{tag}"
            )
        if self.fit is not None:
            f = self.fit
            kind = {
                "exact": "exact value",
                "estimate": "given estimate (its error is propagated)",
                "extrapolated": "extrapolated (fitted)",
                "fine": "fitted with the fine-step run on the same path (its own error C h^p "
                "is part of the model)",
            }.get(f.reference_kind, f.reference_kind)
            lines.append(f"  reference: {f.reference:.8g} ± {f.reference_se:.2g}, {kind}")
            lo, hi = f.interval
            lines.append(
                f"  fit: {f.model} on h <= {max(f.hs):g}: order {f.order:.3f}, "
                f"{100 * f.level:.0f}% interval [{lo:.3f}, {hi:.3f}], chi2/dof = "
                f"{f.chi2:.3g}/{f.dof}, p-value {f.p_value:.3g} (a fit is rejected below "
                f"{f.alpha:g})"
            )
            if f.dropped:
                lines.append(
                    "  left out as outside the asymptotic regime (the model was rejected with "
                    f"them): h = {', '.join(f'{x:g}' for x in f.dropped)}"
                )
        if self.common_noise and self.variance_reduction is not None:
            txt = (
                f"  common random numbers: the differences between steps have "
                f"{self.variance_reduction:.3g}x less variance than with independent noise"
            )
            if self.independent_fit is not None:
                lo, hi = self.independent_fit.interval
                txt += f" (independent noise: order interval [{lo:.3f}, {hi:.3f}])"
            lines.append(txt)
        if self.declared_order is not None and self.mode == "final":
            lines.append(f"  declared finite-time weak order: {self.declared_order}")
        if verdict:
            lines.append(f"  verdict: {self.verdict}")
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready summary (``null`` for "not available")."""

        def fin(x: float | None) -> float | None:
            return float(x) if x is not None and math.isfinite(x) else None

        f = self.fit
        v = self.verdict
        return {
            "mode": self.mode,
            "T": self.T,
            "observable": self.observable,
            "walkers": self.walkers,
            "world_size": self.world_size,
            "common_noise": self.common_noise,
            "walker_steps": self.walker_steps,
            "seconds": round(self.wall_time, 3),
            "points": [
                {
                    "h": p.h,
                    "status": p.status,
                    "value": None if p.estimate is None else p.estimate.value,
                    "se": None if p.estimate is None else p.estimate.se,
                    "steps": p.steps,
                    "message": p.message,
                    "stability_bound": p.stability_bound,
                }
                for p in self.points
            ],
            "reference_kind": self.reference_kind,
            "fit": None
            if f is None
            else {
                "model": f.model,
                "order": fin(f.order),
                "interval": [fin(f.interval[0]), fin(f.interval[1])],
                "coefficient": fin(f.coefficient),
                "reference": fin(f.reference),
                "reference_se": fin(f.reference_se),
                "chi2": fin(f.chi2),
                "dof": f.dof,
                "p_value": fin(f.p_value),
                "alpha": f.alpha,
                "hs": list(f.hs),
                "dropped": list(f.dropped),
            },
            "variance_reduction": fin(self.variance_reduction),
            "independent_interval": None
            if self.independent_fit is None
            else [fin(x) for x in self.independent_fit.interval],
            "declared_order": self.declared_order,
            "certified": v.certified,
            "certified_order": v.order if v.certified else None,
            "verdict": str(v),
            "reason": v.reason,
            "suggestions": list(v.suggestions),
        }

    def __str__(self) -> str:
        return self.format()


def _common_grid(hs: Sequence[float]) -> float:
    """The largest step of which every step in ``hs`` is an integer multiple."""
    from fractions import Fraction

    fr = [Fraction(x).limit_denominator(10**9) for x in hs]
    for x, f in zip(hs, fr):
        if abs(float(f) - x) > 1e-12 * x:
            raise LadderError(f"step {x!r} is not a ratio of small integers")
    num = math.gcd(
        *(f.numerator * (math.lcm(*(g.denominator for g in fr)) // f.denominator) for f in fr)
    )
    g = Fraction(num, math.lcm(*(f.denominator for f in fr)))
    if max(fr) / g > 4096:
        raise LadderError(
            "common random numbers need steps that are integer multiples of one fine step; "
            f"for {', '.join(f'{x:g}' for x in hs)} that step is {float(g):g}, too fine "
            "(> 4096 fine intervals per step): use a ladder like h0 * (1, 2, 4, 8) or "
            "common_noise=False"
        )
    return float(g)


def _common_multiple(hs: Sequence[float], dt: float) -> float:
    """The smallest multiple of every step in ``hs`` on the grid ``dt``."""
    m = math.lcm(*(round(x / dt) for x in hs))
    if m > 4096:
        raise LadderError(
            "common random numbers on this ladder need a common multiple of "
            f"{m} fine intervals of {dt:g}: use a nested ladder like h0 * (1, 2, 4, 8) or "
            "common_noise=False"
        )
    return m * dt


def ladder_cost(
    hs: Sequence[float],
    walkers: int,
    *,
    mode: str = "stationary",
    T: float | None = None,
    burn_in_time: float = 0.0,
    sample_time: float | None = None,
    fine_factor: int | None = None,
) -> int:
    """Walker-steps a ladder costs (``fine_factor``: include the fine-step run at
    ``min(hs) / fine_factor``)."""
    steps = [_steps(h, mode, T, burn_in_time, sample_time)[0] for h in hs]
    if fine_factor:
        steps.append(_steps(min(hs) / fine_factor, mode, T, burn_in_time, sample_time)[0])
    return int(walkers) * int(sum(steps))


def _steps(
    h: float, mode: str, T: float | None, burn_in_time: float, sample_time: float | None
) -> tuple[int, int]:
    """(total steps, burn-in steps) of one run."""
    if mode == "stationary":
        if sample_time is None or not sample_time > 0:
            raise LadderError("stationary mode needs a positive sample_time")
        burn = round(burn_in_time / h)
        return burn + max(1, round(sample_time / h)), burn
    if T is None or not T > 0:
        raise LadderError("final mode needs a positive T")
    n = T / h
    if abs(n - round(n)) > 1e-9 * max(1.0, n) or round(n) < 1:
        raise LadderError(f"step {h:g} does not divide T = {T:g}")
    return round(n), 0


def _walkers(state: Mapping[str, torch.Tensor]) -> int:
    return int(next(iter(state.values())).shape[0])


def _shard(state: Mapping[str, torch.Tensor], world: World) -> dict[str, torch.Tensor]:
    if not world.distributed:
        return dict(state)
    n = _walkers(state)
    sl = world.shard(n)
    return {k: v[sl] for k, v in state.items()}


def _linear_bound(integ: Any, h: float) -> float | None:
    """The linear stability bound below ``h`` when the problem is linear, else ``None``."""
    from splitsde.analysis.affine import NotAffineError
    from splitsde.analysis.stability import integrator_stability_bound

    try:
        return integrator_stability_bound(integ, h * 1e-3, h * (1 + 1e-9))
    except (NotAffineError, ValueError):
        return None


#: A walker whose value lies this many median absolute deviations from the median has diverged.
DIVERGED_MADS = 1e6


def _diverged(values: np.ndarray) -> str:
    """Why some walkers count as diverged (non-finite, or more than :data:`DIVERGED_MADS`
    median absolute deviations from the median), or ``""``."""
    bad = ~np.isfinite(values)
    if bad.any():
        return f"the observable is not finite for {int(bad.sum())} walker(s)"
    med = float(np.median(values))
    mad = float(np.median(np.abs(values - med)))
    if mad > 0:
        far = np.abs(values - med) > DIVERGED_MADS * mad
        if far.any():
            return (
                f"{int(far.sum())} walker(s) diverged (values up to "
                f"{float(np.abs(values[far]).max()):.3g}, more than {DIVERGED_MADS:.0e} median "
                "absolute deviations from the median): the step is outside the scheme's "
                "stability region for them"
            )
    return ""


def _batch_rows(values: np.ndarray, batches: int | None, total: int) -> np.ndarray:
    """Rows that are independent samples: walkers, or contiguous groups of them."""
    if batches is None or batches >= total:
        return values
    local = max(1, round(batches * len(values) / total))
    return np.stack([g.mean(axis=0) for g in np.array_split(values, local)])


def estimate_weak_order(
    make_integrator: Callable[[float], Any] | Any,
    hs: Sequence[float],
    y0: Mapping[str, torch.Tensor] | Callable[[float], Mapping[str, torch.Tensor]],
    observable: Observable,
    *,
    reference: float | Estimate | str | None = None,
    mode: str = "stationary",
    T: float | None = None,
    burn_in_time: float = 0.0,
    sample_time: float | None = None,
    every: int = 1,
    seed: int = 0,
    level: float = 0.95,
    alpha: float = ALPHA,
    batches: int | None = None,
    common_noise: bool = True,
    fine_factor: int = 4,
    next_term: bool | None = None,
    select: bool = True,
    progress: bool | None = False,
    world: World | None = None,
    observable_name: str = "observable",
) -> WeakOrderResult:
    r"""Estimate the weak order of a scheme from Monte Carlo averages over the steps ``hs``,
    with a verdict (see the module docstring and :mod:`splitsde.analysis.fit`).

    Parameters
    ----------
    make_integrator:
        An integrator, or a function ``h -> integrator``.
    hs:
        The ladder of steps (with common random numbers: integer multiples of one step, such
        as ``h0 * (1, 2, 4, 8)``).
    y0:
        The initial state of all walkers (the same for every step), or ``h -> state``. Under
        ``torch.distributed`` every rank passes the full state and runs its shard of walkers.
    observable:
        ``state -> (walkers,)`` or ``(walkers, ...)`` (trailing axes are averaged).
    reference:
        A number (exact), an :class:`~splitsde.analysis.fit.Estimate`, ``"fine"`` (a run at
        ``min(hs) / fine_factor`` on the same noise, fitted with the ladder) or
        ``"extrapolated"``/``None`` (fitted from the ladder alone).
    mode, T, burn_in_time, sample_time, every:
        ``"stationary"``: per-walker time averages over ``sample_time`` after
        ``burn_in_time`` (the invariant-measure bias); ``"final"``: the average at time ``T``
        (the finite-time weak error).
    seed:
        Seed of the noise: rank ``r`` draws from :func:`~splitsde.analysis.distributed.
        rank_seed` ``(seed, r)``.
    level, alpha, next_term, select:
        Confidence level, significance level of the goodness-of-fit test, bias model and
        selection of the asymptotic subset (:func:`~splitsde.analysis.fit.fit_order`).
    batches:
        ``None``: every walker is one batch (walkers are independent); an integer groups the
        walkers into about that many batches.
    common_noise:
        Drive every step with the same Brownian path, coarsened (default), or use
        independent noise per step.
    progress:
        A progress bar over the walker-steps (``None``: on a terminal).
    world:
        The processes to shard over (default: the initialised ``torch.distributed`` group, or
        this process alone).
    """
    started = time.perf_counter()
    ladder, runs, h_fine = _checked_ladder(
        hs, reference, mode, T, burn_in_time, sample_time, fine_factor
    )
    world = world or current_world()

    def integrator_for(x: float) -> Any:
        return make_integrator if hasattr(make_integrator, "program") else make_integrator(x)

    def state_for(x: float) -> Mapping[str, torch.Tensor]:
        return y0(x) if callable(y0) else y0

    first = integrator_for(runs[0])
    W = _walkers(state_for(runs[0]))
    if W // world.size < 1:
        raise LadderError(f"{W} walkers cannot be shared by {world.size} processes")
    levels = _noise_levels(first, runs) if common_noise else ()
    stream = rank_seed(seed, world.rank)
    total = ladder_cost(
        ladder,
        W,
        mode=mode,
        T=T,
        burn_in_time=burn_in_time,
        sample_time=sample_time,
        fine_factor=fine_factor if h_fine is not None else None,
    )
    bar = progress_bar(
        total,
        "Monte Carlo ladder",
        progress if world.is_root else False,
        unit="walker-step",
        unit_scale=True,
    )
    points: dict[float, LadderPoint] = {}
    columns: list[np.ndarray] = []
    column_h: list[float] = []
    walker_steps = 0
    try:
        for i, x in enumerate(runs):
            integ = integrator_for(x)
            n_steps, burn = _steps(x, mode, T, burn_in_time, sample_time)
            if common_noise:
                noise: Any = CommonNoise(integ, seed=stream, dt=levels[-1], h=x, levels=levels)
            else:
                noise = _independent_noise(state_for(x), seed, world, i)
            values, message = _run_point(
                integ, _shard(state_for(x), world), x, n_steps, burn, every, noise, mode, observable
            )
            walker_steps += W * n_steps
            if bar is not None:
                bar.update(W * n_steps)
            if world.any(bool(message)):
                msgs = [m for m in world.gather(message) if m]
                if x == h_fine:
                    raise LadderError(f"the fine-step reference run diverged: {msgs[0]}")
                points[x] = LadderPoint(
                    x, "unstable", None, n_steps, msgs[0], _linear_bound(integ, x)
                )
                continue
            assert values is not None
            columns.append(values)
            column_h.append(x)
            points[x] = LadderPoint(x, "reference" if x == h_fine else "ok", None, n_steps)
    finally:
        if bar is not None:
            bar.close()

    mu, cov, samples = _ladder_moments(columns, batches, W, world)
    for j, x in enumerate(column_h):
        p = points[x]
        points[x] = LadderPoint(
            x, p.status, Estimate(float(mu[j]), float(math.sqrt(cov[j, j])), W), p.steps
        )
    ordered = [points[x] for x in runs]
    ok = [p for p in ordered if p.status == "ok"]
    fit_h = np.array(column_h)
    if isinstance(reference, str) or reference is None:
        ref_arg: float | Estimate | None = None
        kind = "fine" if h_fine is not None else "extrapolated"
    else:
        ref_arg = reference
        kind = "estimate" if isinstance(reference, Estimate) else "exact"
    fit_options = dict(
        level=level,
        alpha=alpha,
        next_term=next_term,
        select=select,
        samples=samples,
        reference_kind=kind,
    )
    fit, independent, fit_error = _fit_ladder(fit_h, mu, cov, ref_arg, fit_options, common_noise)
    bias_se = _bias_se(fit, fit_h, cov) if fit is not None else np.zeros(0)
    reduction = _variance_reduction(cov) if common_noise and len(columns) >= 2 else None
    return WeakOrderResult(
        hs=np.array([p.h for p in ok]),
        estimates=[p.estimate for p in ok if p.estimate is not None],
        fit=fit,
        reference=reference,
        points=ordered,
        fit_hs=fit_h,
        cov=cov,
        reference_kind=kind,
        fine=points.get(h_fine) if h_fine is not None else None,
        common_noise=common_noise,
        variance_reduction=reduction,
        independent_fit=independent,
        walkers=W,
        world_size=world.size,
        walker_steps=walker_steps,
        wall_time=time.perf_counter() - started,
        mode=mode,
        T=T,
        declared_order=getattr(first, "weak_order", None),
        observable=observable_name,
        bias_se=bias_se,
        extra={"fit_error": fit_error} if fit_error else {},
    )


def _checked_ladder(
    hs: Sequence[float],
    reference: Any,
    mode: str,
    T: float | None,
    burn_in_time: float,
    sample_time: float | None,
    fine_factor: int,
) -> tuple[list[float], list[float], float | None]:
    """The sorted ladder, the runs (the fine reference step first when asked) and that fine
    step; every argument is checked before anything is computed."""
    if mode not in ("stationary", "final"):
        raise LadderError(f"mode must be 'stationary' or 'final', got {mode!r}")
    if isinstance(reference, str) and reference not in ("fine", "extrapolated"):
        raise LadderError(
            f"reference must be a number, an Estimate, 'fine' or 'extrapolated', got {reference!r}"
        )
    ladder = sorted(float(x) for x in hs)
    if len(set(ladder)) != len(ladder) or not all(x > 0 and math.isfinite(x) for x in ladder):
        raise LadderError(f"the steps must be distinct, positive and finite, got {list(hs)}")
    if int(fine_factor) != fine_factor or fine_factor < 2:
        raise LadderError(f"fine_factor must be an integer >= 2, got {fine_factor}")
    h_fine = ladder[0] / fine_factor if reference == "fine" else None
    runs = ([h_fine] if h_fine is not None else []) + ladder
    for x in runs:
        _steps(x, mode, T, burn_in_time, sample_time)
    return ladder, runs, h_fine


def _noise_levels(first: Any, runs: list[float]) -> tuple[float, ...]:
    """Levels of the common Brownian path: a nested ladder refines level by level (coarse runs
    generate only what they use); otherwise one level above the fine grid, a common multiple
    of every step."""
    dt, L = fine_step(first, _common_grid(runs))
    return brownian_levels([max(runs), *(x / L for x in runs)]) or (
        _common_multiple(runs, dt),
        dt,
    )


def _independent_noise(
    state: Mapping[str, torch.Tensor], seed: int, world: World, i: int
) -> GaussianNoise:
    """Independent noise for run ``i`` of the ladder (no common random numbers)."""
    dev = next(iter(state.values())).device
    gen = torch.Generator(device=dev)
    gen.manual_seed(rank_seed(seed, world.rank, "step", i))
    return GaussianNoise(gen)


def _run_point(
    integ: Any,
    start: Mapping[str, torch.Tensor],
    x: float,
    n_steps: int,
    burn: int,
    every: int,
    noise: Any,
    mode: str,
    observable: Observable,
) -> tuple[np.ndarray | None, str]:
    """Per-walker values of the observable at step ``x`` (time averages in ``"stationary"``
    mode, final values otherwise) and a divergence message (empty when the run is fine)."""
    try:
        if mode == "stationary":
            obs = Running(lambda t, s: _per_walker(observable(s)), "phi", burn_in=burn, every=every)
            res = integrate(
                integ, start, h=x, steps=n_steps, noise=noise, observers=[obs], progress=False
            )
            values = res.finals["phi"]["mean"]
        else:
            res = integrate(integ, start, h=x, steps=n_steps, noise=noise, progress=False)
            values = _per_walker(observable(res.final))
        out = values.detach().to("cpu", torch.float64).numpy()
    except NonFiniteError as err:
        return None, str(err)
    return out, _diverged(out)


def _ladder_moments(
    columns: list[np.ndarray], batches: int | None, W: int, world: World
) -> tuple[np.ndarray, np.ndarray, int]:
    """Means over the walkers (batch means across every process), the covariance of those
    means between steps, and the number of batches."""
    n_pts = len(columns)
    if not n_pts:
        return np.zeros(0), np.zeros((0, 0)), 0
    rows = _batch_rows(np.stack(columns, axis=1), batches, W)
    nb = float(world.sum(np.array([len(rows)]))[0])
    if nb < 2:
        raise LadderError("error bars need at least two walkers (batches)")
    mu = world.sum(rows.sum(axis=0)) / nb
    d = rows - mu
    cov = world.sum(d.T @ d) / (nb - 1) / nb
    return mu, cov, int(nb)


def _fit_ladder(
    fit_h: np.ndarray,
    mu: np.ndarray,
    cov: np.ndarray,
    ref_arg: float | Estimate | None,
    options: dict[str, Any],
    common_noise: bool,
) -> tuple[Any, Any, str]:
    """The order fit with the correlated covariance, and (with common noise) the fit that
    ignores the correlation, for the variance-reduction report; a fit that cannot be made
    gives its reason instead."""
    if not len(mu):
        return None, None, ""
    try:
        fit = fit_order(fit_h, mu, cov, ref_arg, **options)
    except ValueError as err:
        return None, None, str(err)
    independent = None
    if common_noise:
        try:
            independent = fit_order(fit_h, mu, np.sqrt(np.diag(cov)), ref_arg, **options)
        except ValueError:
            independent = None
    return fit, independent, ""


@dataclass
class MonteCarloOptions:
    """What a Monte Carlo weak-order estimate runs: the arguments of
    :func:`estimate_weak_order` except the integrator (used by
    :func:`~splitsde.analysis.certify.certificate` and ``splitsde verify``)."""

    hs: Sequence[float]
    y0: Mapping[str, torch.Tensor] | Callable[[float], Mapping[str, torch.Tensor]]
    observable: Observable
    observable_name: str = "observable"
    mode: str = "final"
    T: float | None = 2.0
    burn_in_time: float = 0.0
    sample_time: float | None = None
    reference: float | Estimate | str | None = "fine"
    seed: int = 0
    common_noise: bool = True
    fine_factor: int = 4
    alpha: float = ALPHA
    level: float = 0.95

    @property
    def walkers(self) -> int:
        start = self.y0(min(self.hs)) if callable(self.y0) else self.y0
        return _walkers(start)

    def cost(self) -> int:
        """Walker-steps the estimate costs."""
        return ladder_cost(
            self.hs,
            self.walkers,
            mode=self.mode,
            T=self.T,
            burn_in_time=self.burn_in_time,
            sample_time=self.sample_time,
            fine_factor=self.fine_factor if self.reference == "fine" else None,
        )

    def run(
        self, integrator: Any, *, progress: bool | None = False, world: World | None = None
    ) -> WeakOrderResult:
        return estimate_weak_order(
            integrator,
            self.hs,
            self.y0,
            self.observable,
            reference=self.reference,
            mode=self.mode,
            T=self.T,
            burn_in_time=self.burn_in_time,
            sample_time=self.sample_time,
            seed=self.seed,
            level=self.level,
            alpha=self.alpha,
            common_noise=self.common_noise,
            fine_factor=self.fine_factor,
            progress=progress,
            world=world,
            observable_name=self.observable_name,
        )


def _variance_reduction(cov: np.ndarray) -> float | None:
    """Median over steps of Var(v_i - v_0) with independent noise over that with common noise
    (the same marginal variances; index 0: the smallest step)."""
    d = np.diag(cov)
    out = []
    for i in range(1, len(d)):
        common = d[i] + d[0] - 2 * cov[i, 0]
        if common > 0:
            out.append((d[i] + d[0]) / common)
    return float(np.median(out)) if out else None


def _bias_se(fit: OrderFit, hs: np.ndarray, cov: np.ndarray) -> np.ndarray:
    r"""Standard errors of :math:`v_i - \varphi_\star` (the fitted reference is a linear
    combination of the averages at the fitted order, so it is correlated with them)."""
    d = np.diag(cov)
    if not fit.reference_fitted:
        return np.sqrt(d + fit.reference_se**2)
    idx = [int(np.flatnonzero(hs == x)[0]) for x in fit.hs]
    x = np.asarray(fit.hs) / float(np.exp(np.mean(np.log(fit.hs))))
    cols = [np.ones_like(x), x**fit.order]
    if fit.model != "C h^p":
        cols.append(x ** (fit.order + 1))
    X = np.stack(cols, axis=1)
    Cs = cov[np.ix_(idx, idx)]
    Wi = np.linalg.inv(Cs)
    a = (np.linalg.pinv(X.T @ Wi @ X) @ X.T @ Wi)[0]
    var = d + a @ Cs @ a - 2 * cov[:, idx] @ a
    return np.sqrt(np.clip(var, 0.0, None))
