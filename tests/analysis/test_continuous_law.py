"""Exact laws of linear SDEs, exact weak-error ladders, stationary biases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
import sympy

import splitsde as sd
from splitsde import problems
from splitsde.analysis import LinearSDE, linear_sde, stationary_bias, weak_error_ladder


def test_ou_law_closed_form():
    prob = problems.ou(theta=1.7, mu=0.4, sigma=0.9)
    lin = linear_sde(prob.integrator("BO"))
    m, S = lin.law(0.0, 1.3, 2.0, 0.5)
    e = math.exp(-1.7 * 1.3)
    assert m[0] == pytest.approx(0.4 + (2.0 - 0.4) * e, rel=1e-13)
    assert S[0, 0] == pytest.approx(0.5 * e * e + 0.81 / 3.4 * (1 - e * e), rel=1e-13)
    mean, cov = lin.stationary()
    assert mean[0] == pytest.approx(0.4) and cov[0, 0] == pytest.approx(0.81 / 3.4)


def test_probed_drift_equals_the_problem_coefficients():
    for prob in [
        problems.harmonic(1.3, 0.4, 0.8, 2.0),
        problems.random_linear(5, 3),
        problems.overdamped_harmonic(0.7, 1.5),
    ]:
        integ = prob.integrator("".join(prob.sde.letters))
        A, b, K = linear_sde(integ).coefficients(0.0)
        np.testing.assert_allclose(A, prob.A, rtol=1e-14, atol=1e-15)
        np.testing.assert_allclose(K, prob.K, rtol=1e-14, atol=1e-15)
        np.testing.assert_array_equal(b, 0.0)


def test_harmonic_law_against_a_direct_matrix_exponential():
    prob = problems.harmonic(1.1, 0.5, 1.4, 0.8)
    m0, S0, T = np.array([0.5, -1.0]), np.diag([0.2, 0.3]), 2.5
    m, S = prob.law(T, m0, S0)
    E = scipy.linalg.expm(prob.A * T)
    # covariance integral by composite Simpson on a fine grid (independent of Van Loan)
    s = np.linspace(0.0, T, 4001)
    vals = np.stack(
        [scipy.linalg.expm(prob.A * x) @ prob.K @ scipy.linalg.expm(prob.A * x).T for x in s]
    )
    Q = scipy.integrate.simpson(vals, x=s, axis=0)
    np.testing.assert_allclose(m, E @ m0, rtol=1e-12)
    np.testing.assert_allclose(S, E @ S0 @ E.T + Q, rtol=1e-9, atol=1e-12)


def test_time_dependent_law_by_the_moment_ode():
    (x,) = sd.blocks("x")
    b0, b1 = sd.parameters("b0 b1", positive=True)
    beta = b0 + b1 * sd.t
    sde = sd.SDE([x], {"B": sd.Flow({x: -beta * x}), "O": sd.Flow(noise={x: sympy.sqrt(2 * beta)})})
    lin = linear_sde(sd.Integrator(sde, "BO", params={"b0": 0.5, "b1": 2.0}))
    assert not lin.autonomous
    m, S = lin.law(0.2, 1.1, 3.0, 0.25)
    B = 0.5 * 0.9 + (1.1**2 - 0.2**2)
    assert m[0] == pytest.approx(3.0 * math.exp(-B), rel=1e-9)
    assert S[0, 0] == pytest.approx(0.25 * math.exp(-2 * B) + 1 - math.exp(-2 * B), rel=1e-9)
    with pytest.raises(ValueError, match="no stationary law"):
        lin.stationary()


def test_ladder_slopes_give_orders():
    prob = problems.random_linear(4, 11)
    m0, S0 = np.ones(4), np.eye(4) * 0.3
    hs = [0.1, 0.05, 0.025, 0.0125]
    sym = weak_error_ladder(prob.integrator("BAOAB"), 1.0, hs, m0, S0, sde=prob.linear_sde)
    lie = weak_error_ladder(prob.integrator("OBA"), 1.0, hs, m0, S0, sde=prob.linear_sde)
    assert sym.order == 2 and lie.order == 1
    assert np.all(np.abs(sym.slopes - 2) < 0.1) and np.all(np.abs(lie.slopes - 1) < 0.1)
    with pytest.raises(ValueError, match="does not divide"):
        weak_error_ladder(prob.integrator("OBA"), 1.0, [0.3], m0, S0)


def test_stationary_bias_of_baoab_and_obabo():
    prob = problems.harmonic(1.3, 0.9, 0.6, 1.2)
    h = 0.4
    b = stationary_bias(prob.integrator("BAOAB"), h)
    assert abs(b["relative_bias"][0, 0]) < 1e-12  # positions exact
    assert b["relative_bias"][1, 1] == pytest.approx(-(1.3**2) * h**2 / (4 * 1.2), rel=1e-10)
    b = stationary_bias(prob.integrator("OBABO"), h)
    assert abs(b["relative_bias"][1, 1]) < 1e-12  # kinetic energy exact


def test_constant_linear_sde_and_unstable_drift():
    lin = LinearSDE.constant([[0.5]], None, [1.0])
    with pytest.raises(ValueError, match=r"eigenvalue with real part 0\.5"):
        lin.stationary()
