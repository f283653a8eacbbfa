r"""Step-size stability bounds of the diffusion samplers on the stationary linearisation.

Near the prior the marginal of every process with a stationary law is close to that law
:math:`N(0, V)`, :math:`V = \operatorname{diag}(v_b)`, and the score is close to the linear
**stationary score** :math:`s_b(z) = -z_b / v_b`. On that linear problem one step of any sampler
is an affine map :math:`z \mapsto \Phi(h)\,z + N\xi`, obtained by probing the sampler's own
compiled step (:func:`splitsde.analysis.affine_step`; nothing is re-derived).

**The bound.** :math:`h^*` is the smallest step length :math:`h` such that uniform steps of
length :math:`h` from the prior amplify perturbations at least at the rate that doubles them
over the horizon,

.. math:: \rho(\Phi(h)) \ge 2^{h/(T-\varepsilon)},

scanned and bisected by :func:`splitsde.analysis.certify.stability_bound` (resolved to three
significant digits). For the classical instabilities (an explicit step on the contracting
stationary dynamics: EM, SPS) :math:`\rho` jumps through 1 and :math:`h^*` lies a few per cent
above the step where :math:`\rho = 1`; the right-hand side only stops the neutral probability
flow of the stationary law (a rotation, :math:`\rho = 1` exactly) from counting as unstable
through the :math:`O(h^{p+1})` drift of :math:`\rho` around 1 that every deterministic sampler
has. A multistep sampler carries past noise predictions, so its one-step map from the prior is
only its warm-start step; for it the growth :math:`\|M_K\|_V` of the map of :math:`K`
(:data:`MULTISTEP_STEPS` or fewer) steps in the stationary norm
:math:`\|M\|_V = \|V^{-1/2} M V^{1/2}\|_2` replaces :math:`\rho(\Phi)^K` (the exact
propagation of :func:`splitsde.analysis.propagate`, which probes the state and the carried
values).

**The check.** :func:`plan <splitsde.diffusion.samplers.plan>` propagates the plan's own first
steps (at most :data:`MULTISTEP_STEPS`) on the stationary linearisation and emits a
:class:`StabilityWarning`, naming the growth, the largest step and :math:`h^*`, when they
amplify perturbations by :math:`2^{\tau_k/(T-\varepsilon)}` or more, measured as the bound
measures it (the spectral radius of the product of the one-step maps; the stationary-norm growth
for a multistep sampler), so that a uniform grid warns exactly when its step exceeds
:math:`h^*`. The check is necessary,
not sufficient: near the data the score of real data is stiffer than the stationary one.

Reference: linear stability of Langevin and splitting integrators, Leimkuhler & Matthews,
*Molecular Dynamics* (Springer 2015), sec. 7.4; Hairer & Wanner, *Solving Ordinary Differential
Equations II*, ch. IV.2 (stability functions).
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from splitsde.analysis.affine import NotAffineError, affine_step
from splitsde.analysis.certify import stability_bound as _bisect_bound
from splitsde.diffusion.processes import ForwardProcess
from splitsde.diffusion.processes import process as get_process
from splitsde.diffusion.registry import sampler as get_sampler
from splitsde.symbolic.expint import GridTooShortError

if TYPE_CHECKING:
    from splitsde.diffusion.samplers import Plan, Sampler

__all__ = [
    "StabilityBound",
    "StabilityWarning",
    "check_plan",
    "stability_bound",
    "stationary_score",
]

#: Steps of the propagated map for multistep samplers (at most; fewer when they do not fit).
MULTISTEP_STEPS = 12


class StabilityWarning(UserWarning):
    """A plan whose step exceeds the sampler's stability bound on the stationary linearisation.

    Attributes: ``bound`` (:math:`h^*`), ``step`` (the plan's largest step), ``sampler`` and
    ``process`` (names)."""

    def __init__(self, message: str, *, bound: float, step: float, sampler: str, process: str):
        super().__init__(message)
        self.bound = bound
        self.step = step
        self.sampler = sampler
        self.process = process


@dataclass(frozen=True)
class StabilityBound:
    """The stability bound of a sampler on a process (``bound`` is ``None`` when the sampler is
    stable on the whole range up to ``h_max``, or when it was not computed: ``reason``)."""

    sampler: str
    process: str
    bound: float | None
    h_max: float
    method: str
    reason: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "sampler": self.sampler,
            "process": self.process,
            "bound": self.bound,
            "h_max": self.h_max,
            "method": self.method,
            "reason": self.reason,
        }


def stationary_score(process: ForwardProcess) -> Callable[..., Any]:
    r"""The stationary score :math:`s_b = -z_b / v_b` as a score callable (blocks, then the
    reverse time, which it ignores)."""
    var = process.stationary_variance
    if var is None:
        raise ValueError(
            f"process {process.name} has no stationary law; the stationary linearisation needs one"
        )
    inv = [1.0 / v for v in var]

    def score(*args: Any) -> Any:
        *blocks, _tau = args
        out = tuple(-b * c for b, c in zip(blocks, inv))
        return out[0] if len(out) == 1 else out

    return score


_INTEGRATORS: dict[tuple, Any] = {}
# Values keep their process alive (or are checked against it): the keys hold id(process), which
# a collected process would hand on to the next one.
_BOUNDS: dict[tuple, tuple[StabilityBound, ForwardProcess]] = {}


def _key(s: Sampler, proc: ForwardProcess) -> tuple:
    if not s.stepwise:  # a whole-trajectory solve: nothing to linearise, its name is the key
        return (s.name, type(s).__name__, id(proc))
    lam = tuple(sorted(s.lam.items())) if isinstance(s.lam, dict) else s.lam
    return (s.name, repr(lam), repr(s.reduction), type(s).__name__, id(proc))


def _linearised(s: Sampler, proc: ForwardProcess) -> Any:
    key = _key(s, proc)
    if key not in _INTEGRATORS:
        if len(_INTEGRATORS) > 256:
            _INTEGRATORS.clear()
        _INTEGRATORS[key] = (s.integrator(proc, stationary_score(proc)), proc)
    return _INTEGRATORS[key][0]


def _lags(integ: Any) -> int:
    """The number of past field values a multistep program reads (0: single-step)."""
    return max((len(hi.lags) for hi in integ.program.history), default=0)


def _unsupported(s: Sampler, proc: ForwardProcess) -> str:
    if not s.stepwise:
        return "the sampler solves the whole trajectory with its own (adaptive) steps"
    if proc.stationary_variance is None:
        return f"process {proc.name} has no stationary law"
    return ""


def _growth(integ: Any, proc: ForwardProcess, grid: np.ndarray) -> float:
    r"""Largest growth :math:`\|M\|_V = \|V^{-1/2} M V^{1/2}\|_2` of the linearised run over
    ``grid`` (reverse times from the prior), from the exact propagation of the compiled steps
    (the noise does not count: for a stochastic program the mean map is used)."""
    from splitsde.analysis import propagate

    V = np.diag(np.asarray(proc.stationary_variance, np.float64))
    D = len(V)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        if integ.is_stochastic:
            cols = [propagate(integ, grid, np.eye(D)[i], np.zeros((D, D)))[0] for i in range(D)]
            M = np.stack(cols, axis=1)
            cov = M @ V @ M.T
        else:  # from N(0, V) without noise the covariance after the run is M V M^T
            _, cov = propagate(integ, grid, np.zeros(D), V)
    if not np.all(np.isfinite(cov)):
        return math.inf
    w = 1.0 / np.sqrt(np.diag(V))
    return float(np.sqrt(max(np.linalg.eigvalsh(w[:, None] * cov * w[None, :]).max(), 0.0)))


def step_map(s: Sampler, proc: ForwardProcess, h: float) -> np.ndarray:
    r"""The per-step amplification matrix of ``s`` at step ``h`` from the prior on the
    stationary linearisation of ``proc``: the one-step map :math:`\Phi(h)`, or, for a multistep
    sampler, :math:`g^{1/K} I` with :math:`g` the growth :math:`\|M_K\|_V` of its
    :math:`K`-step map in the stationary norm (module docstring)."""
    integ = _linearised(s, proc)
    if integ.program.uniform_draws:
        raise NotAffineError("randomized selections: the step is a mixture of affine maps")
    if not integ.program.history:
        return affine_step(integ, 0.0, float(h)).Phi
    span = proc.T - proc.eps
    steps = max(1, min(MULTISTEP_STEPS, math.floor(span / h + 1e-9)))
    grid = np.arange(steps + 1, dtype=np.float64) * float(h)
    g = _growth(integ, proc, grid)
    return np.array([[g ** (1.0 / steps)]])


def amplification(s: Sampler, proc: ForwardProcess, h: float) -> float:
    """Spectral radius of :func:`step_map` (``inf`` when the step overflows)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            M = step_map(s, proc, h)
    except NotAffineError:
        return math.inf
    if not np.all(np.isfinite(M)):
        return math.inf
    return float(np.max(np.abs(np.linalg.eigvals(M)))) if M.size else 0.0


def threshold(proc: ForwardProcess, h: float) -> float:
    r"""The per-step growth :math:`2^{h/(T-\varepsilon)}` that doubles a perturbation over the
    whole horizon."""
    return 2.0 ** (h / (proc.T - proc.eps))


def stability_bound(
    sampler_: str | Sampler, process: str | ForwardProcess, *, points: int = 32
) -> StabilityBound:
    r"""The stability bound :math:`h^*` of ``sampler_`` on the stationary linearisation of
    ``process`` (module docstring; memoised per sampler and process), scanned over ``points``
    log-spaced steps in :math:`[10^{-3}h_{max}, h_{max}]`, :math:`h_{max} = T-\varepsilon`
    (divided by :math:`r+1` for a multistep sampler reading :math:`r` past values), and
    bisected."""
    s = get_sampler(sampler_)
    proc = get_process(process)
    key = (*_key(s, proc), points)
    if key in _BOUNDS and _BOUNDS[key][1] is proc:
        return _BOUNDS[key][0]
    h_max = proc.T - proc.eps
    why = _unsupported(s, proc)
    method = "one-step map from the prior"
    if not why:
        integ = _linearised(s, proc)
        if integ.program.uniform_draws:
            why = "randomized selections (the step is a mixture of affine maps)"
        elif integ.program.history:
            method = f"map of up to {MULTISTEP_STEPS} steps from the prior (multistep)"
            # larger steps leave too few for the method
            h_max = h_max / (_lags(integ) + 1) * (1 - 1e-9)
    if why:
        out = StabilityBound(s.name, proc.name, None, h_max, "not computed", why)
    else:
        seen: dict[float, np.ndarray] = {}

        def phi(h: float) -> np.ndarray:
            # the bound is resolved to 3 significant digits (never beyond h_max: a multistep
            # sampler needs its steps)
            h = min(float(f"{h:.3g}"), h_max)
            if h not in seen:  # rho(phi) >= 1 iff the amplification reaches the threshold
                seen[h] = np.array([[amplification(s, proc, h) / threshold(proc, h)]])
            return seen[h]

        bound = _bisect_bound(phi, 1e-3 * h_max, h_max, points)
        bound = None if bound is None else float(f"{bound:.3g}")
        out = StabilityBound(s.name, proc.name, bound, h_max, method)
    if len(_BOUNDS) > 1024:
        _BOUNDS.clear()
    _BOUNDS[key] = (out, proc)
    return out


def _plan_growth(integ: Any, proc: ForwardProcess, grid: np.ndarray) -> float:
    r"""Growth of the linearised run over ``grid`` by the criterion of the bound: the spectral
    radius of the product of the one-step maps :math:`\Phi(\tau_k, h_k)` for a single-step
    sampler (on a uniform grid :math:`\rho(\Phi(h))^K`, the bound's own quantity), the
    stationary-norm growth :math:`\|M_K\|_V` for a multistep sampler."""
    if integ.program.history:
        return _growth(integ, proc, grid)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        M = None
        for t0, t1 in itertools.pairwise(grid):
            Phi = affine_step(integ, float(t0), float(t1 - t0)).Phi
            M = Phi if M is None else Phi @ M
        if M is None or not np.all(np.isfinite(M)):
            return math.inf
        return float(np.max(np.abs(np.linalg.eigvals(M))))


def check_plan(p: Plan, *, stacklevel: int = 3) -> StabilityBound | None:
    r"""Warn (:class:`StabilityWarning`) when the plan's own first steps (at most
    :data:`MULTISTEP_STEPS`) amplify perturbations on the stationary linearisation by at least
    :math:`2^{\tau_k/(T-\varepsilon)}` (the rate that doubles them over the horizon; the
    amplification measured as for :func:`stability_bound`, so a uniform grid warns exactly
    when its step exceeds :math:`h^*` up to the bound's resolution), with the sampler's
    uniform-step bound :math:`h^*` in the message; returns the bound when it warned."""
    s, proc = p.sampler, p.process
    if _unsupported(s, proc) or not p.steps:
        return None
    try:
        integ = _linearised(s, proc)
        if integ.program.uniform_draws:
            return None
        k = min(MULTISTEP_STEPS, p.steps)
        grid = np.asarray(p.tau[: k + 1], np.float64)
        g = _plan_growth(integ, proc, grid)
    except (GridTooShortError, NotAffineError, torch.linalg.LinAlgError, ValueError):
        return None
    span = proc.T - proc.eps
    if g < 2.0 ** ((grid[-1] - grid[0]) / span):
        return None
    h = float(np.max(np.diff(grid)))
    b = stability_bound(s, proc)
    bound = b.bound if b.bound is not None else h
    growth = f"{g:.3g}" if math.isfinite(g) else "overflow"
    warnings.warn(
        StabilityWarning(
            f"{s.name} on {proc.name}: the plan's first {k} step(s) (largest h = {h:.4g}) "
            f"amplify perturbations by {growth} on the stationary linearisation; the sampler's "
            f"stability bound for uniform steps from the prior is h* = {bound:.4g}. Expect a "
            f"poor or diverging run: use more steps (at least {math.ceil(span / bound)} "
            "uniform steps), a grid with smaller steps near the prior, or a stable sampler "
            "(sscs, cddim).",
            bound=bound,
            step=h,
            sampler=s.name,
            process=proc.name,
        ),
        stacklevel=stacklevel,
    )
    return b
