"""Monte Carlo averages with batch-means errors, weak-order fits with confidence intervals."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from splitsde import problems
from splitsde.analysis import (
    Estimate,
    estimate_weak_order,
    final_average,
    fit_order,
    propagate,
    stationary_average,
)


def test_fit_order_recovers_a_known_power_law():
    rng = np.random.default_rng(0)
    hs = np.array([0.05, 0.1, 0.2, 0.4])
    true = 1.5 + 0.8 * hs**2
    se = np.full(4, 1e-4)
    fit = fit_order(hs, true + rng.normal(0, 1e-4, 4), se, reference=1.5)
    assert fit.contains(2.0) and fit.order_se < 0.05
    assert fit.coefficient == pytest.approx(0.8, rel=0.05)
    # reference fitted too (extrapolation)
    fit2 = fit_order(hs, true + rng.normal(0, 1e-4, 4), se)
    assert fit2.reference_fitted and fit2.contains(2.0)
    assert abs(fit2.reference - 1.5) < 4 * fit2.reference_se + 1e-12
    # a reference with an error bar widens the order interval
    fit3 = fit_order(hs, true, se, reference=Estimate(1.5, 1e-3))
    assert fit3.order_se > fit_order(hs, true, se, reference=1.5).order_se


def test_fit_order_rejects_a_wrong_order():
    hs = np.array([0.05, 0.1, 0.2, 0.4])
    fit = fit_order(hs, 2.0 + 0.3 * hs, np.full(4, 1e-5), reference=2.0)
    assert not fit.contains(2.0) and fit.contains(1.0)


def test_stationary_average_of_baoab_positions_is_unbiased():
    prob = problems.harmonic(1.5, 1.0, 0.8, 1.0)
    y0 = prob.initial_state(2000, [0.0, 0.0], [0.8 / 2.25, 0.8], torch.Generator().manual_seed(2))
    est = stationary_average(
        prob.integrator("BAOAB"), y0, lambda s: s["q"] ** 2, h=0.5, steps=400, burn_in=0, seed=5
    )
    assert abs(est.value - 0.8 / 2.25) < 4 * est.se
    assert est.se < 0.01 * est.value


def test_final_average_against_the_exact_law():
    prob = problems.harmonic(1.2, 0.5, 1.0, 1.0)
    y0 = prob.initial_state(20000, [1.0, 0.0], [0.1, 0.1], torch.Generator().manual_seed(3))
    est = final_average(prob.integrator("OBA"), y0, lambda s: s["q"] ** 2, h=0.2, steps=10, seed=4)
    m, S = propagate(prob.integrator("OBA"), 0.2 * np.arange(11), [1.0, 0.0], [0.1, 0.1])
    assert abs(est.value - (S[0, 0] + m[0] ** 2)) < 4 * est.se


def test_finite_time_order_on_the_ou_process_by_monte_carlo():
    """Lie splitting of OU: E[x_T^2] converges at order 1 (exact law as reference)."""
    prob = problems.ou(theta=2.0, mu=0.0, sigma=1.5)
    T = 1.0
    m, S = prob.law(T, 2.0, 0.0)
    y0 = {"x": torch.full((200_000,), 2.0)}
    res = estimate_weak_order(
        prob.integrator("BO"),
        [0.02, 0.04, 0.05, 0.1],
        y0,
        lambda s: s["x"] ** 2,
        reference=float(S[0, 0] + m[0] ** 2),
        mode="final",
        T=T,
        seed=11,
    )
    assert res.fit.contains(1.0) and not res.fit.contains(2.0)
    assert math.isfinite(res.fit.coefficient)


@pytest.mark.slow
def test_baoab_quartic_stationary_order_two():
    """BAOAB's stationary <q^2> bias on U = q^4/4 is O(h^2) (quadrature reference).

    Slow (25-50 s on 2 shared cores): the bias is ~1e-3 relative at the largest stable steps, so the
    ~1e8 walker-steps per point are what resolves it."""
    prob = problems.quartic(gamma=1.0, kT=1.0)
    ref = prob.stationary_moments_exact()["q2"]
    res = estimate_weak_order(
        lambda h: prob.integrator("BAOAB"),
        [0.15, 0.2, 0.25, 0.3, 0.35],
        lambda h: prob.initial_state(400_000, torch.Generator().manual_seed(7)),
        lambda s: s["q"] ** 2,
        reference=ref,
        burn_in_time=5.0,
        sample_time=30.0,
        seed=1,
        common_noise=False,  # a ladder that is not nested: the common path would cost 7x
    )
    lo, hi = res.fit.interval
    assert lo <= 2.0 <= hi
    assert lo > 1.0  # the interval is informative: it excludes first order
    assert res.certified_order == 2 and res.fit.reference_kind == "exact"
    assert np.all(res.biases < 0)
