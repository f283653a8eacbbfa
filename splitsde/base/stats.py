r"""Error bars from independent walkers (batch means).

Every walker of a Langevin run is an independent chain, so its time average after burn-in is
one independent estimate. Walkers are grouped into at most ``batches`` groups; the spread of
the group estimates gives the standard error of the mean and of the variance. This is the
batch-means method with batches made of whole independent chains, which needs no estimate of
the autocorrelation time.

:func:`z_score` compares an estimate with a reference in units of its standard error, and
refuses (returns ``None``) when that unit is zero or not finite: a bias over a zero or infinite
error bar means nothing.

:class:`Estimate` is the one type of a Monte Carlo number with its error bar, used by the
weak-order fits (:mod:`splitsde.analysis`) and the diffusion sample metrics
(:mod:`splitsde.diffusion.metrics`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

import numpy as np
import torch

__all__ = ["Estimate", "walker_batch_means", "z_score"]


@dataclass(frozen=True)
class Estimate:
    r"""A Monte Carlo estimate :math:`\hat\mu` with its standard error :math:`s`.

    Attributes
    ----------
    value:
        The estimate :math:`\hat\mu`.
    se:
        Its standard error :math:`s` (``nan`` when it could not be estimated, e.g. from a
        single batch).
    samples:
        How many samples it averages (``0``: not recorded).
    """

    value: float
    se: float
    samples: int = 0

    def interval(self, level: float = 0.95) -> tuple[float, float]:
        r"""The normal confidence interval :math:`\hat\mu \pm z_{(1+\ell)/2}\, s` at level
        :math:`\ell` (``level``, in :math:`(0, 1)`)."""
        if not 0.0 < level < 1.0:
            raise ValueError(f"level must be in (0, 1), got {level!r}")
        z = NormalDist().inv_cdf(0.5 + level / 2)
        return self.value - z * self.se, self.value + z * self.se

    def __str__(self) -> str:
        return f"{self.value:.6g} ± {self.se:.2g}"


def walker_batch_means(
    mean: torch.Tensor, mean_sq: torch.Tensor, batches: int = 64
) -> dict[str, Any]:
    """Mean, second moment, variance and their standard errors per coordinate (batch means
    over groups of walkers).

    ``mean`` and ``mean_sq`` are per-walker time averages of :math:`x` and :math:`x^2`, shape
    ``(walkers, ...)``; results have the trailing shape.
    """
    m = mean.detach().to("cpu", torch.float64).numpy()
    s = mean_sq.detach().to("cpu", torch.float64).numpy()
    w = m.shape[0]
    if w < 2:
        raise ValueError("error bars need at least 2 independent walkers")
    nb = min(batches, w)
    groups = np.array_split(np.arange(w), nb)
    gm = np.stack([m[g].mean(axis=0) for g in groups])
    gs = np.stack([s[g].mean(axis=0) for g in groups])
    gv = gs - gm * gm
    sizes = np.array([len(g) for g in groups], dtype=float)
    wts = (sizes / sizes.sum()).reshape(-1, *([1] * (m.ndim - 1)))
    mu = (wts * gm).sum(axis=0)
    var = (wts * gs).sum(axis=0) - mu * mu
    se = lambda x: x.std(axis=0, ddof=1) / math.sqrt(nb)  # noqa: E731
    mean_sq = (wts * gs).sum(axis=0)
    return {
        "mean": mu,
        "mean_se": se(gm),
        "mean_sq": mean_sq,
        "mean_sq_se": se(gs),
        "var": var,
        "var_se": se(gv),
        "batches": nb,
    }


def z_score(value: float, reference: float, se: float) -> float | None:
    r"""The bias in standard errors, :math:`(\hat x - x)/\mathrm{se}`, or ``None`` when it is
    meaningless: a standard error that is zero, negative or not finite, or a non-finite value
    or reference."""
    value, reference, se = float(value), float(reference), float(se)
    if not (math.isfinite(value) and math.isfinite(reference) and math.isfinite(se) and se > 0):
        return None
    return (value - reference) / se
