"""Forward processes: kernels from the derived solver against independent references."""

import math

import numpy as np
import pytest
import scipy.integrate
import scipy.linalg

import splitsde.diffusion as dm

QUAD = {"epsabs": 1e-15, "epsrel": 1e-13, "limit": 500}


def _beta_integral(beta, t0, t1):
    return scipy.integrate.quad(beta, t0, t1, epsabs=1e-15, epsrel=1e-13, limit=200)[0]


def _scalar_reference(beta, t):
    """VP: mean factor exp(-B/2) and variance int_0^t exp(-(B(t)-B(s))) beta(s) ds, B = int beta."""
    mean = math.exp(-0.5 * _beta_integral(beta, 0.0, t))
    var = scipy.integrate.quad(
        lambda s: math.exp(-_beta_integral(beta, s, t)) * beta(s), 0.0, t, **QUAD
    )[0]
    return mean, var


def _psld_matrices(G, nu, Minv):
    F0 = np.array([[-G / 2, Minv / 2], [-0.5, -nu / 2]])
    K0 = np.diag([G, nu / Minv])
    return F0, K0


def _psld_reference(G, nu, Minv, beta, t, B=None):
    """Matrix exponential of the drift times int beta, covariance by adaptive quadrature
    (``B(s, t)`` is the integral of beta over [s, t])."""
    B = B or (lambda s, t: _beta_integral(beta, s, t))
    F0, K0 = _psld_matrices(G, nu, Minv)
    phi = scipy.linalg.expm(F0 * B(0.0, t))

    def integrand(s):
        P = scipy.linalg.expm(F0 * B(s, t))
        return P @ (K0 * beta(s)) @ P.T

    cov = scipy.integrate.quad_vec(integrand, 0.0, t, **QUAD)[0]
    return phi, cov


TIMES = [1e-3, 0.05, 0.3, 0.7, 1.0]


@pytest.mark.parametrize("name", ["psld-cifar10", "psld-celeba64", "cld"])
def test_psld_and_cld_kernels_match_matrix_exponential_and_quadrature(name):
    proc = dm.process(name)
    v = proc.values
    G = v.get("Gamma", 0.0)
    phi, cov = proc.kernel(np.array(TIMES))
    for i, t in enumerate(TIMES):
        ref_phi, ref_cov = _psld_reference(
            G, v["nu"], v["Minv"], lambda s: 8.0, t, B=lambda s, t: 8.0 * (t - s)
        )
        np.testing.assert_allclose(phi[i], ref_phi, rtol=1e-10, atol=1e-13)
        np.testing.assert_allclose(cov[i], ref_cov, rtol=1e-10, atol=1e-13)


def test_psld_with_a_beta_schedule_matches_quadrature():
    proc = dm.psld(0.02, 4.02, beta=(0.1, 20.0))
    for t in (0.01, 0.4, 1.0):
        ref_phi, ref_cov = _psld_reference(0.02, 4.02, 4.0, lambda s: 0.1 + 19.9 * s, t)
        phi, cov = proc.kernel(t)
        np.testing.assert_allclose(phi, ref_phi, rtol=1e-10, atol=1e-13)
        np.testing.assert_allclose(cov, ref_cov, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize(
    "proc, beta",
    [
        (dm.vp(), lambda s: 0.1 + 19.9 * s),
        (
            dm.vp_cosine(),
            lambda s: math.pi / 1.008 * math.tan(math.pi / 2 * (s + 0.008) / 1.008),
        ),
    ],
    ids=["vp-linear", "vp-cosine"],
)
def test_vp_kernels_match_quadrature(proc, beta):
    for t in [1e-3, 0.1, 0.5, 0.9, proc.T]:
        mean, var = _scalar_reference(beta, t)
        phi, cov = proc.kernel(t)
        np.testing.assert_allclose(phi[0, 0], mean, rtol=1e-10)
        np.testing.assert_allclose(cov[0, 0], var, rtol=1e-10)


def test_ve_kernel_matches_quadrature():
    proc = dm.ve(0.01, 50.0)
    sig = lambda s: 0.01 * (50.0 / 0.01) ** s  # noqa: E731
    g2 = lambda s: 2 * sig(s) ** 2 * math.log(50.0 / 0.01)  # noqa: E731
    for t in [1e-5, 0.01, 0.5, 1.0]:
        phi, cov = proc.kernel(t)
        assert phi[0, 0] == 1.0
        ref = scipy.integrate.quad(g2, 0.0, t, **QUAD)[0]
        np.testing.assert_allclose(cov[0, 0], ref, rtol=1e-10)
        np.testing.assert_allclose(cov[0, 0], sig(t) ** 2 - 0.01**2, rtol=1e-10)


def test_transitions_compose_chapman_kolmogorov():
    proc = dm.vp_cosine()
    phi1, c1 = proc.transition(0.0, 0.3)
    phi2, c2 = proc.transition(0.3, 0.8)
    phi, c = proc.kernel(0.8)
    np.testing.assert_allclose(phi2 @ phi1, phi, rtol=1e-12)
    np.testing.assert_allclose(phi2 @ c1 @ phi2.T + c2, c, rtol=1e-11)
    proc = dm.process("psld-cifar10")
    phi1, c1 = proc.transition(0.0, 0.2)
    phi2, c2 = proc.transition(0.2, 0.5)
    phi, c = proc.kernel(0.5)
    np.testing.assert_allclose(phi2 @ phi1, phi, rtol=1e-11, atol=1e-14)
    np.testing.assert_allclose(phi2 @ c1 @ phi2.T + c2, c, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("name", ["psld-cifar10", "psld-cifar10-sampling", "psld-celeba64", "cld"])
def test_psld_stationary_law_is_standard_normal_times_mass(name):
    proc = dm.process(name)
    v = proc.values
    M = 1.0 / v["Minv"]
    # the stationary covariance solves the Lyapunov equation F S + S F^T + G G^T = 0 ...
    F0, K0 = _psld_matrices(v.get("Gamma", 0.0), v["nu"], v["Minv"])
    S = np.diag([1.0, M])
    np.testing.assert_allclose(F0 @ S + S @ F0.T + K0, 0.0, atol=1e-14)
    assert proc.stationary_variance == (1.0, M)
    # ... and the derived kernel reaches it from any start, with the mean forgotten
    phi, cov = proc.kernel(np.array([5.0, 40.0]))
    np.testing.assert_allclose(cov, np.broadcast_to(S, cov.shape), rtol=1e-10, atol=1e-12)
    assert np.abs(phi[1]).max() < 1e-100


def test_reference_configurations():
    for name, (G, nu) in {
        "psld-cifar10": (0.01, 4.01),
        "psld-cifar10-sampling": (0.02, 4.02),
        "psld-celeba64": (0.005, 4.005),
    }.items():
        v = dm.process(name).values
        assert (v["Gamma"], v["nu"], v["beta"], v["Minv"]) == (G, nu, 8.0, 4.0)
        assert (G - nu) ** 2 == pytest.approx(4 * v["Minv"])  # critical damping
    cld = dm.process("cld")
    assert "Gamma" not in cld.values and cld.values["nu"] == 4.0
    # Gamma = 0 is substituted symbolically: the data block receives no noise at all
    assert dm.process("cld").diffusion[0] == 0
    assert dm.process("psld-cifar10").initial_variance == (0.0, 0.04 * 0.25)


def test_data_kernel_adds_the_initial_momentum_variance():
    proc = dm.process("psld-cifar10")
    phi, cov = proc.kernel(0.4)
    a, S = proc.data_kernel(0.4)
    np.testing.assert_allclose(a, phi[:, 0])
    np.testing.assert_allclose(S, cov + 0.01 * np.outer(phi[:, 1], phi[:, 1]), rtol=1e-13)
    L = proc.cholesky(0.4)
    assert L[0, 1] == 0.0
    np.testing.assert_allclose(L @ L.T, S, rtol=1e-13)


def test_forward_solvers_are_derived_exact():
    assert dm.process("psld-cifar10").sde.flows["F"].solver.method == "linear"
    vp_solver = dm.vp().sde.flows["F"].solver
    assert vp_solver.exact and "clock" in vp_solver.reason
    assert dm.ve().sde.flows["F"].solver.method == "shear"


def test_noise_level_is_sigma_over_alpha():
    proc = dm.vp()
    t = np.array([0.01, 0.5])
    phi, cov = proc.kernel(t)
    np.testing.assert_allclose(proc.noise_level(t), np.sqrt(cov[:, 0, 0]) / phi[:, 0, 0])
    np.testing.assert_allclose(dm.ve().noise_level(1.0), math.sqrt(50.0**2 - 0.01**2))


def test_bad_process_input_is_rejected():
    with pytest.raises(ValueError, match="unknown process"):
        dm.process("psld-imagenet")
    with pytest.raises(ValueError, match="beta"):
        dm.psld(0.01, 4.01, beta=-1.0)
    with pytest.raises(ValueError, match="Gamma, nu"):
        dm.psld(0.0, 0.0)
    with pytest.raises(ValueError, match="cosine"):
        dm.vp_cosine(T=1.0)
    with pytest.raises(ValueError, match="t > 0"):
        dm.process("cld").terms(0.0)
    with pytest.raises(ValueError, match="t1 >= t0"):
        dm.vp().transition(0.5, 0.2)
