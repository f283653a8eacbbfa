"""Common random numbers: one Brownian path, coarsened across step sizes.

A coarse draw must be exactly the normalised sum of the fine increments it covers, every draw
must be a standard normal, and draws over disjoint intervals (or of different flows) must be
independent -- so each run has exactly the law of a run with independent noise."""

from __future__ import annotations

import itertools
import math

import pytest
import sympy as sp
import torch

import splitsde as sd
from splitsde import problems
from splitsde.analysis.common_noise import (
    CommonNoise,
    CommonNoiseError,
    brownian_levels,
    fine_step,
)

N = 200_000


def _draws(integ, h, levels, n_steps, walkers=N, seed=7):
    """Every draw of ``n_steps`` steps of length h, as a list per step of tensors."""
    noise = CommonNoise(integ, seed=seed, dt=levels[-1], h=h, levels=levels)
    like = torch.zeros(walkers, dtype=torch.float64)
    fns = noise.bind([like.shape] * len(noise.keys), like)
    fr = [(d.start, d.stop) for d in integ.program.draws]
    out = []
    for k in range(n_steps):
        step = []
        for fn, (a, b) in zip(fns, fr):
            t0 = float(a.subs({sd.t: k * h, sd.h: h}))
            t1 = float(b.subs({sd.t: k * h, sd.h: h}))
            step.append(fn(t0, t1))
        out.append(step)
    return out


@pytest.mark.parametrize("levels", [(0.4, 0.2, 0.1), (0.4, 0.1)])
def test_coarse_increment_is_the_sum_of_fine_increments(levels):
    integ = problems.ou(theta=2.0, mu=0.0, sigma=1.5).integrator("BO")
    fine = _draws(integ, 0.1, levels, 8, walkers=1000)
    for h in (0.2, 0.4):
        m = round(h / 0.1)
        coarse = _draws(integ, h, levels, round(0.8 / h), walkers=1000)
        for k, (xi,) in enumerate(coarse):
            total = sum(f[0] for f in fine[k * m : (k + 1) * m]) * math.sqrt(0.1)
            assert torch.allclose(xi * math.sqrt(h), total, rtol=0, atol=1e-12)


def test_draws_are_independent_standard_normals():
    """Mean 0 and variance 1 within 4 standard errors; no correlation between consecutive
    draws of a step (OBO: two halves of the O slice) or between steps."""
    integ = problems.ou(theta=2.0, mu=0.0, sigma=1.5).integrator("OBO")
    levels = brownian_levels([0.4, 0.2, 0.1, 0.05])
    steps = _draws(integ, 0.1, levels, 4)
    flat = [x for step in steps for x in step]
    for x in flat:
        assert abs(float(x.mean())) < 4 / math.sqrt(N)
        assert abs(float(x.var()) - 1) < 4 * math.sqrt(2 / N)
    for a, b in itertools.pairwise(flat):
        assert abs(float((a * b).mean())) < 4 / math.sqrt(N)


def test_two_flows_with_noise_on_one_block_get_independent_motions():
    (x,) = sd.blocks("x")
    sde = sd.SDE([x], {"A": sd.Flow({x: -x}, {x: sp.Integer(1)}), "O": sd.Flow(noise={x: 1})})
    integ = sd.System(sde).integrator("A O")
    noise = CommonNoise(integ, seed=1, dt=0.1, h=0.1, levels=(0.1,))
    assert len(noise.coords) == 2 and {k[0] for k in noise.coords} == {"A", "O"}
    (a, o), *_ = _draws(integ, 0.1, (0.1,), 1)
    assert abs(float((a * o).mean())) < 4 / math.sqrt(N)


def test_two_words_on_one_sde_share_the_path():
    """BAOAB's single O draw equals OBABO's two half-step O draws summed: the same Brownian
    path drives both words."""
    prob = problems.harmonic(1.0, 1.0, 1.0, 1.0)
    levels = (0.4, 0.2, 0.1)
    (b,) = _draws(prob.integrator("BAOAB"), 0.2, levels, 1, walkers=500)[0]
    o1, o2 = _draws(prob.integrator("OBABO"), 0.2, levels, 1, walkers=500)[0]
    assert torch.allclose(b * math.sqrt(0.2), (o1 + o2) * math.sqrt(0.1), atol=1e-12)


def test_state_dict_replays_the_same_draws():
    integ = problems.ou(theta=2.0, mu=0.0, sigma=1.5).integrator("BO")
    noise = CommonNoise(integ, seed=2, dt=0.1, h=0.1, levels=(0.4, 0.1))
    like = torch.zeros(100, dtype=torch.float64)
    (fn,) = noise.bind([like.shape], like)
    fn(0.0, 0.1)
    saved = noise.state_dict()
    first = [fn(0.1 * k, 0.1 * (k + 1)) for k in range(1, 9)]
    noise.load_state_dict(saved)
    again = [fn(0.1 * k, 0.1 * (k + 1)) for k in range(1, 9)]
    assert all(torch.equal(x, y) for x, y in zip(first, again))


def test_runs_with_common_noise_have_the_law_of_the_scheme():
    """OU with Euler--Maruyama (BO): E[x_T^2] of the run equals the exact law of the scheme
    (affine analysis) within 4 standard errors, at a coarse step of a nested hierarchy."""
    prob = problems.ou(theta=2.0, mu=0.0, sigma=1.5)
    integ = prob.integrator("BO")
    h = 0.2
    noise = CommonNoise(integ, seed=4, dt=0.025, h=h, levels=(0.2, 0.1, 0.05, 0.025))
    res = sd.integrate(integ, {"x": torch.full((N,), 2.0)}, h=h, steps=5, noise=noise)
    x2 = res.final["x"] ** 2
    from splitsde.analysis import propagate

    m, S = propagate(integ, h * torch.arange(6).numpy(), 2.0, 0.0)
    exact = S[0, 0] + m[0] ** 2
    assert abs(float(x2.mean()) - exact) < 4 * float(x2.std()) / math.sqrt(N)


def test_grid_errors_are_clear():
    integ = problems.ou(theta=2.0, mu=0.0, sigma=1.5).integrator("BO")
    with pytest.raises(CommonNoiseError, match="not an integer multiple"):
        CommonNoise(integ, seed=0, dt=0.03, h=0.1)
    with pytest.raises(CommonNoiseError, match="not a chain"):
        CommonNoise(integ, seed=0, dt=0.1, h=0.1, levels=(0.3, 0.2, 0.1))
    thirds = problems.ou(theta=2.0, mu=0.0, sigma=1.5).integrator("O[1/3] B O[2/3]")
    assert fine_step(thirds, 0.3) == (pytest.approx(0.1), 3)
    with pytest.raises(CommonNoiseError, match="1/3 of the step"):
        CommonNoise(thirds, seed=0, dt=0.05, h=0.1)
    assert brownian_levels([0.4, 0.1, 0.2, 0.1]) == (0.4, 0.2, 0.1)
    assert brownian_levels([0.3, 0.2]) is None
