"""Conjugate exponential integrators (cddim, cddim-sde, cdeis1..3).

References: DDIM and diffusers-style log-rho DEIS on VP (the conjugate samplers reduce to them);
the closed-form law N(a_t x0, S_t) of data at a point, which the conjugate steps must keep
exactly at any step size; the point-data probability flow integrated by scipy's DOP853 for the
transport; the exact marginal of Gaussian data for the convergence orders; a Monte Carlo run
for the compiled stochastic step.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp

import splitsde.diffusion as dm
from splitsde.diffusion.conjugate import ConjugateDEIS, point_flow_frame
from splitsde.diffusion.metrics import exact_law
from tests.diffusion.law_helpers import law_error_slope


def point_score(process: dm.ForwardProcess, x0: float):
    """The exact score of data at the point ``x0`` (every data dimension)."""

    def score(x: torch.Tensor, m: torch.Tensor, tau: float):
        k = process.terms(process.T - tau)
        w = torch.stack([x - k.a[0] * x0, m - k.a[1] * x0], -1)
        s = -(w @ torch.as_tensor(k.S_inv, dtype=w.dtype).T)
        return s[..., 0], s[..., 1]

    return score


@pytest.mark.parametrize(
    "conj, ref",
    [("cddim", "ddim"), ("cdeis1", "deis-logrho1"), ("cdeis2", "deis-logrho2"),
     ("cdeis3", "deis-logrho3")],
)  # fmt: skip
def test_vp_reduces_to_ddim_and_logrho_deis(conj, ref):
    proc = dm.process("vp")
    score = dm.GaussianMixture.ring(4).score(proc)
    gen = torch.Generator().manual_seed(0)
    y0 = {"x": torch.randn(64, 2, generator=gen, dtype=torch.float64)}
    a = dm.plan(conj, proc, score, steps=12, grid="quadratic", denoise=False).run(y0).x
    b = dm.plan(ref, proc, score, steps=12, grid="quadratic", denoise=False).run(y0).x
    assert torch.allclose(a, b, rtol=0, atol=1e-12 * float(b.abs().max()))


@pytest.mark.parametrize("proc_name", ["psld-cifar10", "cld"])
@pytest.mark.parametrize(
    "name, lam", [("cddim", None), ("cdeis2", None), ("cdeis3", None), ("cddim-sde", 1.0),
                  ("cddim-sde", 0.5), ("cddim-sde", {"x": 0.0}), ("csps", None)],
)  # fmt: skip
def test_exact_for_data_at_a_point(proc_name, name, lam):
    """From the exact law at T, five uniform steps end exactly in N(a_t x0, S_t)."""
    proc = dm.process(proc_name)
    x0 = 0.7
    s = dm.sampler(name) if lam is None else dm.sampler(name, lam=lam)
    p = dm.plan(
        s, proc, point_score(proc, x0), steps=5, grid="uniform", denoise=False,
        check_stability=False,
    )  # fmt: skip
    a, S = proc.data_kernel(proc.T)
    m, c = exact_law(p, torch.tensor(a * x0), torch.tensor(S))
    a1, S1 = proc.data_kernel(p.grid[-1])
    scale = float(np.abs(S1).max())
    assert np.abs(m.numpy() - a1 * x0).max() < 1e-9 * max(1.0, abs(x0))
    assert np.abs(c.numpy() - S1).max() < 1e-8 * scale


def test_euler_maruyama_is_not_exact_for_data_at_a_point():
    """The same check fails for EM (the check can fail)."""
    proc = dm.process("psld-cifar10")
    p = dm.plan("em", proc, point_score(proc, 0.7), steps=5, grid="uniform", denoise=False)
    a, S = proc.data_kernel(proc.T)
    _, c = exact_law(p, torch.tensor(a * 0.7), torch.tensor(S))
    _, S1 = proc.data_kernel(p.grid[-1])
    assert np.abs(c.numpy() - S1).max() > 1.0


@pytest.mark.parametrize("lam", [0.0, 1.0])
def test_transport_matches_the_point_data_flow(lam):
    r"""E(b <- a) = C_b^{-1} Psi C_a with Psi the propagator of the point-data reverse drift
    -(F + (1+lam^2)/2 GG^T S^{-1}), integrated by DOP853 from the process's kernel."""
    proc = dm.process("psld-cifar10")
    F = np.array(proc.drift.xreplace(proc.params).tolist(), dtype=float)
    GG = np.diag([float(g.xreplace(proc.params)) ** 2 for g in proc.diffusion])
    c = 0.5 * (1 + lam**2)

    def rhs(t, y):  # forward in diffusion time, so the reverse drift changes sign
        _, S = proc.data_kernel(t)
        return ((F + c * GG @ np.linalg.inv(S)) @ y.reshape(2, 2)).ravel()

    fr = point_flow_frame(proc)
    for ta, tb in [(0.9, 0.6), (0.2, 0.05), (0.02, 0.002)]:
        sol = solve_ivp(rhs, (ta, tb), np.eye(2).ravel(), method="DOP853", rtol=1e-11,
                        atol=1e-13)  # fmt: skip
        Psi = sol.y[:, -1].reshape(2, 2)
        Ca, Cb = (np.linalg.cholesky(proc.data_kernel(x)[1]) for x in (ta, tb))
        ref = np.linalg.inv(Cb) @ Psi @ Ca
        E, _ = fr.transport(np.array([ta]), np.array([tb]), lam)
        assert np.abs(E[0] - ref).max() < 1e-8, (ta, tb, E[0], ref)
        if lam == 0:  # the noise of a point is only transported: a rotation
            assert np.allclose(E[0] @ E[0].T, np.eye(2), atol=1e-10)


@pytest.mark.parametrize("name", ["cddim", "cdeis1", "cdeis2", "cdeis3", "cddim-sde", "csps"])
def test_convergence_orders_on_gaussian_data(name):
    """Law error at t = 0.1 from the exact law at T, against the exact marginal: the fitted
    slope over 32, 64, 128 quadratic steps is the declared order (within 0.3)."""
    slope, errs, p = law_error_slope(name)
    declared = dm.sampler(name).weak_order_for(dm.process("psld-cifar10"))
    assert declared == p.weak_order
    assert abs(slope - declared) < 0.3, (errs, slope, declared)


def test_stochastic_step_by_monte_carlo():
    """The compiled stochastic step draws the noise its exact law says (mean and variance of
    both blocks within 4 standard errors), for data at a point."""
    proc = dm.process("psld-cifar10")
    x0, n = 0.7, 40_000
    p = dm.plan("cddim-sde", proc, point_score(proc, x0), steps=4, grid="uniform", denoise=False)
    a, S = proc.data_kernel(proc.T)
    gen = torch.Generator().manual_seed(1)
    z = torch.randn(n, 2, generator=gen, dtype=torch.float64) @ torch.tensor(
        np.linalg.cholesky(S)
    ).T + torch.tensor(a * x0)
    res = p.run({"x": z[:, :1].clone(), "m": z[:, 1:].clone()}, seed=3)
    a1, S1 = proc.data_kernel(p.grid[-1])
    for i, blk in enumerate(("x", "m")):
        v = res.final[blk][:, 0]
        se_mean = np.sqrt(S1[i, i] / n)
        assert abs(float(v.mean()) - a1[i] * x0) < 4 * se_mean
        se_var = S1[i, i] * np.sqrt(2 / (n - 1))
        assert abs(float(v.var()) - S1[i, i]) < 4 * se_var


def test_options_are_validated():
    proc = dm.process("psld-cifar10")
    with pytest.raises(ValueError, match="conjugate multistep is deterministic"):
        dm.conjugate(2, lam=1.0)
    with pytest.raises(ValueError, match="unknown variable 'rho'"):
        dm.conjugate(1, variable="rho")
    with pytest.raises(ValueError, match="order 4 is not supported"):
        ConjugateDEIS(proc, 4)
    score = dm.GaussianData.random(2).score(proc)
    p = dm.plan("cdeis3", proc, score, steps=3, check_stability=False)
    y0 = proc.prior(4, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    with pytest.raises(ValueError, match="needs at least 4 steps"):
        p.run(y0)


@pytest.mark.parametrize("proc_name", ["psld-cifar10", "cld"])
@pytest.mark.parametrize("order, lam", [(0, 0.0), (0, 0.5), (3, 0.0)])
def test_reference_gaussian_frame_is_exact_for_data_of_that_variance(proc_name, order, lam):
    """With ``data_variance = v`` the step is exact for Gaussian data N(mu, v I): the output law
    (from the exact marginal at T, no denoising step) is the exact marginal at eps on a coarse
    grid, to round-off; the point-data frame (v = 0) is not."""
    proc = dm.process(proc_name)
    v = 0.3
    data = dm.GaussianData(torch.tensor([0.4, -0.2, 0.1]), torch.tensor(v))
    m0, c0 = data.law(proc, proc.T)
    m_eps, c_eps = data.law(proc, proc.eps)
    for dv, exact in [(v, True), (0.0, False)]:
        s = dm.conjugate(order, lam=lam, data_variance=dv)
        p = dm.plan(s, proc, data.score(proc), steps=6, grid="cubic", denoise=False,
                    check_stability=False)  # fmt: skip
        law = p.exact_law(m0, c0)
        err = max(float((law.mean - m_eps).abs().max()), float((law.cov - c_eps).abs().max()))
        if exact:
            assert err < 1e-8 * float(c_eps.abs().max()), err
        else:
            assert err > 1e-3 * float(c_eps.abs().max()), err


def test_reference_frame_rejects_bad_variances():
    with pytest.raises(ValueError, match="data_variance"):
        dm.conjugate(0, data_variance=-1.0)
    with pytest.raises(ValueError, match="data_variance"):
        ConjugateDEIS(dm.process("cld"), data_variance=float("nan"))
    cld = dm.process("cld")
    with pytest.raises(ValueError, match="another data_variance"):
        ConjugateDEIS(cld, data_variance=0.5, frame=point_flow_frame(cld))
