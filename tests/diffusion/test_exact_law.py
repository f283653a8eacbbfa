"""Exact laws of the samplers on Gaussian data (splitsde.analysis), against the exact marginals,
their declared orders, Monte Carlo runs of the torch integrators, and the lambda-family."""

import math

import numpy as np
import pytest
import torch

import splitsde as sd
import splitsde.diffusion as dm

analysis = pytest.importorskip("splitsde.analysis")
if not hasattr(analysis, "propagate"):  # pragma: no cover - before the analysis is merged
    pytest.skip("splitsde.analysis.propagate is not available", allow_module_level=True)

# the splitting samplers of this module (the exponential, Poisson-midpoint and PF-ODE samplers
# registered by later modules have their own tests and orders)
PSLD_SAMPLERS = [name for name, s in dm.SAMPLERS.items() if type(s) is dm.Sampler]
VP_SAMPLERS = ["em", "pf-euler", "sscs"]
CASES = [("psld-cifar10", s) for s in PSLD_SAMPLERS] + [("vp", s) for s in VP_SAMPLERS]


@pytest.fixture(scope="module")
def data():
    return dm.GaussianData.random(2, seed=0, condition=10.0)


@pytest.fixture(scope="module")
def processes():
    return {name: dm.process(name) for name in ("psld-cifar10", "vp")}


def _law_error(proc, data, sampler, steps, t1, lam=None):
    """Frobenius error of mean and covariance of z at diffusion time t1, started from the
    exact marginal at T, with ``steps`` uniform steps (no denoising)."""
    s = dm.sampler(sampler) if lam is None else dm.sampler(sampler, lam=lam)
    plan = dm.plan(
        s, proc, data.score(proc), grid=np.linspace(proc.T, t1, steps + 1), eps=t1, denoise=False
    )
    m0, c0 = data.law(proc, proc.T)
    m, c = dm.exact_law(plan, m0, c0)
    me, ce = data.law(proc, t1)
    return float((m - me).norm() + (c - ce).norm())


@pytest.mark.parametrize("proc_name, name", CASES)
def test_exact_law_converges_to_the_marginal_with_the_declared_order(
    proc_name, name, data, processes
):
    proc = processes[proc_name]
    order = dm.sampler(name).weak_order_for(proc)
    assert order == 1
    steps = np.array([160, 320, 640])
    errs = np.array([_law_error(proc, data, name, int(n), 0.05) for n in steps])
    slope = np.polyfit(np.log(1.0 / steps), np.log(errs), 1)[0]  # errors ~ h^slope
    assert abs(slope - order) < 0.15, (slope, errs)


@pytest.mark.parametrize("proc_name, name", CASES)
def test_output_law_with_denoising_approaches_the_data_law(proc_name, name, data, processes):
    proc = processes[proc_name]
    d = data.dim
    var = torch.tensor([v for v in proc.prior_variance() for _ in range(d)], dtype=torch.float64)
    kls = []
    for nfe in (25, 100, 400):
        # uniform grid: the first-order convergence the ratio below checks is that of a fixed
        # grid family (recommended grids are chosen per budget)
        plan = dm.plan(name, proc, data.score(proc), nfe=nfe, grid="uniform")
        m, c = dm.exact_law(plan, torch.zeros(len(var), dtype=torch.float64), torch.diag(var))
        kls.append(dm.gaussian_kl(m[:d], c[:d, :d], data.mean, data.cov))
    assert kls[0] > kls[1] > kls[2]
    assert kls[2] < 0.05
    assert kls[1] / kls[2] > 8  # KL is quadratic in a first-order error: ~16 per factor 4


# the Monte Carlo check: the PSLD samplers and the stochastic VP samplers (ddpm is the
# exponential-integrator ancestral sampler, eta = 1)
MC_CASES = [("psld-cifar10", s) for s in PSLD_SAMPLERS] + [
    ("vp", s) for s in ("em", "sscs", "ddpm")
]


@pytest.mark.parametrize("proc_name, name", MC_CASES)
def test_monte_carlo_matches_the_exact_law(proc_name, name, data, processes):
    """Sample means and variances of the torch integrator within 4 standard errors of the
    exact law of the same compiled steps."""
    proc = processes[proc_name]
    n = 20_000
    plan = dm.plan(name, proc, data.score(proc), nfe=13)
    m0, c0 = data.law(proc, proc.T)
    mean, cov = dm.exact_law(plan, m0, c0)
    y0 = data.sample_marginal(proc, proc.T, n, generator=torch.Generator().manual_seed(3))
    res = plan.run(y0, seed=4)
    flat = torch.cat([res.final[b] for b in proc.block_names], 1)
    var = torch.diagonal(cov)
    z_mean = (flat.mean(0) - mean) / torch.sqrt(var / n)
    z_var = (flat.var(0) - var) / (var * math.sqrt(2.0 / (n - 1)))
    assert z_mean.abs().max() < 4.0, z_mean
    assert z_var.abs().max() < 4.0, z_var


@pytest.mark.parametrize("lam", [0.0, 0.5, 2.0, {"x": 0.0}, {"m": 0.3}])
def test_lambda_family_preserves_the_marginals(lam, data, processes):
    """For every noise scale the exact law of EM converges at rate 1 to the forward marginal:
    the continuous family has the forward marginals."""
    proc = processes["psld-cifar10"]
    errs = np.array([_law_error(proc, data, "em", n, 0.3, lam=lam) for n in (100, 200, 400)])
    ratios = errs[:-1] / errs[1:]
    assert np.all(ratios > 1.7) and np.all(ratios < 2.4), ratios


def test_an_uncompensated_noise_scale_does_not_preserve_the_marginals(data, processes):
    """Negative control: halving the noise without compensating the drift converges to a
    different law (the error stalls), so the test above can fail."""
    proc = processes["psld-cifar10"]
    good, half = proc.reverse(1.0), proc.reverse(0.5)
    flow = sd.Flow(good.drift, half.noise)
    sde = sd.SDE(good.blocks, {"R": flow})
    errs = []
    for n in (100, 200, 400):
        integ = sd.Integrator(
            sde,
            "R",
            good.params_for(sde),
            {"s": data.score(proc)},
            solvers={"R": sd.solvers.EulerMaruyama()},
        )
        m0, c0 = data.law(proc, proc.T)
        m, c = analysis.propagate(
            integ, np.linspace(0.0, 0.7, n + 1), m0, c0, {"x": (2,), "m": (2,)}
        )
        me, ce = data.law(proc, 0.3)
        errs.append(float(np.linalg.norm(m - me.numpy()) + np.linalg.norm(c - ce.numpy())))
    assert errs[-1] > 0.5 * errs[0]


def test_compare_uses_the_exact_law_for_gaussian_data(processes):
    proc = processes["psld-cifar10"]
    comp = dm.compare(proc, "gaussian-3", ["em", "sps"], [20], progress=False)
    assert comp.metric == "kl"
    data = dm.target("gaussian-3")
    plan = dm.plan("sps", proc, data.score(proc), nfe=20)
    var = torch.tensor([1.0] * 3 + [0.25] * 3, dtype=torch.float64)
    m, c = dm.exact_law(plan, torch.zeros(6, dtype=torch.float64), torch.diag(var))
    row = next(r for r in comp.rows if r["sampler"] == "sps")
    assert row["kl"] == pytest.approx(dm.gaussian_kl(m[:3], c[:3, :3], data.mean, data.cov))
    assert row["w2"] == pytest.approx(dm.gaussian_w2(m[:3], c[:3, :3], data.mean, data.cov))
