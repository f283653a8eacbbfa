"""Van Loan covariance integrals over long slices (regression test for a cancellation bug)."""

import numpy as np
import pytest
import scipy.integrate
import scipy.linalg

from splitsde.symbolic.numeric import van_loan

# critically damped PSLD-like drift: |A| T reaches ~300, where the plain block exponential
# returned garbage (negative "covariances") because its blocks grow like exp(|A| T)
A = 8.0 * np.array([[-0.005, 2.0], [-0.5, -2.005]])
K = np.diag([0.08, 8.02])


@pytest.mark.parametrize("T", [0.01, 1.0, 3.0, 20.0])
def test_van_loan_matches_quadrature_on_long_slices(T):
    ref = scipy.integrate.quad_vec(
        lambda s: scipy.linalg.expm(A * s) @ K @ scipy.linalg.expm(A * s).T,
        0.0,
        T,
        epsabs=1e-14,
        epsrel=1e-13,
        limit=500,
    )[0]
    phi, q = van_loan(A, K, np.array(T))
    np.testing.assert_allclose(phi, scipy.linalg.expm(A * T), rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(q, ref, rtol=1e-10, atol=1e-12)


def test_van_loan_long_slice_reaches_the_stationary_covariance():
    # A Q + Q A^T + K = 0 for the stationary covariance of dz = A z dt + K^{1/2} dW
    stat = scipy.linalg.solve_continuous_lyapunov(A, -K)
    _, q = van_loan(A, K, np.array([50.0, 500.0]))
    np.testing.assert_allclose(q, np.broadcast_to(stat, q.shape), rtol=1e-10, atol=1e-12)


def test_van_loan_negative_slices_are_unchanged():
    phi, q = van_loan(A, K, np.array([-0.7]))
    ref = -scipy.integrate.quad_vec(
        lambda s: scipy.linalg.expm(A * s) @ K @ scipy.linalg.expm(A * s).T,
        -0.7,
        0.0,
        epsabs=1e-14,
        epsrel=1e-13,
    )[0]
    np.testing.assert_allclose(phi[0], scipy.linalg.expm(-0.7 * A), rtol=1e-10)
    np.testing.assert_allclose(q[0], ref, rtol=1e-9, atol=1e-10)
