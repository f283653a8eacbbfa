"""The guard against the analysis and the sampler drifting apart: Monte Carlo moments from
``integrate`` match the exact n-step law of the analysis within 4 standard errors."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import given
from hypothesis import strategies as st
from strategies import words

import splitsde as sd
from splitsde import problems
from splitsde.analysis import propagate

WALKERS = 4000


@st.composite
def linear_problems(draw):
    kind = draw(st.sampled_from(["harmonic", "linear", "ou"]))
    if kind == "harmonic":
        prob = problems.harmonic(
            draw(st.floats(0.3, 2.0)),
            draw(st.floats(0.1, 3.0)),
            draw(st.floats(0.3, 2.0)),
            draw(st.floats(0.5, 2.0)),
        )
        letters = ("A", "B", "O")
    elif kind == "linear":
        prob = problems.random_linear(draw(st.integers(2, 3)), draw(st.integers(0, 10**6)))
        letters = ("A", "B", "O")
    else:
        prob = problems.ou(
            draw(st.floats(0.2, 3.0)), draw(st.floats(-1, 1)), draw(st.floats(0.3, 2))
        )
        letters = ("B", "O")
    return prob, letters


def _check_moments(y: np.ndarray, mean: np.ndarray, cov: np.ndarray) -> None:
    """Sample mean and covariance against the exact law, 4 standard errors each."""
    W = y.shape[0]
    se_mean = np.sqrt(np.diag(cov) / W)
    assert np.all(np.abs(y.mean(0) - mean) <= 4 * se_mean), (y.mean(0), mean, se_mean)
    yc = y - mean
    emp = yc.T @ yc / W  # known mean: unbiased, var = (S_ii S_jj + S_ij^2) / W
    se_cov = np.sqrt((np.outer(np.diag(cov), np.diag(cov)) + cov**2) / W)
    assert np.all(np.abs(emp - cov) <= 4 * se_cov + 1e-12), (emp, cov, se_cov)


@given(
    case=linear_problems(),
    data=st.data(),
    h=st.floats(0.02, 0.4),
    steps=st.integers(1, 12),
    seed=st.integers(0, 2**31),
)
def test_monte_carlo_matches_exact_n_step_law(case, data, h, steps, seed):
    prob, letters = case
    word = data.draw(words(letters=letters, max_size=6, weighted=data.draw(st.booleans())))
    reuse = data.draw(st.sampled_from(["exact", "per_step", "none"]))
    integ = prob.integrator(word, reduction=sd.Reduction(reuse))
    D = prob.dim
    rng = np.random.default_rng(seed)
    mean0 = rng.normal(size=D)
    G = rng.normal(size=(D, D)) * 0.5
    cov0 = G @ G.T + 0.1 * np.eye(D)
    y0 = prob.initial_state(WALKERS, mean0, cov0, torch.Generator().manual_seed(seed))
    res = sd.integrate(integ, y0, h=h, steps=steps, seed=seed + 1)
    y = np.stack([res.final[b].numpy() for b in prob.block_names], axis=1)
    mean, cov = propagate(integ, h * np.arange(steps + 1), mean0, cov0)
    _check_moments(y, mean, cov)


def test_cross_check_detects_a_wrong_law():
    """The same check rejects the law of a different scheme (it can fail)."""
    prob = problems.harmonic(1.5, 0.3, 1.0, 1.0)
    y0 = prob.initial_state(WALKERS, [1.0, 0.0], [0.1, 0.1], torch.Generator().manual_seed(0))
    res = sd.integrate(prob.integrator("OBA"), y0, h=0.4, steps=10, seed=1)
    y = np.stack([res.final[b].numpy() for b in prob.block_names], axis=1)
    mean, cov = propagate(prob.integrator("BAOAB"), 0.4 * np.arange(11), [1.0, 0.0], [0.1, 0.1])
    try:
        _check_moments(y, mean, cov)
    except AssertionError:
        return
    raise AssertionError("the moment check accepted the law of another word")
