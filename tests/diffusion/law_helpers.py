"""Shared reference measurement of the diffusion tests: the convergence order of a sampler's
exact output law against the exact marginal of Gaussian data."""

from __future__ import annotations

import numpy as np

import splitsde.diffusion as dm
from splitsde.diffusion.metrics import exact_law


def law_error_slope(name: str, steps=(32, 64, 128)) -> tuple[float, list[float], object]:
    """On PSLD, from the exact law at T to t = 0.1 over quadratic grids of ``steps`` steps:
    the fitted slope of the law error (max abs of mean and covariance errors against the exact
    marginal of 2-D Gaussian data) against the number of steps, the errors, and the last plan."""
    proc = dm.process("psld-cifar10")
    tgt = dm.GaussianData.random(2, seed=1, condition=10)
    score = tgt.score(proc)
    m0, c0 = tgt.law(proc, proc.T)
    me, ce = tgt.law(proc, 0.1)
    Ns = np.asarray(steps)
    errs = []
    for N in Ns:
        p = dm.plan(name, proc, score, steps=int(N), grid="quadratic", eps=0.1, denoise=False)
        m, c = exact_law(p, m0, c0)
        errs.append(float((m - me).abs().max() + (c - ce).abs().max()))
    slope = float(-np.polyfit(np.log(Ns), np.log(errs), 1)[0])
    return slope, errs, p
