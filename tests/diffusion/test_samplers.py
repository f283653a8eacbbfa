"""Samplers: measured NFE, budgets, determinism of the probability-flow samplers, denoising."""

import numpy as np
import pytest
import torch

import splitsde as sd
import splitsde.diffusion as dm

PSLD = "psld-cifar10"

#: score evaluations per step as the naive words' derivation says (the score depends on both
#: blocks, so a value is reusable only before any block moved). On the abo-ou split O and A
#: need the score and B (the momentum kick by the data) does not: OBA, BAO and OBAB cost 2;
#: velocity Verlet on the probability-flow ODE needs it in all three sub-steps.
NAIVE_NFE = {"oba": 2, "bao": 2, "obab": 2, "vv": 3}
ONE_NFE = [
    "em",
    "pf-euler",
    "sscs",
    "reduced-oba",
    "reduced-bao",
    "reduced-obab",
    "reduced-vv",
    "sps",
]


@pytest.fixture(scope="module")
def ring():
    return dm.GaussianMixture.ring(4)


def _run(name, ring, steps, seed=0, proc=PSLD, n=16, **kw):
    p = dm.process(proc)
    return dm.sample(
        name, p, ring.score(p), n, shape=2, steps=steps, seed=seed, dtype=torch.float64, **kw
    )


@pytest.mark.parametrize("name", ONE_NFE + list(NAIVE_NFE))
def test_measured_nfe_per_step(name, ring):
    res = _run(name, ring, steps=6)
    per = NAIVE_NFE.get(name, 1)
    sampling, denoise = res.results
    assert sampling.nfe_per_step == per
    assert sampling.nfe == 6 * per == res.nfe_steps
    assert denoise.nfe == 1 == res.nfe_denoise
    assert res.nfe == 6 * per + 1
    assert dm.sampler(name).weak_order_for(dm.process(PSLD)) == 1


@pytest.mark.parametrize(
    "name, budget, steps, nfe",
    [("em", 50, 49, 50), ("oba", 50, 24, 49), ("vv", 50, 16, 49), ("reduced-obab", 10, 9, 10)],
)
def test_nfe_budget_counts_the_denoising_step(name, budget, steps, nfe, ring):
    p = dm.process(PSLD)
    res = dm.sample(name, p, ring.score(p), 8, shape=2, nfe=budget, dtype=torch.float64)
    assert (res.steps, res.nfe) == (steps, nfe)
    assert dm.plan(name, p, ring.score(p), nfe=budget).nfe == nfe


@pytest.mark.parametrize("name, budget", [("em", 1), ("oba", 2), ("obab", 2), ("vv", 3)])
def test_budget_too_small_is_a_clear_error(name, budget, ring):
    p = dm.process(PSLD)
    with pytest.raises(dm.BudgetError, match=f"budget of {budget} is too small for {name}"):
        dm.plan(name, p, ring.score(p), nfe=budget)


@pytest.mark.parametrize("name", ["pf-euler", "vv", "reduced-vv"])
def test_probability_flow_samplers_are_deterministic_given_the_prior(name, ring):
    p = dm.process(PSLD)
    gen = torch.Generator().manual_seed(11)
    y0 = p.prior(32, 2, generator=gen, dtype=torch.float64)
    pl = dm.plan(name, p, ring.score(p), steps=8)
    assert not pl.integrator.is_stochastic and not pl.integrator.program.draws
    a = pl.run(y0, seed=1)
    b = pl.run(y0, seed=2)
    assert torch.equal(a.final["x"], b.final["x"]) and torch.equal(a.final["m"], b.final["m"])


def test_stochastic_samplers_depend_on_the_seed_and_reproduce(ring):
    a = _run("sps", ring, steps=5, seed=1)
    b = _run("sps", ring, steps=5, seed=1)
    c = _run("sps", ring, steps=5, seed=2)
    assert torch.equal(a.x, b.x) and not torch.equal(a.x, c.x)


def test_denoising_step_is_one_euler_step_of_the_reverse_drift(ring):
    """x_out = x + eps * b(x, t = eps) with the lambda = 1 drift, computed by hand here."""
    p = dm.process(PSLD)
    v = p.values
    B, G, nu, Mi = v["beta"], v["Gamma"], v["nu"], v["Minv"]
    gen = torch.Generator().manual_seed(0)
    z = ring.sample_marginal(p, p.eps, 10, generator=gen)
    pl = dm.plan("em", p, ring.score(p), steps=3)
    res = sd.integrate(pl.denoiser, z, grid=pl.denoise_tau, seed=0)
    sx, sm = ring.score_at(p, p.eps, [z["x"], z["m"]])
    bx = B / 2 * (G * z["x"] - Mi * z["m"]) + G * B * sx
    bm = B / 2 * (z["x"] + nu * z["m"]) + nu * B / Mi * sm
    np.testing.assert_allclose(res.final["x"], z["x"] + p.eps * bx, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(res.final["m"], z["m"] + p.eps * bm, rtol=1e-12, atol=1e-12)
    assert res.nfe == 1


def test_time_labels_reach_the_score_in_diffusion_time(ring):
    p = dm.process(PSLD)
    seen = []
    exact = ring.score(p)

    def score(x, m, tau):
        seen.append(p.T - tau)
        return exact(x, m, tau)

    grid = np.array([1.0, 0.6, 0.2, 0.001])
    dm.sample("em", p, score, 4, shape=2, grid=grid, dtype=torch.float64)
    np.testing.assert_allclose(seen, [1.0, 0.6, 0.2, 0.001], rtol=0, atol=1e-14)
    seen.clear()
    dm.sample(
        dm.sampler("reduced-oba", time_label="end"),
        p,
        score,
        4,
        shape=2,
        grid=grid,
        dtype=torch.float64,
    )
    np.testing.assert_allclose(seen, [0.6, 0.2, 0.001, 0.001], rtol=0, atol=1e-14)


def test_reduced_variants_share_one_evaluation_per_step():
    p = dm.process(PSLD)
    for name in ("reduced-oba", "reduced-bao", "reduced-obab", "sps"):
        integ = dm.sampler(name).integrator(p, lambda x, m, t: (-x, -m))
        assert integ.program.evaluations_per_step() == 1
        assert integ.reduction.reuse == "per_step"
    start = dm.sampler("reduced-oba", eval_at="start").integrator(p, lambda x, m, t: (-x, -m))
    first_eval = next(i for i, s in enumerate(start.program.statements) if hasattr(s, "field"))
    assert first_eval == 0  # evaluated before the O sub-step


def test_sps_regulates_only_the_data_block_noise():
    p = dm.process(PSLD)
    s = dm.sampler("sps", lam_s=0.3)
    assert s.lam == {"x": 0.3}
    rev = s.reverse(p)
    assert rev.lam == {"x": 0.3, "m": 1.0}
    assert dm.sampler("sps").lam == {"x": 0.0}


def test_sampler_input_errors(ring):
    with pytest.raises(ValueError, match="unknown sampler"):
        dm.sampler("heun")
    with pytest.raises(ValueError, match="unknown sampler option"):
        dm.sampler("em", order=2)
    with pytest.raises(ValueError, match="apply to reduced samplers"):
        dm.sampler("oba", eval_at="start")
    with pytest.raises(ValueError, match="needs blocks x, m"):
        dm.sample("sps", "vp", ring.score(dm.vp()), 4, shape=2, nfe=10)
    with pytest.raises(ValueError, match="exactly one of nfe= and steps="):
        dm.plan("em", PSLD, ring.score(dm.process(PSLD)), nfe=10, steps=3)
    with pytest.raises(ValueError, match="n= and shape="):
        dm.sample("em", PSLD, ring.score(dm.process(PSLD)), nfe=10)
