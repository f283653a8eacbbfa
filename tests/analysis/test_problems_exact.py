"""The test problems and their exact answers, against independent closed forms."""

from __future__ import annotations

import math

import numpy as np
import pytest

from splitsde import problems


def test_quartic_quadrature_against_gamma_functions():
    prob = problems.quartic(a=1.0, b=0.0, kT=1.0)
    ex = prob.stationary_moments_exact()
    # U = q^4/4:  <q^2> = 2 Gamma(3/4) / Gamma(1/4),  <q^4> = kT (virial <q U'> = kT)
    assert ex["q2"] == pytest.approx(2 * math.gamma(0.75) / math.gamma(0.25), rel=1e-11)
    assert ex["q4"] == pytest.approx(1.0, rel=1e-11)
    assert ex["p2"] == 1.0
    hot = problems.quartic(a=2.0, b=0.0, kT=0.5, overdamped_dynamics=True)
    # scaling q -> (kT/a)^{1/4} x
    assert hot.stationary_moments_exact()["q2"] == pytest.approx(
        math.sqrt(0.5 / 2.0) * 2 * math.gamma(0.75) / math.gamma(0.25), rel=1e-11
    )
    assert "p2" not in hot.stationary_moments_exact()


@pytest.mark.parametrize("dim,seed", [(2, 0), (3, 1), (6, 2), (9, 3)])
def test_random_linear_is_stable_and_split_correctly(dim, seed):
    prob = problems.random_linear(dim, seed)
    assert np.linalg.eigvals(prob.A).real.max() < 0
    assert set(prob.sde.flows) == {"A", "B", "O"}
    # the flows add up to the advertised drift (symbolically)
    drift = prob.sde.drift
    for i, b in enumerate(prob.sde.blocks):
        expected = sum(prob.A_sym[i, j] * prob.sde.blocks[j] for j in range(dim))
        assert (drift[b] - expected).expand() == 0
    _, cov = prob.stationary_exact()
    np.testing.assert_allclose(prob.A @ cov + cov @ prob.A.T + prob.K, 0.0, atol=1e-12)
    assert problems.random_linear(dim, seed).A.tolist() == prob.A.tolist()  # reproducible


def test_harmonic_exact_answers():
    prob = problems.harmonic(omega=2.0, gamma=0.5, kT=1.5, mass=3.0)
    assert prob.stationary_moments_exact() == {"q2": 1.5 / 4.0, "p2": 4.5, "qp": 0.0}
    _, cov = prob.stationary_exact()
    np.testing.assert_allclose(cov, np.diag([1.5 / 4.0, 4.5]), rtol=1e-13, atol=1e-15)
    od = problems.overdamped_harmonic(omega=2.0, kT=1.5)
    assert od.stationary_moments_exact() == {"q2": 1.5 / 4.0}


def test_bad_problem_parameters():
    with pytest.raises(ValueError, match="dim must be an integer >= 2"):
        problems.random_linear(1)
    with pytest.raises(ValueError, match="needs dim >= 3"):
        problems.random_linear(2, commuting=True)
    with pytest.raises(ValueError, match="omega must be positive"):
        problems.harmonic(omega=0.0)
    with pytest.raises(ValueError, match="a must be positive"):
        problems.quartic(a=-1.0)
