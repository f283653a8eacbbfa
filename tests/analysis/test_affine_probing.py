"""Exact one-step maps by probing the compiled step, n-step laws and stationary laws."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import sympy
import torch

import splitsde as sd
from splitsde import problems
from splitsde.analysis import (
    NotAffineError,
    UnstableError,
    affine_step,
    propagate,
    stationary,
)


def _baoab_by_hand(omega: float, gamma: float, kT: float, M: float, h: float):
    """BAOAB on the harmonic oscillator composed from elementary matrices written here."""
    B = np.array([[1.0, 0.0], [-(omega**2) * h / 2, 1.0]])
    A = np.array([[1.0, h / (2 * M)], [0.0, 1.0]])
    c = math.exp(-gamma * h)
    O_ = np.diag([1.0, c])
    QO = np.diag([0.0, M * kT * (1 - c * c)])
    Phi = B @ A @ O_ @ A @ B
    post = B @ A
    return Phi, post @ QO @ post.T


def test_affine_step_matches_hand_composition():
    omega, gamma, kT, M, h = 1.7, 0.6, 1.3, 2.1, 0.23
    prob = problems.harmonic(omega, gamma, kT, M)
    amap = affine_step(prob.integrator("BAOAB"), 0.0, h)
    Phi, Q = _baoab_by_hand(omega, gamma, kT, M, h)
    np.testing.assert_allclose(amap.Phi, Phi, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(amap.cov, Q, rtol=1e-13, atol=1e-15)
    np.testing.assert_array_equal(amap.c, 0.0)
    assert amap.noise.shape == (2, 1)
    assert [lay.block for lay in amap.layout] == ["q", "p"]


def test_event_shapes_give_block_diagonal_maps():
    prob = problems.harmonic(1.2, 0.8, 1.0, 1.0)
    integ = prob.integrator("OBABO")
    scalar = affine_step(integ, 0.0, 0.2)
    vec = affine_step(integ, 0.0, 0.2, {"q": (3,), "p": (3,)})
    assert vec.dim == 6 and vec.noise.shape == (6, 6)
    np.testing.assert_allclose(vec.Phi, np.kron(scalar.Phi, np.eye(3)), rtol=1e-14, atol=1e-16)
    np.testing.assert_allclose(vec.cov, np.kron(scalar.cov, np.eye(3)), rtol=1e-14, atol=1e-16)
    state = vec.unflatten(np.arange(6.0))
    assert state["q"].tolist() == [0.0, 1.0, 2.0] and state["p"].tolist() == [3.0, 4.0, 5.0]
    np.testing.assert_array_equal(vec.flatten(state), np.arange(6.0))


def test_propagate_uniform_grid_matches_hand_recursion():
    omega, gamma, kT, M, h = 1.1, 0.9, 0.7, 1.0, 0.17
    prob = problems.harmonic(omega, gamma, kT, M)
    Phi, Q = _baoab_by_hand(omega, gamma, kT, M, h)
    m, S = np.array([1.0, -0.3]), np.array([[0.2, 0.05], [0.05, 0.4]])
    mean, cov = propagate(prob.integrator("BAOAB"), h * np.arange(13), m, S)
    for _ in range(12):
        m, S = Phi @ m, Phi @ S @ Phi.T + Q
    np.testing.assert_allclose(mean, m, rtol=1e-12)
    np.testing.assert_allclose(cov, S, rtol=1e-12)


def test_propagate_time_dependent_nonuniform_grid():
    """dx = -beta(t) x dt + sqrt(2 beta(t)) dW split into exact B (clock) and O (noise)."""
    (x,) = sd.blocks("x")
    b0, b1 = sd.parameters("b0 b1", positive=True)
    beta = b0 + b1 * sd.t
    sde = sd.SDE([x], {"B": sd.Flow({x: -beta * x}), "O": sd.Flow(noise={x: sympy.sqrt(2 * beta)})})
    integ = sd.Integrator(sde, "BO", params={"b0": 0.5, "b1": 2.0})
    grid = np.array([0.0, 0.05, 0.2, 0.25, 0.6, 1.0])
    mean, cov = propagate(integ, grid, 2.0, 0.1)
    m, v = 2.0, 0.1
    for t0, t1 in itertools.pairwise(grid):
        dB = 0.5 * (t1 - t0) + (t1**2 - t0**2)  # int beta over the step
        m, v = m * math.exp(-dB), v * math.exp(-2 * dB) + 2 * dB
    np.testing.assert_allclose(mean, [m], rtol=1e-12)
    np.testing.assert_allclose(cov, [[v]], rtol=1e-12)
    means, covs = propagate(integ, grid, 2.0, 0.1, history=True)
    assert means.shape == (6, 1) and covs.shape == (6, 1, 1)
    np.testing.assert_allclose(covs[-1], cov, rtol=1e-15)


def test_stationary_solves_discrete_lyapunov_and_mean():
    prob = problems.ou(theta=1.5, mu=0.7, sigma=0.8)
    h = 0.3
    amap = affine_step(prob.integrator("BO"), 0.0, h)
    mean, cov = stationary(amap)
    a = math.exp(-1.5 * h)
    # Lie BO: x' = a x + mu (1 - a) + sigma sqrt(h) xi  ->  var = sigma^2 h / (1 - a^2)
    np.testing.assert_allclose(mean, [0.7], rtol=1e-12)
    np.testing.assert_allclose(cov, [[0.64 * h / (1 - a * a)]], rtol=1e-12)


def test_unstable_step_names_spectral_radius():
    prob = problems.harmonic(omega=2.0, gamma=1.0)
    amap = affine_step(prob.integrator("BAOAB"), 0.0, 1.05)  # h omega > 2: Verlet unstable
    with pytest.raises(UnstableError, match=r"spectral radius rho\(Phi\) = 1\.\d+"):
        stationary(amap)
    assert stationary(affine_step(prob.integrator("BAOAB"), 0.0, 0.95))[1][0, 0] == pytest.approx(
        0.25
    )


def test_nonlinear_problem_is_refused():
    system = sd.langevin.underdamped(sd.potentials.DoubleWell(), gamma=1.0)
    with pytest.raises(
        NotAffineError, match="the step is not affine: the exact analysis applies to linear"
    ):
        affine_step(system.integrator("BAOAB"), 0.0, 0.1)


def test_probing_does_not_count_as_a_run():
    # counters live on the run, not on the integrator: a probe between runs changes no count
    prob = problems.harmonic()
    integ = prob.integrator("BAOAB")
    y0 = {"q": torch.zeros(2, 1), "p": torch.ones(2, 1)}
    before = sd.integrate(integ, y0, h=0.1, steps=5, seed=0)
    affine_step(integ, 0.0, 0.1)
    after = sd.integrate(integ, y0, h=0.1, steps=5, seed=0)
    assert before.nfe == after.nfe == 6 and not hasattr(integ, "nfe_counts")


def test_bad_inputs():
    integ = problems.harmonic().integrator("BAOAB")
    with pytest.raises(ValueError, match="unknown block"):
        affine_step(integ, 0.0, 0.1, {"x": 3})
    with pytest.raises(ValueError, match="h must be positive"):
        affine_step(integ, 0.0, -0.1)
    with pytest.raises(ValueError, match="mean0 must have 2 entries"):
        propagate(integ, [0.0, 0.1], [0.0, 0.0, 0.0], 1.0)
    with pytest.raises(ValueError, match="strictly increasing"):
        propagate(integ, [0.0, 0.2, 0.1], 0.0, 1.0)


def test_affine_map_propagate_equals_grid_propagation():
    prob = problems.random_linear(4, 1)
    integ = prob.integrator("BAOAB")
    amap = affine_step(integ, 0.0, 0.1)
    m1, S1 = amap.propagate(np.ones(4), np.eye(4), 20)
    m2, S2 = propagate(integ, 0.1 * np.arange(21), np.ones(4), np.eye(4))
    np.testing.assert_allclose(m1, m2, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(S1, S2, rtol=1e-13, atol=1e-15)
