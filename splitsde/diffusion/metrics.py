r"""Sample-quality metrics for the analytic targets.

**Gaussian data** -- every sampler maps Gaussians to Gaussians, so the law of the generated
samples is computed exactly by :func:`splitsde.analysis.propagate` from the compiled steps
(:func:`exact_law`), and compared with the data law in closed form, without Monte Carlo:

.. math::
    \mathrm{KL}(N_0 \,\|\, N_1) = \tfrac12\big[\operatorname{tr}(\Sigma_1^{-1}\Sigma_0)
        + (\mu_1 - \mu_0)^\top\Sigma_1^{-1}(\mu_1 - \mu_0) - d
        + \log\det\Sigma_1 - \log\det\Sigma_0\big],

.. math::
    W_2^2(N_0, N_1) = \|\mu_0 - \mu_1\|^2 + \operatorname{tr}\Sigma_0 + \operatorname{tr}\Sigma_1
        - 2\operatorname{tr}\big(\Sigma_1^{1/2}\Sigma_0\Sigma_1^{1/2}\big)^{1/2}.

**Mixtures** -- distances between generated samples and fresh data samples, each with a
standard error from independent batches (generated batch :math:`b` against fresh data batch
:math:`b`): the sliced 2-Wasserstein distance (Bonneel et al., J. Math. Imaging Vis. 2015),
the energy distance (Székely & Rizzo, 2013) and the mode-weight error
:math:`\tfrac12\sum_k |\hat w_k - w_k|` with samples assigned to their most probable component.
Finite samples give these distances a positive floor; :func:`mixture_metrics` reports it as
the same metric between two fresh data sets.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from splitsde.base.stats import Estimate

if TYPE_CHECKING:
    from splitsde.diffusion.protocols import PlanProtocol
    from splitsde.diffusion.targets import GaussianMixture

__all__ = [
    "DIVERGENCE_FACTOR",
    "METRICS",
    "Estimate",
    "MetricInfo",
    "diverged",
    "energy_distance",
    "exact_law",
    "gaussian_kl",
    "gaussian_w2",
    "mixture_metrics",
    "mode_weight_error",
    "sliced_wasserstein",
]


@dataclass(frozen=True)
class MetricInfo:
    """What a metric measures and which direction is better."""

    name: str
    label: str
    better: str = "lower"


#: The metrics of :func:`splitsde.diffusion.compare` rows (all distances: lower is better).
METRICS: dict[str, MetricInfo] = {
    m.name: m
    for m in [
        MetricInfo("kl", "KL divergence of the exact output law to the data"),
        MetricInfo("w2", "2-Wasserstein distance of the exact output law to the data"),
        MetricInfo("sliced_w2", "sliced 2-Wasserstein distance to fresh data"),
        MetricInfo("energy", "energy distance to fresh data"),
        MetricInfo("mode_weight", "mode-weight error (total variation of mode frequencies)"),
    ]
}

#: A value more than this many times its reference (the finite-sample floor, or for an exact
#: law the value of the prior itself) is reported as diverged, not as a number.
DIVERGENCE_FACTOR = 100.0


def diverged(value: float | None, reference: float | None) -> bool:
    """Whether ``value`` is non-finite or above ``DIVERGENCE_FACTOR`` times ``reference``
    (``reference`` ``None``: only non-finite values count)."""
    if value is None or not math.isfinite(value):
        return True
    return reference is not None and value > DIVERGENCE_FACTOR * reference


def _t64(x: Any) -> torch.Tensor:
    return torch.as_tensor(x, dtype=torch.float64).detach().cpu()


def gaussian_kl(mean0: Any, cov0: Any, mean1: Any, cov1: Any) -> float:
    """:math:`\\mathrm{KL}(N(\\mu_0, \\Sigma_0) \\| N(\\mu_1, \\Sigma_1))` in float64."""
    m0, S0, m1, S1 = map(_t64, (mean0, cov0, mean1, cov1))
    L1 = torch.linalg.cholesky(S1)
    L0 = torch.linalg.cholesky(S0)
    A = torch.cholesky_solve(S0, L1)
    dm = (m1 - m0)[:, None]
    quad = float((dm * torch.cholesky_solve(dm, L1)).sum())
    logdet = 2 * float(torch.log(torch.diagonal(L1)).sum() - torch.log(torch.diagonal(L0)).sum())
    return 0.5 * (float(torch.trace(A)) + quad - len(m0) + logdet)


def _sqrtm_psd(S: torch.Tensor) -> torch.Tensor:
    ev, V = torch.linalg.eigh(0.5 * (S + S.T))
    return (V * ev.clamp_min(0).sqrt()) @ V.T


def gaussian_w2(mean0: Any, cov0: Any, mean1: Any, cov1: Any) -> float:
    """The 2-Wasserstein distance between two Gaussians, in float64."""
    m0, S0, m1, S1 = map(_t64, (mean0, cov0, mean1, cov1))
    r1 = _sqrtm_psd(S1)
    cross = _sqrtm_psd(r1 @ S0 @ r1)
    w2sq = float(
        ((m0 - m1) ** 2).sum() + torch.trace(S0) + torch.trace(S1) - 2 * torch.trace(cross)
    )
    return math.sqrt(max(w2sq, 0.0))


def exact_law(plan: PlanProtocol, mean0: Any, cov0: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """The exact law (mean, covariance, block-major) of a plan's output for Gaussian data,
    started from :math:`N(\\text{mean0}, \\text{cov0})`: the plan's own
    :meth:`~splitsde.diffusion.protocols.PlanProtocol.exact_law` (for a randomized sampler the
    exact mean and covariance of its mixture law)."""
    law = plan.exact_law(mean0, cov0)
    return _t64(law.mean), _t64(law.cov)


# ---------------------------------------------------------------------------------------------
# Sample-based metrics
# ---------------------------------------------------------------------------------------------
def sliced_wasserstein(x: torch.Tensor, y: torch.Tensor, directions: torch.Tensor) -> float:
    r"""Sliced 2-Wasserstein distance
    :math:`\big(\tfrac1L\sum_l W_2^2(\theta_l^\top X, \theta_l^\top Y)\big)^{1/2}` over unit
    ``directions`` ``(L, d)``; ``x`` and ``y`` have the same number of rows."""
    if x.shape[0] != y.shape[0]:
        raise ValueError("sliced_wasserstein needs equally many samples on both sides")
    px = torch.sort(_t64(x) @ directions.T, dim=0).values
    py = torch.sort(_t64(y) @ directions.T, dim=0).values
    return float(((px - py) ** 2).mean().sqrt())


def energy_distance(x: torch.Tensor, y: torch.Tensor) -> float:
    r""":math:`2E\|X - Y\| - E\|X - X'\| - E\|Y - Y'\|` (V-statistic)."""
    x, y = _t64(x), _t64(y)
    return float(2 * torch.cdist(x, y).mean() - torch.cdist(x, x).mean() - torch.cdist(y, y).mean())


def mode_weight_error(x: torch.Tensor, mixture: GaussianMixture) -> float:
    r""":math:`\tfrac12\sum_k|\hat w_k - w_k|` with each sample assigned to its most probable
    component (total-variation distance of the mode frequencies)."""
    k = mixture.responsibilities(_t64(x)).argmax(dim=1)
    freq = torch.bincount(k, minlength=mixture.components).to(torch.float64) / len(k)
    return 0.5 * float((freq - mixture.weights).abs().sum())


def _batched(
    metric: Callable[[torch.Tensor, torch.Tensor], float],
    x: torch.Tensor,
    fresh: torch.Tensor,
    batches: int,
) -> Estimate:
    xs = torch.chunk(x, batches)
    ys = torch.chunk(fresh, batches)
    vals = np.array([metric(a, b) for a, b in zip(xs, ys)])
    se = vals.std(ddof=1) / math.sqrt(len(vals)) if len(vals) > 1 else float("nan")
    return Estimate(float(vals.mean()), float(se), int(x.shape[0]))


def mixture_metrics(
    x: torch.Tensor,
    mixture: GaussianMixture,
    *,
    batches: int = 10,
    projections: int = 256,
    seed: int = 0,
) -> Mapping[str, Any]:
    """Sliced Wasserstein, energy distance and mode-weight error of samples ``x`` ``(n, d)``
    against fresh data, each an :class:`Estimate` over ``batches`` independent batches, and
    the finite-sample floor of each (two fresh data sets of the same size)."""
    x = _t64(x).reshape(x.shape[0], -1)
    if x.shape[1] != mixture.dim:
        raise ValueError(f"samples have dimension {x.shape[1]}, the mixture {mixture.dim}")
    if not torch.isfinite(x).all():
        raise ValueError("the samples contain non-finite values")
    n = x.shape[0] - x.shape[0] % batches
    if n < 2 * batches:
        raise ValueError(f"need at least {2 * batches} samples for {batches} batches")
    x = x[:n]
    g = torch.Generator().manual_seed(seed)
    fresh = mixture.sample(n, generator=g)
    fresh2 = mixture.sample(n, generator=g)
    dirs = torch.randn(projections, mixture.dim, generator=g, dtype=torch.float64)
    dirs = dirs / dirs.norm(dim=1, keepdim=True)

    def sw(a, b):
        return sliced_wasserstein(a, b, dirs)

    def mode(a, b):
        return mode_weight_error(a, mixture)

    out: dict[str, Any] = {}
    for name, fn in (("sliced_w2", sw), ("energy", energy_distance), ("mode_weight", mode)):
        out[name] = _batched(fn, x, fresh, batches)
        out[f"{name}_floor"] = _batched(fn, fresh2, fresh, batches)
    out["samples"] = n
    out["batches"] = batches
    return out
