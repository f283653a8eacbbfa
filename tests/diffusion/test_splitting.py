"""The stochastic splitting samplers on the abo-ou split: one step against a hand-written update,
where the single score evaluation of a reduced step stands, and the stationary law of one step
against hand-built matrices (the reason the score stays with the momentum noise)."""

import numpy as np
import pytest
import scipy.linalg
import torch

import splitsde as sd
import splitsde.diffusion as dm

analysis = pytest.importorskip("splitsde.analysis")

PSLD = "psld-cifar10"


@pytest.fixture(scope="module")
def proc():
    return dm.process(PSLD)


def _score(x, m, tau):
    """A nonlinear, time-dependent stand-in for a score network (no particular law)."""
    return torch.tanh(x - 0.3 * m) - 0.1 * tau * x, -4.0 * m + 0.2 * torch.sin(x) * (1 + tau)


@pytest.mark.parametrize("lam_s", [0.0, 0.5, 1.0])
def test_one_sps_step_is_the_hand_written_update(lam_s, proc):
    """O, B, A with one score evaluation at the state and time of the step's start:
    m1 = m + h (b nu/2 m + c_m s_m) + sqrt(h) g_m xi_m, m2 = m1 + h b/2 x,
    x1 = x + h (b/2 (G x - Minv m2) + c_x s_x) + lam_s sqrt(h) g_x xi_x."""
    v = proc.values
    B, G, nu, Mi = v["beta"], v["Gamma"], v["nu"], v["Minv"]
    integ = dm.sampler("sps", lam_s=lam_s).integrator(proc, _score)
    gen = torch.Generator().manual_seed(5)
    x, m = (torch.randn(7, 3, generator=gen, dtype=torch.float64) for _ in range(2))
    t0, h = 0.2, 0.05
    draws = integ.program.draws
    noise = [torch.randn(7, 3, generator=gen, dtype=torch.float64) for _ in draws]
    out = integ.step({"x": x, "m": m}, t0, h, noise=noise)
    xi = {d.like.name: n for d, n in zip(draws, noise)}
    assert set(xi) == ({"x", "m"} if lam_s > 0 else {"m"})
    sx, sm = _score(x, m, t0)
    m1 = m + h * (B * nu / 2 * m + nu * B / Mi * sm) + np.sqrt(h * nu * B / Mi) * xi["m"]
    m2 = m1 + h * B / 2 * x
    cx = (1 + lam_s**2) / 2 * G * B
    x1 = x + h * (B / 2 * (G * x - Mi * m2) + cx * sx)
    if lam_s > 0:
        x1 = x1 + lam_s * np.sqrt(h * G * B) * xi["x"]
    np.testing.assert_allclose(out["m"], m2, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(out["x"], x1, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("name", ["reduced-oba", "sps", "reduced-obab"])
def test_reduced_words_evaluate_once_at_the_start_of_the_step(name, proc):
    """The single evaluation of OBA/OBAB sees the state at the start of the step and the step's
    start time (where the naive word first needs the score)."""
    seen = []

    def score(x, m, tau):
        seen.append((x.clone(), m.clone(), proc.T - tau))
        return _score(x, m, tau)

    grid = np.array([1.0, 0.7, 0.4, 0.1])
    plan = dm.plan(name, proc, score, grid=grid, denoise=False)
    y0 = proc.prior(5, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    res = sd.integrate(plan.integrator, y0, grid=plan.tau, seed=3, save_every=1)
    assert res.nfe == 3
    np.testing.assert_allclose([t for *_, t in seen], grid[:-1], rtol=0, atol=1e-14)
    for k, (x, m, _) in enumerate(seen):
        torch.testing.assert_close(x, res.states["x"][k], rtol=0, atol=0)
        torch.testing.assert_close(m, res.states["m"][k], rtol=0, atol=0)


# ---------------------------------------------------------------------------------------------
# Stationary law of one step under the stationary score s = (-x, -m / M)
# ---------------------------------------------------------------------------------------------
def _stationary_score(proc):
    minv = proc.values["Minv"]
    return lambda x, m, tau: (-x, -minv * m)


def _samplers():
    euler = dm.sampler("em").solvers["R"]
    noise_only_o = dm.sampler("reduced-oba").with_options(
        split="abo", solvers={"A": euler, "B": euler}
    )
    return {"em": dm.sampler("em"), "abo-ou": dm.sampler("reduced-oba"), "abo": noise_only_o}


def _hand_built(kind, proc, h):
    """(Phi, Q) of one step written out from the update equations, lambda = 1."""
    v = proc.values
    B, G, nu, Mi = v["beta"], v["Gamma"], v["nu"], v["Minv"]
    a = h * B * nu / 2
    qx, qm = np.diag([h * G * B, 0.0]), np.diag([0.0, h * nu * B / Mi])
    data = np.array([[1 + h * G * B / 2 - h * G * B, -h * B * Mi / 2], [0.0, 1.0]])
    if kind == "em":
        J = np.array([[G * B / 2 - G * B, -B * Mi / 2], [B / 2, B * nu / 2 - B * nu]])
        return np.eye(2) + h * J, qx + qm
    if kind == "abo-ou":  # O: friction + score at the start state plus noise; B: kick; A: data
        kick = np.array([[1.0, 0.0], [h * B / 2, 1.0]])
        phi, after_noise = data @ kick @ np.diag([1.0, 1 - a]), data @ kick
    else:  # abo: O = noise, then B = the whole momentum drift on the noised momentum
        phi = after_noise = data @ np.array([[1.0, 0.0], [h * B / 2, 1 - a]])
    return phi, after_noise @ qm @ after_noise.T + qx


@pytest.mark.parametrize("kind", ["em", "abo-ou", "abo"])
@pytest.mark.parametrize("h", [0.02, 0.005])
def test_stationary_law_of_one_step_matches_the_hand_built_map(kind, h, proc):
    integ = _samplers()[kind].integrator(proc, _stationary_score(proc))
    amap = analysis.affine_step(integ, 0.3, h)
    phi, q = _hand_built(kind, proc, h)
    np.testing.assert_allclose(amap.Phi, phi, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(amap.cov, q, rtol=1e-12, atol=1e-14)
    _, cov = analysis.stationary(amap)
    np.testing.assert_allclose(cov, scipy.linalg.solve_discrete_lyapunov(phi, q), rtol=1e-10)


def _data_variance_errors(proc, hs):
    """Stationary data variance of one step minus the exact 1, per sampler and step size."""
    err = {}
    for kind, s in _samplers().items():
        integ = s.integrator(proc, _stationary_score(proc))
        err[kind] = np.array(
            [analysis.stationary(analysis.affine_step(integ, 0.3, h))[1][0, 0] - 1 for h in hs]
        )
    return err


def test_score_with_its_noise_makes_the_data_variance_second_order(proc):
    """Exact stationary data variance is 1. With the momentum noise separated from its score
    (abo) one step loses about half of it at h = 0.02 (50 steps on [0, 1]) and the error is
    first order; with the score kept with the noise (abo-ou) the error is second order on CLD
    (Gamma = 0) and on PSLD has a first-order part from the data block's own Gamma terms, 20
    (h = 0.01) to 100 (h -> 0) times smaller than EM's error (first order, other sign)."""
    hs = np.array([0.01, 0.005, 0.0025])
    err = _data_variance_errors(proc, hs)
    ratio = {k: e[:-1] / e[1:] for k, e in err.items()}
    assert np.all(np.abs(ratio["abo"] - 2) < 0.2) and err["abo"][0] < -0.25, err["abo"]
    assert np.all(np.abs(ratio["em"] - 2) < 0.2) and err["em"][0] > 0, err["em"]
    assert np.all(np.abs(err["abo-ou"]) < 0.05 * err["em"]), err
    cld = _data_variance_errors(dm.process("cld"), hs)
    assert np.all(np.abs(cld["abo-ou"][:-1] / cld["abo-ou"][1:] - 4) < 0.25), cld["abo-ou"]
    integ = _samplers()["abo"].integrator(proc, _stationary_score(proc))
    assert 0.4 < analysis.stationary(analysis.affine_step(integ, 0.3, 0.02))[1][0, 0] < 0.55
