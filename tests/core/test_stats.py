"""Walker batch means (splitsde.base.stats) against direct formulas on independent data."""

from __future__ import annotations

import numpy as np
import torch

from splitsde.base.stats import walker_batch_means


def test_batch_means_equal_plain_averages_and_their_errors_match_iid_formulas():
    """With independent walkers the estimates are the plain averages, and each standard error
    agrees with the iid formula std/sqrt(n): the batch-means estimator of a standard error
    has relative error ~ 1/sqrt(2 (batches - 1)) (9 % for 64 batches), so 4 of those bound it."""
    g = torch.Generator().manual_seed(0)
    n = 64 * 50
    x = 2.0 + torch.randn(n, 2, generator=g, dtype=torch.float64)
    x2 = x**2
    st = walker_batch_means(x, x2)
    np.testing.assert_allclose(st["mean"], x.mean(0).numpy(), rtol=1e-12)
    np.testing.assert_allclose(st["mean_sq"], x2.mean(0).numpy(), rtol=1e-12)
    np.testing.assert_allclose(st["var"], (x2.mean(0) - x.mean(0) ** 2).numpy(), rtol=1e-12)
    tol = 4 / np.sqrt(2 * (st["batches"] - 1))
    for key, data in (("mean_se", x), ("mean_sq_se", x2)):
        iid = data.std(0).numpy() / np.sqrt(n)
        assert np.all(np.abs(st[key] / iid - 1) < tol), (key, st[key], iid)
    # the variance's standard error is not the second moment's: Var(x^2) = 2 + 4 mu^2 = 18
    # against Var((x - mu)^2) = 2, a factor 3 in standard error
    assert np.all(np.abs(st["var_se"] / st["mean_sq_se"] - 1) > tol)
