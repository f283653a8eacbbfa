"""Conjugate splitting samplers (conj-op, conj-reduced-op).

References: the closed-form law N(a_t x0, S_t) of data at a point (the naive word must keep it
exactly at any step size); the exact marginal of Gaussian data for the convergence order; a
Monte Carlo run of the compiled samplers against their exact law; the matrix exponential of
the Ornstein-Uhlenbeck sub-step computed from the process's kernel by scipy; the committed
benchmark rows recomputed exactly.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import torch

import splitsde.diffusion as dm
from splitsde.diffusion.conjsplit import ConjugateOU, conjugate_split_sde
from splitsde.diffusion.metrics import exact_law
from tests.diffusion.law_helpers import law_error_slope

RESULTS = Path(__file__).resolve().parents[2] / "benchmarks/results/conjugate_splitting.json"


def point_score(process: dm.ForwardProcess, x0: float):
    """The exact score of data at the point ``x0`` (every data dimension)."""

    def score(x: torch.Tensor, m: torch.Tensor, tau: float):
        k = process.terms(process.T - tau)
        w = torch.stack([x - k.a[0] * x0, m - k.a[1] * x0], -1)
        s = -(w @ torch.as_tensor(k.S_inv, dtype=w.dtype).T)
        return s[..., 0], s[..., 1]

    return score


def test_split_adds_up_to_the_family_and_the_ou_step_is_the_matrix_exponential():
    """P is the lambda = 0 flow, O the rest (the SDE checks the sum); the O coefficients are
    C (expm(-h/2 C^-1 L^2 GG^T C^-T) - I) and C (I - E E^T)^{1/2} from scipy at the slice start."""
    proc = dm.process("psld-cifar10")
    sde = conjugate_split_sde(proc, 0.7)
    assert sde.letters == ("P", "O")
    assert not sde.flows["P"].noise and sde.flows["O"].noise
    ou = ConjugateOU(proc, 0.7)
    tau0, h = np.array([0.3, 0.95]), np.array([0.05, 0.04])
    got = ou._coefficients(tau0, h, [0, 1])
    GG = np.diag([float(g.xreplace(proc.params)) ** 2 for g in proc.diffusion])
    for k, (t0, s) in enumerate(zip(tau0, h)):
        _, S = proc.data_kernel(proc.T - t0)
        C = np.linalg.cholesky(S)
        Ci = np.linalg.inv(C)
        E = scipy.linalg.expm(-0.5 * s * 0.49 * Ci @ GG @ Ci.T)
        K = C @ (E - np.eye(2))
        N = C @ np.real(scipy.linalg.sqrtm(np.eye(2) - E @ E.T))
        for i in range(2):
            for c in range(2):
                assert got[("K", i, c)][k] == pytest.approx(K[i, c], rel=1e-9, abs=1e-13)
        Ng = np.array([[got[("N", i, c)][k] for c in range(2)] for i in range(2)])
        assert np.allclose(Ng @ Ng.T, N @ N.T, rtol=1e-9, atol=1e-13)


@pytest.mark.parametrize("proc_name", ["psld-cifar10", "cld"])
@pytest.mark.parametrize("lam", [1.0, 0.5, {"x": 0.0}])
def test_naive_word_is_exact_for_data_at_a_point(proc_name, lam):
    """From the exact law at T, five uniform steps of conj-op end exactly in N(a_t x0, S_t)."""
    proc = dm.process(proc_name)
    x0 = 0.7
    p = dm.plan(dm.sampler("conj-op", lam=lam), proc, point_score(proc, x0), steps=5,
                grid="uniform", denoise=False, check_stability=False)  # fmt: skip
    a, S = proc.data_kernel(proc.T)
    m, c = exact_law(p, torch.tensor(a * x0), torch.tensor(S))
    a1, S1 = proc.data_kernel(p.grid[-1])
    assert np.abs(m.numpy() - a1 * x0).max() < 1e-9
    assert np.abs(c.numpy() - S1).max() < 1e-8 * float(np.abs(S1).max())


def test_reduced_word_is_not_exact_for_data_at_a_point():
    """Reusing the stale noise prediction in P breaks point-data exactness (the check fails)."""
    proc = dm.process("psld-cifar10")
    p = dm.plan("conj-reduced-op", proc, point_score(proc, 0.7), steps=5, grid="uniform",
                denoise=False, check_stability=False)  # fmt: skip
    a, S = proc.data_kernel(proc.T)
    _, c = exact_law(p, torch.tensor(a * 0.7), torch.tensor(S))
    _, S1 = proc.data_kernel(p.grid[-1])
    assert np.abs(c.numpy() - S1).max() > 1e-3 * float(np.abs(S1).max())


def test_nfe_per_step():
    proc = dm.process("psld-cifar10")
    score = dm.GaussianData.random(2, seed=0).score(proc)
    naive = dm.plan("conj-op", proc, score, nfe=10, grid="uniform", check_stability=False)
    red = dm.plan("conj-reduced-op", proc, score, nfe=10, grid="uniform", check_stability=False)
    assert (naive.steps, naive.nfe) == (4, 9)
    assert (red.steps, red.nfe) == (9, 10)


@pytest.mark.parametrize("name", ["conj-op", "conj-reduced-op"])
def test_convergence_order_on_gaussian_data(name):
    """Law error at t = 0.1 from the exact law at T against the exact marginal: the fitted slope
    over 32, 64, 128 quadratic steps is the declared weak order (within 0.3)."""
    slope, errs, p = law_error_slope(name)
    declared = dm.sampler(name).weak_order_for(dm.process("psld-cifar10"))
    assert declared == p.weak_order == 1
    assert abs(slope - declared) < 0.3, (errs, slope)


@pytest.mark.parametrize("name", ["conj-op", "conj-reduced-op"])
def test_monte_carlo_matches_the_exact_law(name):
    """The compiled sampler's samples (4 * 10^4, fixed seed) have the mean and variance of its
    exact output law on 2-D Gaussian data, per coordinate within 4 standard errors."""
    proc = dm.process("psld-cifar10")
    tgt = dm.GaussianData.random(2, seed=3)
    p = dm.plan(name, proc, tgt.score(proc), steps=6, grid="quadratic", check_stability=False)
    m0, c0 = tgt.law(proc, proc.T)
    m, c = exact_law(p, m0, c0)
    n = 40_000
    gen = torch.Generator().manual_seed(5)
    z = m0 + torch.randn(n, 4, generator=gen, dtype=torch.float64) @ torch.linalg.cholesky(c0).T
    res = p.run({"x": z[:, :2].clone(), "m": z[:, 2:].clone()}, seed=7)
    out = torch.cat([res.final["x"], res.final["m"]], dim=1)
    for i in range(4):
        v = out[:, i]
        assert abs(float(v.mean()) - float(m[i])) < 4 * (float(c[i, i]) / n) ** 0.5
        se_var = float(c[i, i]) * np.sqrt(2 / (n - 1))
        assert abs(float(v.var()) - float(c[i, i])) < 4 * se_var


def test_stability_bound_and_plan_check():
    """On the stationary linearisation the naive word is stable at every step (bound None, as
    cddim-sde); the reduced word has a bound, and a uniform plan warns above it and not below."""
    proc = dm.process("psld-cifar10")
    assert dm.stability_bound("conj-op", proc).bound is None
    b = dm.stability_bound("conj-reduced-op", proc)
    assert b.bound is not None and 0 < b.bound < b.h_max
    score = dm.GaussianData.random(2, seed=0).score(proc)
    span = proc.T - proc.eps
    below = int(np.ceil(span / (0.9 * b.bound)))
    above = int(np.floor(span / (1.2 * b.bound)))
    with warnings.catch_warnings():
        warnings.simplefilter("error", dm.StabilityWarning)
        dm.plan("conj-reduced-op", proc, score, steps=below, grid="uniform")
    with pytest.warns(dm.StabilityWarning):
        dm.plan("conj-reduced-op", proc, score, steps=above, grid="uniform")


def test_bad_input():
    with pytest.raises(ValueError, match="needs noise"):
        dm.plan(dm.sampler("conj-op", lam=0.0), "psld-cifar10",
                dm.GaussianData.random(2).score(dm.process("psld-cifar10")), steps=4)  # fmt: skip
    with pytest.raises(ValueError, match="augmented processes"):
        dm.plan("conj-op", "vp", dm.GaussianData.random(2).score(dm.process("vp")), steps=4)


def test_committed_benchmark_row_is_the_exact_kl():
    """One committed row of benchmarks/results/conjugate_splitting.json recomputed exactly, and
    the recorded target verdict is the comparison of the recorded numbers."""
    data = json.loads(RESULTS.read_text())
    row = next(r for r in data["rows"] if r["sampler"] == "conj-op" and r["nfe_budget"] == 10
               and r["grid"] == "quadratic")  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dm.StabilityWarning)
        (r,) = dm.compare("psld-cifar10", dm.target(data["target"], seed=0), ["conj-op"], [10],
                          grid="quadratic", exact=True, progress=False).rows  # fmt: skip
    assert r["kl"] == pytest.approx(row["kl"], rel=1e-6)
    t = data["issue_target"]
    assert t["holds"] == (t["best_conjugate_splitting_kl_nfe10"] < t["em_kl_nfe50"])
