"""The Poisson midpoint method against K fine steps of its base chain.

References: the exact law of K fine steps (splitsde.analysis.propagate) for constant fields
and linear parts (where the method is exact); the local O(h^3) agreement for a linear field;
the exact moments of the randomized step against Monte Carlo; the stationary bias of
Langevin Monte Carlo at alpha and alpha/K on a nonlinear potential (Monte Carlo, 4 standard
errors, exact moments by quadrature); binomial counts of the selected evaluations.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import scipy.integrate
import sympy
import torch

import splitsde as sd
from splitsde.analysis import affine_step, propagate
from splitsde.analysis.randomized import propagate_moments
from splitsde.symbolic.poisson import PoissonMidpoint

x, q, p = sd.blocks("x q p")
kT, gamma, c = sd.parameters("kT gamma c", positive=True)


def overdamped(field: sd.Field, linear: sympy.Expr = 0) -> sd.SDE:
    return sd.SDE([x], {"L": sd.Flow({x: linear + field()}, {x: sympy.sqrt(2 * kT)})})


def branch_law(integ, h: float, y0: np.ndarray, K: int, option: int):
    """Exact mean and covariance of one randomized step from the point y0 (all selections)."""
    means, covs, probs = [], [], []
    if option == 1:
        patterns = itertools.product([0, 1], repeat=K - 1)
        for pat in patterns:
            amap = affine_step(
                integ,
                0.0,
                h,
                {b: () for b in integ.block_names},
                uniforms=[0.0 if s else 0.99 for s in pat],
            )
            means.append(amap.apply(y0))
            covs.append(amap.cov)
            probs.append(np.prod([1 / K if s else 1 - 1 / K for s in pat]))
    else:
        for i in range(K):
            amap = affine_step(integ, 0.0, h, uniforms=[(i + 0.5) / K])
            means.append(amap.apply(y0))
            covs.append(amap.cov)
            probs.append(1 / K)
    probs, means, covs = np.array(probs), np.array(means), np.array(covs)
    m = probs @ means
    C = np.einsum("k,kij->ij", probs, covs + means[:, :, None] * means[:, None, :]) - np.outer(m, m)
    return m, C


@pytest.mark.parametrize("option", [1, 2])
def test_constant_field_one_step_law_equals_K_fine_steps(option):
    K, h = 4, 0.3
    F = sd.Field("F", [x], definition=c + 0 * x)
    for linear in (0, -gamma * x):  # no linear part (LMC) and an Ornstein-Uhlenbeck part
        sde = overdamped(F, linear)
        params = {"kT": 0.7, "c": 0.4, **({"gamma": 1.3} if linear != 0 else {})}
        pm = sd.Integrator(sde, "L", params, solvers={"L": PoissonMidpoint(K, option)})
        fine = sd.Integrator(sde, "L", params)
        y0 = np.array([0.8])
        m, C = branch_law(pm, h, y0, K, option)
        mf, Cf = propagate(fine, np.linspace(0.0, h, K + 1), y0, np.zeros((1, 1)))
        assert np.abs(m - mf).max() < 1e-12
        assert np.abs(C - Cf).max() < 1e-12


@pytest.mark.parametrize("option", [1, 2])
def test_underdamped_with_constant_force_equals_K_fine_steps(option):
    """Underdamped Langevin as one flow: its Ornstein-Uhlenbeck linear part is solved exactly
    by the base (exponential Euler), the constant force is the field."""
    K, h = 3, 0.5
    G = sd.Field("G", [q], definition=c + 0 * q)
    flow = sd.Flow({q: p, p: -gamma * p + G()}, {p: sympy.sqrt(2 * gamma * kT)})
    sde = sd.SDE([q, p], {"U": flow})
    params = {"kT": 1.0, "gamma": 0.8, "c": -0.6}
    pm = sd.Integrator(sde, "U", params, solvers={"U": PoissonMidpoint(K, option)})
    fine = sd.Integrator(sde, "U", params)
    y0 = np.array([0.3, -0.2])
    m, C = branch_law(pm, h, y0, K, option)
    mf, Cf = propagate(fine, np.linspace(0.0, h, K + 1), y0, np.zeros((2, 2)))
    assert np.abs(m - mf).max() < 1e-12
    assert np.abs(C - Cf).max() < 1e-12


@pytest.mark.parametrize("option", [1, 2])
def test_linear_field_agrees_with_K_fine_steps_to_third_order(option):
    """A linear field frozen in the midpoint chain: mean and covariance of one step differ
    from K fine steps by O(h^3) (local second order), the fine chain's own order."""
    K = 4
    F = sd.Field("F", [x], definition=-2 * x)
    sde = overdamped(F)
    pm = sd.Integrator(sde, "L", {"kT": 1.0}, solvers={"L": PoissonMidpoint(K, option)})
    fine = sd.Integrator(sde, "L", {"kT": 1.0})
    hs = np.array([0.16, 0.08, 0.04, 0.02])
    dm, dc = [], []
    for h in hs:
        m, C = branch_law(pm, h, np.array([0.5]), K, option)
        mf, Cf = propagate(fine, np.linspace(0.0, h, K + 1), np.array([0.5]), np.zeros((1, 1)))
        dm.append(abs(m[0] - mf[0]))
        dc.append(abs(C[0, 0] - Cf[0, 0]))
    for d in (dm, dc):
        slope = np.polyfit(np.log(hs), np.log(d), 1)[0]
        assert abs(slope - 3) < 0.3, (slope, d)


@pytest.mark.parametrize("option", [1, 2])
def test_exact_moments_of_the_randomized_step_match_monte_carlo(option):
    K, h, steps = 3, 0.3, 6
    F = sd.Field("F", [x], definition=-x)
    pm = sd.Integrator(overdamped(F), "L", {"kT": 1.0}, solvers={"L": PoissonMidpoint(K, option)})
    grid = np.linspace(0, h * steps, steps + 1)
    m, C = propagate_moments(pm, grid, np.array([1.5]), np.array([[0.2]]))
    n = 200_000
    gen = torch.Generator().manual_seed(5)
    y0 = 1.5 + 0.2**0.5 * torch.randn(n, 1, generator=gen)
    out = sd.integrate(pm, {"x": y0}, grid=grid, seed=11).final["x"][:, 0]
    mean, var = float(out.mean()), float(out.var())
    se_m = (var / n) ** 0.5
    se_v = var * (2 / (n - 1)) ** 0.5
    assert abs(mean - m[0]) < 4 * se_m
    assert abs(var - C[0, 0]) < 4 * se_v


def test_stationary_bias_is_that_of_lmc_at_the_fine_step():
    """U(x) = x^2/2 + log(1 + x^2) (a Lipschitz force, so LMC is stable at large steps): the
    stationary <x^2> bias of the Poisson midpoint method at step alpha is closer to that of LMC
    at alpha/K than LMC at alpha is, for both options; the variance reduction brings option 2
    closer still (Monte Carlo, 4 standard errors; exact moments by quadrature)."""
    F = sd.Field("F", [x], definition=-x - 2 * x / (1 + x**2))
    sde = overdamped(F)
    weight = lambda v: np.exp(-(v**2) / 2) / (1 + v**2)  # noqa: E731
    z = scipy.integrate.quad(weight, -np.inf, np.inf)[0]
    exact = scipy.integrate.quad(lambda v: v**2 * weight(v), -np.inf, np.inf)[0] / z
    alpha, K, walkers, horizon, burn = 0.2, 4, 1000, 150.0, 10.0

    def stationary(integ, h: float, seed: int) -> tuple[float, float]:
        steps, every = int(horizon / h), max(1, int(0.5 / h))
        y0 = {"x": torch.randn(walkers, 1, generator=torch.Generator().manual_seed(seed))}
        res = sd.integrate(integ, y0, h=h, steps=steps, seed=seed, save_every=every)
        x2 = (res.states["x"][res.times > burn, :, 0] ** 2).mean(0)  # per-walker time averages
        return float(x2.mean()) - exact, float(x2.std() / walkers**0.5)

    def pmm(option: int, vr: bool = False) -> sd.Integrator:
        strategy = PoissonMidpoint(K, option, variance_reduction=vr)
        return sd.Integrator(sde, "L", {"kT": 1.0}, solvers={"L": strategy})

    lmc = sd.Integrator(sde, "L", {"kT": 1.0})
    coarse, fine = stationary(lmc, alpha, 1), stationary(lmc, alpha / K, 2)
    far = abs(coarse[0] - fine[0]) - 4 * np.hypot(coarse[1], fine[1])
    for option in (1, 2):
        b = stationary(pmm(option), alpha, 3)
        assert abs(b[0] - fine[0]) + 4 * np.hypot(b[1], fine[1]) < far, (coarse, fine, b)
    plain, reduced = stationary(pmm(2), alpha, 4), stationary(pmm(2, True), alpha, 4)
    assert abs(reduced[0] - fine[0]) + 4 * np.hypot(reduced[1], fine[1]) < abs(
        plain[0] - fine[0]
    ), (fine, plain, reduced)


@pytest.mark.parametrize("option", [1, 2])
def test_nfe_per_step(option):
    """One walker: 1 + Binomial((K-1), 1/K) (option 1) or 1 + Bernoulli((K-1)/K) (option 2)
    calls per step, mean 2 - 1/K; a batch: each call evaluates only the selected walkers, rows
    per walker and step have the same mean."""
    K, steps = 5, 3000
    rows = {"n": 0}

    def force(v: torch.Tensor) -> torch.Tensor:
        rows["n"] += v.shape[0]
        return -v

    F = sd.Field("F", [x])
    integ = sd.Integrator(
        overdamped(F), "L", {"kT": 1.0}, {"F": force}, solvers={"L": PoissonMidpoint(K, option)}
    )
    assert integ.evaluations_per_step == pytest.approx(2 - 1 / K)
    res = sd.integrate(integ, {"x": torch.zeros(1, 1)}, h=0.1, steps=steps, seed=0)
    p = 1 / K
    var = (K - 1) * p * (1 - p) if option == 1 else ((K - 1) / K) * (1 / K)
    per_step = res.nfe / steps
    assert abs(per_step - (2 - p)) < 4 * (var / steps) ** 0.5
    walkers = 64
    rows["n"] = 0
    res = sd.integrate(integ, {"x": torch.zeros(walkers, 1)}, h=0.1, steps=400, seed=1)
    per_walker = rows["n"] / (walkers * 400)
    assert abs(per_walker - (2 - p)) < 4 * (var / (walkers * 400)) ** 0.5
    # batched calls: the start, plus one per midpoint index some walker selected
    assert res.nfe / 400 > per_walker


def test_bad_input():
    with pytest.raises(ValueError, match="K >= 1"):
        PoissonMidpoint(0)
    with pytest.raises(ValueError, match="K >= 1"):
        PoissonMidpoint(2.5)
    with pytest.raises(ValueError, match="option must be 1"):
        PoissonMidpoint(3, option=3)
    F = sd.Field("F", [x], definition=-x)
    with pytest.raises(ValueError, match="not affine"):
        sd.Integrator(
            overdamped(F),
            "L",
            {"kT": 1.0},
            solvers={"L": PoissonMidpoint(2, base=sd.solvers.Custom({x: x**2}, weak_order=1))},
        )
