"""Closed-form Gaussian distances and the sample-based mixture metrics."""

import math

import numpy as np
import pytest
import torch

import splitsde.diffusion as dm


def test_gaussian_kl_closed_forms():
    # 1-D: KL(N(m0, s0^2) || N(m1, s1^2)) = log(s1/s0) + (s0^2 + (m0-m1)^2)/(2 s1^2) - 1/2
    kl = dm.gaussian_kl([0.3], [[0.5]], [-0.2], [[2.0]])
    ref = math.log(math.sqrt(2.0 / 0.5)) + (0.5 + 0.25) / 4.0 - 0.5
    assert kl == pytest.approx(ref, rel=1e-13)
    # independent coordinates add up
    kl2 = dm.gaussian_kl([0.3, 1.0], np.diag([0.5, 1.5]), [-0.2, 0.0], np.diag([2.0, 1.0]))
    ref2 = ref + math.log(math.sqrt(1.0 / 1.5)) + (1.5 + 1.0) / 2.0 - 0.5
    assert kl2 == pytest.approx(ref2, rel=1e-13)
    S = np.array([[1.0, 0.3], [0.3, 0.5]])
    assert dm.gaussian_kl([1, 2], S, [1, 2], S) == pytest.approx(0.0, abs=1e-14)


def test_gaussian_w2_closed_forms():
    # commuting covariances: W2^2 = |dm|^2 + sum (sqrt(a) - sqrt(b))^2
    a, b = np.array([0.5, 2.0]), np.array([1.0, 0.25])
    w2 = dm.gaussian_w2([0, 1], np.diag(a), [1, 1], np.diag(b))
    assert w2 == pytest.approx(math.sqrt(1.0 + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum()), rel=1e-12)
    # rotation invariance
    R = np.array([[0.6, -0.8], [0.8, 0.6]])
    w2r = dm.gaussian_w2([0, 0], R @ np.diag(a) @ R.T, [0, 0], R @ np.diag(b) @ R.T)
    assert w2r == pytest.approx(math.sqrt(((np.sqrt(a) - np.sqrt(b)) ** 2).sum()), rel=1e-10)


def test_sliced_wasserstein_of_a_shift():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(500, 3, generator=g, dtype=torch.float64)
    shift = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    dirs = torch.randn(64, 3, generator=g, dtype=torch.float64)
    dirs = dirs / dirs.norm(dim=1, keepdim=True)
    sw = dm.sliced_wasserstein(x + shift, x, dirs)
    assert sw == pytest.approx(float(((dirs @ shift) ** 2).mean().sqrt()), rel=1e-12)
    assert dm.energy_distance(x, x) == pytest.approx(0.0, abs=1e-12)
    assert dm.energy_distance(x + shift, x) > 0.5


def test_mode_weight_error_of_a_single_mode():
    mix = dm.GaussianMixture.ring(4, radius=3.0, std=0.1)
    x = mix.means[1] + 0.05 * torch.randn(200, 2, generator=torch.Generator().manual_seed(1))
    assert dm.mode_weight_error(x, mix) == pytest.approx(0.75)


def test_mixture_metrics_of_exact_samples_sit_on_the_floor():
    mix = dm.GaussianMixture.random(8, 4, seed=3)
    x = mix.sample(4000, generator=torch.Generator().manual_seed(9))
    m = dm.mixture_metrics(x, mix, batches=10, seed=2)
    for k in ("sliced_w2", "energy", "mode_weight"):
        est, floor = m[k], m[f"{k}_floor"]
        assert abs(est.value - floor.value) < 4 * math.hypot(est.se, floor.se)
    shifted = dm.mixture_metrics(x + 0.5, mix, batches=10, seed=2)
    assert shifted["sliced_w2"].value > m["sliced_w2"].value + 10 * shifted["sliced_w2"].se


def test_mixture_metrics_input_errors():
    mix = dm.GaussianMixture.ring(4)
    with pytest.raises(ValueError, match="dimension 3"):
        dm.mixture_metrics(torch.zeros(100, 3), mix)
    with pytest.raises(ValueError, match="non-finite"):
        dm.mixture_metrics(torch.full((100, 2), math.nan), mix)
    with pytest.raises(ValueError, match="at least 20 samples"):
        dm.mixture_metrics(torch.zeros(10, 2), mix)
