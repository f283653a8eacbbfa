"""Exponential-integrator samplers: DDIM, DEIS (tAB, rhoAB, log-rhoAB, rhoRK), iPNDM.

References: the closed-form DDIM update; diffusers' DDIMScheduler and DEISMultistepScheduler on
the same model, grid and inputs; a torchdiffeq dopri5 solve of the probability-flow ODE
(rtol 1e-10) for the convergence orders; the exact linear map of a run for the exact law.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, DEISMultistepScheduler

import splitsde as sd
import splitsde.diffusion as dm
from splitsde.analysis import propagate
from splitsde.diffusion.grids import _invert_noise_level
from splitsde.diffusion.pfode import reference
from splitsde.runtime.noise import NoiseSource
from splitsde.symbolic.expint import (
    ADAMS_BASHFORTH,
    ExponentialMultistep,
    ExponentialRungeKutta,
    GridTooShortError,
)

# diffusers' DEIS applies numpy's log to torch scalars (a NumPy 2 deprecation inside diffusers)
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------
def eps_model(x: torch.Tensor, rho: float) -> torch.Tensor:
    """A nonlinear noise prediction of (x, rho) shared by both sides of a peer comparison."""
    return torch.tanh(x) / (1.0 + rho) + 0.3 * x * rho / (1.0 + rho * rho) ** 0.5


def score_of(process: dm.ForwardProcess):
    """The score callable whose noise prediction is ``eps_model`` at the noise level."""

    def score(x: torch.Tensor, tau: float) -> torch.Tensor:
        t = process.T - tau
        rho = float(process.noise_level(t))
        sigma = float(np.sqrt(process.data_kernel(t)[1][0, 0]))
        return -eps_model(x, rho) / sigma

    return score


def times_of_rho(process: dm.ForwardProcess, rho: np.ndarray) -> np.ndarray:
    """Diffusion times whose noise level is ``rho`` (bisection, float64)."""
    return _invert_noise_level(process, np.asarray(rho, np.float64), 1e-7, process.T)


class SequenceNoise(NoiseSource):
    """Given normals, one tensor per draw in program order (over all steps)."""

    def __init__(self, values: list[torch.Tensor]) -> None:
        self.values = list(values)

    def bind(self, shapes, like):
        return [lambda: self.values.pop(0) for _ in shapes]


@pytest.fixture(scope="module")
def vp_wide() -> dm.ForwardProcess:
    """VP covering the noise levels of the discrete 1000-step DDPM schedule of diffusers."""
    return dm.vp(T=1.05, eps=1e-6)


def _run(name: str, process, score, ts, y0, **options):
    p = dm.plan(name, process, score, grid=ts, eps=float(ts[-1]), denoise=False)
    return p, sd.integrate(p.integrator, y0, grid=p.tau, **options)


# ---------------------------------------------------------------------------------------------
# DDIM
# ---------------------------------------------------------------------------------------------
def test_ddim_equals_closed_form_ddim():
    proc = dm.process("vp")
    mix = dm.GaussianMixture.ring(4)
    score = mix.score(proc)
    ts = dm.time_grid(proc, "quadratic", 12)
    y0 = {"x": torch.randn(64, 2, generator=torch.Generator().manual_seed(0))}
    _, res = _run("ddim", proc, score, ts, y0, seed=0)
    # closed form: x_s = alpha_s x0_hat + sigma_s eps, x0_hat = (x_t - sigma_t eps) / alpha_t
    a, S = proc.data_kernel(ts)
    alpha, sigma = a[:, 0], np.sqrt(S[:, 0, 0])
    x = y0["x"].clone()
    for k in range(len(ts) - 1):
        eps = -sigma[k] * score(x, proc.T - ts[k])
        x0 = (x - sigma[k] * eps) / alpha[k]
        x = alpha[k + 1] * x0 + sigma[k + 1] * eps
    assert torch.allclose(res.final["x"], x, rtol=0, atol=1e-12 * float(x.abs().max()))
    assert res.nfe == len(ts) - 1


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_ddim_matches_diffusers_ddim_scheduler(vp_wide, eta):
    n = 20  # divides 1000: diffusers steps from t to t - 1000 // n, the next listed timestep
    sch = DDIMScheduler(
        num_train_timesteps=1000,
        beta_start=1e-4,
        beta_end=0.02,
        beta_schedule="linear",
        clip_sample=False,
        set_alpha_to_one=False,
        timestep_spacing="trailing",
    )
    sch.set_timesteps(n)
    ac = sch.alphas_cumprod.double().numpy()
    steps = sch.timesteps.numpy()
    bars = np.concatenate([ac[steps], [ac[0]]])
    rho = np.sqrt((1 - bars) / bars)
    ts = times_of_rho(vp_wide, rho)
    gen = torch.Generator().manual_seed(3)
    x0 = torch.randn(16, 3, generator=gen)
    noises = [torch.randn(16, 3, generator=gen) for _ in range(n)]
    x = x0.clone()
    for k, step in enumerate(steps):
        out = sch.step(eps_model(x, rho[k]), int(step), x, eta=eta, variance_noise=noises[k])
        x = out.prev_sample
    name = "ddim" if eta == 0 else "ddpm"
    opts = {"seed": 0} if eta == 0 else {"noise": SequenceNoise(noises)}
    _, res = _run(name, vp_wide, score_of(vp_wide), ts, {"x": x0}, **opts)
    # diffusers computes its coefficients in float32: agreement to float32 round-off
    assert torch.allclose(res.final["x"], x, rtol=2e-5, atol=2e-5)


def test_stochastic_ddim_step_has_the_closed_form_law():
    """One DDIM(eta = 0.5) step on Gaussian data (a linear noise prediction, so the law is
    exact) against the update written out with the VP schedule in closed form:
    x_b = (alpha_b/alpha_a) x_a + alpha_b (sqrt(rho_b^2 - zeta^2) - rho_a) eps(x_a)
    + alpha_b zeta xi, zeta^2 = eta^2 (rho_a^2 - rho_b^2) rho_b^2 / rho_a^2, with
    eps(x) = sigma C^-1 (x - alpha mu), C = alpha^2 Sigma + sigma^2 I."""
    eta, t_a, t_b = 0.5, 0.6, 0.35
    s = dm.ddim(eta)
    assert s.name == "ddim-eta0.5" and s.weak_order_for(dm.process("vp")) == 1
    proc = dm.vp(beta_min=0.1, beta_max=20.0)
    data = dm.GaussianData.random(2, seed=0, condition=10.0)
    mu, Sigma = data.mean.numpy(), data.cov.numpy()

    def alpha(t):  # VP: alpha = exp(-int_0^t beta / 2), beta = 0.1 + 19.9 t
        return np.exp(-0.5 * (0.1 * t + 0.5 * 19.9 * t * t))

    al_a, al_b = alpha(t_a), alpha(t_b)
    sg_a = np.sqrt(1 - al_a**2)
    rho_a, rho_b = sg_a / al_a, np.sqrt(1 - al_b**2) / al_b
    zeta2 = eta**2 * (rho_a**2 - rho_b**2) * rho_b**2 / rho_a**2
    k = al_b * (np.sqrt(rho_b**2 - zeta2) - rho_a)
    C_inv = np.linalg.inv(al_a**2 * Sigma + sg_a**2 * np.eye(2))
    Phi = al_b / al_a * np.eye(2) + k * sg_a * C_inv
    c = -k * sg_a * C_inv @ (al_a * mu)
    Q = al_b**2 * zeta2 * np.eye(2)

    p = dm.plan(s, proc, data.score(proc), grid=[t_a, t_b], eps=t_b, denoise=False)
    amap = sd.analysis.affine_step(p.integrator, proc.T - t_a, t_a - t_b, {"x": (2,)})
    assert np.abs(amap.Phi - Phi).max() < 1e-10
    assert np.abs(amap.c - c).max() < 1e-10
    assert np.abs(amap.cov - Q).max() < 1e-10
    # the law of one step from N(m0, S0), propagated by the analysis
    m0, S0 = np.array([0.3, -1.2]), np.array([[1.5, 0.4], [0.4, 0.8]])
    mean, cov = propagate(p.integrator, p.tau, m0, S0, {"x": (2,)})
    assert np.abs(mean - (Phi @ m0 + c)).max() < 1e-10
    assert np.abs(cov - (Phi @ S0 @ Phi.T + Q)).max() < 1e-10
    # eta matters: DDIM (eta = 0) and DDPM (eta = 1) steps have other maps
    for other in (0.0, 1.0):
        q = dm.plan(dm.ddim(other), proc, data.score(proc), grid=[t_a, t_b], eps=t_b, denoise=False)
        _, other_cov = propagate(q.integrator, q.tau, m0, S0, {"x": (2,)})
        assert np.abs(other_cov - cov).max() > 1e-2


def _deis_diffusers(order: int, n: int, x0: torch.Tensor) -> tuple[np.ndarray, torch.Tensor]:
    sch = DEISMultistepScheduler(
        num_train_timesteps=1000,
        beta_start=1e-4,
        beta_end=0.02,
        beta_schedule="linear",
        solver_order=order,
        lower_order_final=False,
    )
    sch.set_timesteps(n)
    rho = sch.sigmas.double().numpy()
    x = x0.clone()
    for k, step in enumerate(sch.timesteps):
        x = sch.step(eps_model(x, rho[k]), step, x).prev_sample
    return rho, x


@pytest.mark.parametrize(
    ("ours", "solver_order"), [("ddim", 1), ("deis-logrho1", 2), ("deis-logrho2", 3)]
)
def test_log_rho_deis_matches_diffusers_deis(vp_wide, ours, solver_order):
    """diffusers' solver_order counts past values: ours of polynomial degree r is r + 1."""
    x0 = torch.randn(16, 3, generator=torch.Generator().manual_seed(4))
    rho, x = _deis_diffusers(solver_order, 15, x0)
    ts = times_of_rho(vp_wide, rho)
    _, res = _run(ours, vp_wide, score_of(vp_wide), ts, {"x": x0}, seed=0)
    assert torch.allclose(res.final["x"], x, rtol=2e-5, atol=2e-5)
    if solver_order > 1:  # the match is not an accident of low order
        _, lower = _run("ddim", vp_wide, score_of(vp_wide), ts, {"x": x0}, seed=0)
        assert (lower.final["x"] - x).abs().max() > 1e-3


# ---------------------------------------------------------------------------------------------
# orders against a tight probability-flow reference
# ---------------------------------------------------------------------------------------------
T_END = 0.1
STEPS = [48, 64, 96, 128, 192]


@pytest.fixture(scope="module")
def pf_problem():
    proc = dm.process("vp")
    data = dm.GaussianData.random(2, seed=0, condition=10)
    score = data.score(proc)
    y0 = {"x": torch.randn(8, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)}
    ref = reference(proc, score, y0, T_END, rtol=1e-10, atol=1e-10)["x"]
    return proc, score, y0, ref


def _slope(
    name: str, problem, grid: str = "logsnr", steps: list[int] = STEPS
) -> tuple[float, list[float]]:
    proc, score, y0, ref = problem
    errs = []
    for n in steps:
        ts = dm.time_grid(proc, grid, n, T_END)
        _, res = _run(name, proc, score, ts, y0, seed=0)
        errs.append(float((res.final["x"] - ref).abs().max()))
    assert min(errs) > 1e-8  # well above the reference error (< 1e-9, checked below)
    return -float(np.polyfit(np.log(steps), np.log(errs), 1)[0]), errs


def test_reference_matches_the_closed_form_flow(pf_problem):
    """For Gaussian data the probability-flow map is linear in closed form (eigenbasis)."""
    proc, _, y0, ref = pf_problem
    data = dm.GaussianData.random(2, seed=0, condition=10)
    mean, cov = data.mean.numpy(), data.cov.numpy()
    a, S = proc.data_kernel(np.array([proc.T, T_END]))
    (aT, a1), (sT, s1) = a[:, 0], S[:, 0, 0]
    w, V = np.linalg.eigh(cov)
    scale = np.sqrt((a1**2 * w + s1) / (aT**2 * w + sT))
    x = y0["x"].numpy()
    exact = a1 * mean + ((x - aT * mean) @ V) * scale @ V.T
    assert np.abs(ref.numpy() - exact).max() < 1e-9


@pytest.mark.parametrize(
    ("name", "order"),
    [
        ("ddim", 1),
        ("deis-tab1", 2),
        ("deis-tab2", 3),
        ("deis-tab3", 4),
        ("deis-rhoab1", 2),
        ("deis-rhoab2", 3),
        ("deis-rhoab3", 4),
    ],
)
def test_deis_multistep_orders(pf_problem, name, order):
    assert dm.sampler(name).weak_order_for(pf_problem[0]) == order
    slope, errs = _slope(name, pf_problem)
    assert abs(slope - order) <= 0.3, (slope, errs)


@pytest.mark.parametrize(
    ("name", "order"),
    [("rhork-euler", 1), ("rhork-heun", 2), ("rhork-kutta3", 3), ("rhork-rk4", 4)],
)
def test_rho_runge_kutta_orders(pf_problem, name, order):
    assert dm.sampler(name).weak_order_for(pf_problem[0]) == order
    slope, errs = _slope(name, pf_problem, steps=[24, 32, 48, 64, 96])
    assert abs(slope - order) <= 0.3, (slope, errs)


def test_rho_runge_kutta_nfe_per_step(pf_problem):
    proc, score, y0, _ = pf_problem
    ts = dm.time_grid(proc, "logsnr", 6, T_END)
    for stages, tableau in enumerate(("euler", "heun", "kutta3", "rk4"), start=1):
        name = f"rhork-{tableau}"
        _, res = _run(name, proc, score, ts, y0, seed=0)
        assert res.nfe == 6 * stages


def test_rho_euler_is_ddim(pf_problem):
    proc, score, y0, _ = pf_problem
    ts = dm.time_grid(proc, "quadratic", 9, T_END)
    _, a = _run("rhork-euler", proc, score, ts, y0, seed=0)
    _, b = _run("ddim", proc, score, ts, y0, seed=0)
    assert torch.allclose(a.final["x"], b.final["x"], rtol=1e-13, atol=1e-13)


# ---------------------------------------------------------------------------------------------
# iPNDM
# ---------------------------------------------------------------------------------------------
def test_ipndm_weights_and_warm_start(pf_problem):
    """Coefficients: step n uses the Adams-Bashforth weights of min(n, 3) + 1 values times
    the DDIM coefficient of that step."""
    proc, score, _, _ = pf_problem
    ts = dm.time_grid(proc, "logsnr", 7, T_END)
    p = dm.plan("ipndm", proc, score, grid=ts, eps=T_END, denoise=False)
    table = p.integrator.coefficient_table
    vals = dict(zip(table.symbols, table.evaluate(p.tau[:-1], np.diff(p.tau))))
    coef = {str(c): v for c, v in vals.items() if "C0" in str(c)}
    a, S = proc.data_kernel(ts)
    alpha, rho = a[:, 0], np.sqrt(S[:, 0, 0]) / a[:, 0]
    ddim = alpha[1:] * (rho[1:] - rho[:-1])
    for n in range(7):
        q = min(n, 3)
        for j in range(4):
            want = ddim[n] * float(ADAMS_BASHFORTH[q][j]) if j <= q else 0.0
            got = coef[f"c0_C0{j}_x"][n]
            assert got == pytest.approx(want, rel=1e-13, abs=1e-15)


def test_ipndm_equals_rho_adams_bashforth_on_equal_rho_steps():
    """With equal steps in rho the Lagrange weights in rho are the Adams-Bashforth weights:
    iPNDM and rhoAB3 (and their warm starts) agree to round-off."""
    proc = dm.vp(T=0.5)
    data = dm.GaussianData.random(2, seed=0, condition=10)
    score = data.score(proc)
    rho = np.linspace(proc.noise_level(proc.T), proc.noise_level(T_END), 21)
    ts = np.concatenate([[proc.T], times_of_rho(proc, rho[1:-1]), [T_END]])
    y0 = {"x": torch.randn(8, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)}
    _, a = _run("ipndm", proc, score, ts, y0, seed=0)
    _, b = _run("deis-rhoab3", proc, score, ts, y0, seed=0)
    _, c = _run("deis-rhoab2", proc, score, ts, y0, seed=0)
    assert torch.allclose(a.final["x"], b.final["x"], rtol=1e-11, atol=1e-12)
    assert (a.final["x"] - c.final["x"]).abs().max() > 1e-6


def test_ipndm_order(pf_problem):
    assert dm.sampler("ipndm").weak_order_for(pf_problem[0]) == 2
    slope, errs = _slope("ipndm", pf_problem)
    assert abs(slope - 2) <= 0.3, (slope, errs)


# ---------------------------------------------------------------------------------------------
# the program, the exact law, bad input
# ---------------------------------------------------------------------------------------------
def test_multistep_program_carries_history_and_costs_one_evaluation():
    proc = dm.process("vp")
    integ = dm.sampler("deis-tab3").integrator(proc, lambda x, tau: -x)
    prog = integ.program
    assert prog.evaluations_per_step() == 1
    assert [h.depth for h in prog.history] == [3]
    assert "1 step(s) ago" in prog.listing()


def test_exact_law_of_a_multistep_run_equals_its_linear_map():
    proc = dm.process("vp")
    data = dm.GaussianData.random(3, seed=2)
    p = dm.plan("deis-tab3", proc, data.score(proc), steps=9, grid="quadratic", denoise=False)
    mean, cov = propagate(p.integrator, p.tau, np.zeros(3), np.eye(3), {"x": (3,)})
    basis = torch.cat([torch.zeros(1, 3), torch.eye(3)])
    out = sd.integrate(p.integrator, {"x": basis}, grid=p.tau, seed=0).final["x"].numpy()
    A = (out[1:] - out[0]).T
    assert np.abs(mean - out[0]).max() < 1e-13
    assert np.abs(cov - A @ A.T).max() < 1e-12


def test_stochastic_exponential_euler_solves_linear_part_and_noise_exactly():
    """The stochastic exponential Euler step (ei-sde, lambda = 1) has the exact linear part
    alpha_b/alpha_a and the exact noise variance alpha_b^2 (rho_a^2 - rho_b^2) of the flow."""
    proc = dm.process("vp")
    integ = dm.sampler("ei-sde").integrator(proc, lambda x, tau: torch.zeros_like(x))
    amap = sd.analysis.affine_step(integ, 0.2, 0.1)
    # linear part alpha(t_a)/alpha(t_b) and noise variance alpha_b^2 (rho_a^2 - rho_b^2) at
    # lambda = 1 (from d y = 2 eps d rho + dW_{rho^2}, y = x / alpha)
    a, S = proc.data_kernel(np.array([0.8, 0.7]))
    alpha, rho = a[:, 0], np.sqrt(S[:, 0, 0]) / a[:, 0]
    assert amap.Phi[0, 0] == pytest.approx(alpha[1] / alpha[0], rel=1e-12)
    assert amap.cov[0, 0] == pytest.approx(alpha[1] ** 2 * (rho[0] ** 2 - rho[1] ** 2), rel=1e-9)


def test_bad_input():
    with pytest.raises(ValueError, match="order 4 is not supported"):
        ExponentialMultistep(4)
    with pytest.raises(ValueError, match="order 4 is not supported"):
        dm.deis(4)
    with pytest.raises(ValueError, match="needs a clock"):
        ExponentialMultistep(2, "log-rho")
    with pytest.raises(ValueError, match="unknown tableau"):
        dm.rhork("rk5")
    with pytest.raises(ValueError, match="needs an exponential clock"):
        ExponentialRungeKutta("heun")
    proc = dm.process("vp")
    score = lambda x, tau: -x  # noqa: E731
    p = dm.plan("deis-tab3", proc, score, steps=3, denoise=False)
    with pytest.raises(GridTooShortError, match="at least 4 steps"):
        p.run({"x": torch.zeros(2, 2)})
    with pytest.raises(ValueError, match="one-block process"):
        dm.plan("deis-rhoab2", "psld-cifar10", score, steps=10)
    # a clock that does not belong to the flow is refused
    wrong = dm.DiffusionClock(dm.vp(beta_max=10.0), 0.0)
    integ = sd.Integrator(
        dm.epsilon_sde(proc, 0.0),
        "R",
        {**proc.values, "T": proc.T},
        {"e": lambda x, tau: x},
        solvers={"R": ExponentialMultistep(1, "rho", wrong)},
    )
    with pytest.raises(ValueError, match="not the exponential clock"):
        sd.integrate(integ, {"x": torch.zeros(2, 1)}, grid=np.linspace(0, 0.9, 5), seed=0)


def test_tab_deis_runs_on_psld():
    """tAB needs no scalar clock: on PSLD it integrates the matrix propagator by quadrature."""
    proc = dm.process("psld-cifar10")
    data = dm.GaussianData.random(2, seed=0)
    comp = dm.compare(proc, data, ["deis-tab1"], [25, 50], progress=False)
    kl = {r["nfe_budget"]: r["kl"] for r in comp.rows}
    assert np.isfinite(kl[50]) and kl[50] < kl[25] / 4  # KL quadratic in a 2nd-order error


def test_exponential_demo_quick(tmp_path, capsys):
    from splitsde.apps.demo import SECTIONS

    out = SECTIONS["diffusion"](tmp_path, quick=True)
    text = capsys.readouterr().out
    assert "deis-tab3" in text and "ddim" in text
    rows = {(r["sampler"], r["nfe_budget"]) for r in out["exponential"]["rows"]}
    assert rows == {(s, n) for s in ("em", "ddim", "deis-tab3") for n in (5, 10)}
    assert (tmp_path / "diffusion_exponential.png").stat().st_size > 0


def test_compare_cli_with_exponential_and_randomized_samplers(capsys):
    import json

    from splitsde.apps.cli import main

    argv = [
        "compare",
        "--process",
        "vp",
        "--target",
        "gaussian-3",
        "--grid",
        "quadratic",
        "--samplers",
        "ddim,deis-tab3,ipndm,pmm1-k10,pf-rk4",
        "--nfe",
        "3,21",
        "--json",
    ]
    assert main(argv) == 0
    rows = {(r["sampler"], r["nfe_budget"]): r for r in json.loads(capsys.readouterr().out)["rows"]}
    assert rows[("deis-tab3", 21)]["kl"] < rows[("ddim", 21)]["kl"]
    assert rows[("deis-tab3", 3)]["error_short"] == "budget<1 step"  # 2 steps < order + 1
    assert rows[("pmm1-k10", 21)]["law"] == "moments"
    assert rows[("pmm1-k10", 21)]["nfe"] == pytest.approx(1 + 1.9 * 10)  # 2 - 1/K per step
    assert rows[("pf-rk4", 21)]["nfe"] == 21 and rows[("pf-rk4", 21)]["steps"] == 5
    assert main(["compare", "--process", "psld-cifar10", "--samplers", "ddim", "--nfe", "5"]) == 2
    assert "one-block process" in capsys.readouterr().err


@pytest.mark.parametrize("proc_name", ["vp", "psld-cifar10"])
def test_epsilon_flow_is_the_score_flow(proc_name):
    """The epsilon-parametrised family has the drift and noise of the score-parametrised one
    (one Euler-Maruyama step of each with the same noise)."""
    proc = dm.process(proc_name)
    mix = dm.GaussianMixture.random(3, 2, seed=1)
    score = mix.score(proc)
    em = {"R": sd.solvers.EulerMaruyama()}
    lam = 0.7
    a = sd.Integrator(
        dm.epsilon_sde(proc, lam),
        "R",
        {**proc.values, "T": proc.T},
        {"e": dm.EpsilonField(proc, score)},
        solvers=em,
    )
    rev = proc.reverse(lam)
    b = sd.Integrator(
        rev.sde("full"), "R", rev.params_for(rev.sde("full")), {"s": score}, solvers=em
    )
    gen = torch.Generator().manual_seed(0)
    y = {n: torch.randn(16, 2, generator=gen) for n in proc.block_names}
    xi = [torch.randn(16, 2, generator=gen) for _ in proc.block_names]
    out_a = a.step(y, 0.35, 0.01, noise=xi)
    out_b = b.step(y, 0.35, 0.01, noise=xi)
    for n in proc.block_names:
        assert torch.allclose(out_a[n], out_b[n], rtol=1e-12, atol=1e-12)


def test_epsilon_field_reads_an_eps_network_directly():
    proc = dm.process("vp")

    class Net(torch.nn.Module):
        def forward(self, x, t):
            return torch.tanh(x) * (1 + t[:, None])

    model = dm.ScoreModel(Net().double(), proc, "eps")
    direct = dm.EpsilonField(proc, model)
    via_score = dm.EpsilonField(proc, lambda x, tau: model(x, tau))
    assert direct.direct and not via_score.direct
    x = torch.randn(8, 3, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(direct(x, 0.4), via_score(x, 0.4), rtol=1e-12, atol=1e-12)
    assert torch.allclose(direct(x, 0.4), torch.tanh(x) * 1.6, rtol=1e-12)


@pytest.mark.parametrize("name", ["ddpm", "ei-sde", "pmm2-k4"])
def test_stochastic_samplers_converge_in_law_with_weak_order_one(name):
    """The law at t = 0.05 from the exact marginal at T (exact analysis; exact mean and
    covariance for the randomized Poisson midpoint method) against the exact marginal."""
    proc = dm.process("vp")
    data = dm.GaussianData.random(2, seed=0, condition=10.0)
    s = dm.poisson_midpoint(4, 2) if name == "pmm2-k4" else dm.sampler(name)
    assert s.weak_order_for(proc) == 1
    errs = []
    steps = [80, 160, 320] if name.startswith("pmm") else [160, 320, 640]
    for n in steps:
        p = dm.plan(
            s,
            proc,
            data.score(proc),
            grid=np.linspace(proc.T, 0.05, n + 1),
            eps=0.05,
            denoise=False,
        )
        m0, c0 = data.law(proc, proc.T)
        if name.startswith("pmm"):
            from splitsde.analysis import propagate_moments

            m, c = (
                torch.as_tensor(v)
                for v in propagate_moments(p.integrator, p.tau, m0.numpy(), c0.numpy(), {"x": (2,)})
            )
        else:
            m, c = dm.exact_law(p, m0, c0)
        me, ce = data.law(proc, 0.05)
        errs.append(float((m - me).norm() + (c - ce).norm()))
    slope = -np.polyfit(np.log(steps), np.log(errs), 1)[0]
    assert abs(slope - 1) < 0.15, (slope, errs)


def test_plan_and_sample_run_the_probability_flow_samplers():
    """dm.plan and dm.sample accept the torchdiffeq samplers like any other: the same plan as
    the sampler's own, the same samples for the same seed, and integrator options refused."""
    pytest.importorskip("torchdiffeq")
    proc = dm.process("vp")
    score = dm.GaussianMixture.ring(8).score(proc)
    own = dm.sampler("pf-rk4").plan(proc, score, nfe=21)
    via = dm.plan("pf-rk4", proc, score, nfe=21)
    assert type(via) is type(own) and np.array_equal(via.grid, own.grid) and via.nfe == 21
    y0 = proc.prior(64, 2, generator=torch.Generator().manual_seed(3))
    res = dm.sample("pf-rk4", proc, score, y0=y0, nfe=21, seed=3)
    assert res.nfe == 21 and torch.equal(res.x, own.run(y0, seed=3).x)
    drawn = dm.sample("pf-rk4", proc, score, 64, shape=2, nfe=21, seed=3)
    assert drawn.x.shape == (64, 2) and drawn.nfe == 21
    with pytest.raises(TypeError, match="no integrator options"):
        dm.plan("pf-rk4", proc, score, nfe=21, reuse="none")
