"""torchdiffeq interop: a deterministic flow solved by an ODE method inside a word (flow
maps), its declared and composed orders against matrix-exponential references, and NFE."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import sympy
import torch

import splitsde as sd
from splitsde.interop.torchdiffeq import ODE_METHODS, ODESolver

OMEGA, GAMMA, KT = 1.5, 0.8, 1.0


def _oscillator(method: str = "rk4", **kw):
    """X: dq = p dt, dp = F(q) dt with F(q) = -omega^2 q (a field), solved by torchdiffeq;
    O: dp = -gamma p dt + sqrt(2 gamma kT) dW, solved exactly."""
    q, p = sd.blocks("q p")
    w, g, kT = sd.parameters("omega gamma kT", positive=True)
    F = sd.Field("F", [q], definition=-(w**2) * q)
    flows = {
        "X": sd.Flow({q: p, p: F()}, solver=ODESolver(method, **kw)),
        "O": sd.Flow({p: -g * p}, {p: sympy.sqrt(2 * g * kT)}),
    }
    return sd.SDE([q, p], flows), {"omega": OMEGA, "gamma": GAMMA, "kT": KT}


A_FULL = np.array([[0.0, 1.0], [-(OMEGA**2), -GAMMA]])
A_X = np.array([[0.0, 1.0], [-(OMEGA**2), 0.0]])
GG = np.diag([0.0, 2 * GAMMA * KT])


def _step_map(integ: sd.Integrator, h: float) -> tuple[np.ndarray, np.ndarray]:
    """Probe the compiled step, affine in (z, xi): z' = Phi z + L xi (architecture rule 1:
    analysis by probing the compiled torch step)."""
    basis = {"q": torch.tensor([[1.0], [0.0]]), "p": torch.tensor([[0.0], [1.0]])}
    zeros = [torch.zeros(2, 1)] * len(integ.program.draws)
    out = integ.step(basis, 0.0, h, noise=zeros)
    phi = torch.cat([out["q"], out["p"]], dim=1).T.numpy()  # column j = image of e_j
    cols = []
    for i in range(len(integ.program.draws)):
        unit = [torch.zeros(1, 1) for _ in integ.program.draws]
        unit[i] = torch.ones(1, 1)
        o = integ.step({"q": torch.zeros(1, 1), "p": torch.zeros(1, 1)}, 0.0, h, noise=unit)
        cols.append([float(o["q"]), float(o["p"])])
    L = np.array(cols).T if cols else np.zeros((2, 0))
    return phi, L


def _moments_after(phi: np.ndarray, L: np.ndarray, n: int, m0: np.ndarray):
    """Mean and covariance of z_n from z_0 = m0 (no loop over steps: matrix power and the
    discrete Lyapunov identity sum_k Phi^k Q Phi^kT = S - Phi^n S Phi^nT, S = Phi S Phi^T + Q)."""
    pn = np.linalg.matrix_power(phi, n)
    S = scipy.linalg.solve_discrete_lyapunov(phi, L @ L.T)
    return pn @ m0, S - pn @ S @ pn.T


def _exact_moments(T: float, m0: np.ndarray):
    """Exact mean and covariance of the linear SDE: expm and the continuous Lyapunov equation."""
    e = scipy.linalg.expm(A_FULL * T)
    S = scipy.linalg.solve_continuous_lyapunov(A_FULL, -GG)
    return e @ m0, S - e @ S @ e.T


def _slope(hs, errs) -> float:
    return float(np.polyfit(np.log(hs), np.log(errs), 1)[0])


def test_rk4_flow_alone_has_order_four():
    """The deterministic flow X alone, rk4 over each step: error of the step map's n-th power
    against expm(A_X T) falls at the declared order 4 (deterministic numbers; at these steps,
    h omega <= 0.375, the local slopes are within 0.1 of 4)."""
    sde, params = _oscillator()
    assert sde.flows["X"].solver.weak_order == 4
    integ = sd.Integrator(sde, "X", params, allow_missing=True)
    T, hs = 2.0, [0.25, 0.125, 0.0625, 0.03125]
    errs = []
    for h in hs:
        phi, _ = _step_map(integ, h)
        n = round(T / h)
        errs.append(np.abs(np.linalg.matrix_power(phi, n) - scipy.linalg.expm(A_X * T)).max())
    assert abs(_slope(hs, errs) - 4) < 0.1, errs


@pytest.mark.parametrize(("word", "order"), [("XOX", 2), ("OXO", 2), ("XO", 1)])
def test_rk4_inside_a_word_converges_at_the_composed_order(word, order):
    """rk4 for X with the exact OU letter O: the symmetric words are weak order 2 (rk4's
    order 4 does not limit them), the Lie word order 1. The error of the scheme's exact mean and
    covariance at T = 2 (from the probed step map) against the exact moments (expm and the
    Lyapunov equation) falls at that order; tolerance 0.15 on the fitted slope (deterministic
    numbers; higher-order terms at these steps shift local slopes by < 0.1)."""
    sde, params = _oscillator()
    integ = sd.Integrator(sde, word, params)
    assert integ.weak_order == order
    T, m0 = 2.0, np.array([1.0, 0.5])
    mean, cov = _exact_moments(T, m0)
    hs, errs = [0.2, 0.1, 0.05, 0.025], []
    for h in hs:
        m, c = _moments_after(*_step_map(integ, h), round(T / h), m0)
        errs.append(np.abs(m - mean).max() + np.abs(c - cov).max())
    assert abs(_slope(hs, errs) - order) < 0.15, errs


def test_flow_map_field_evaluations_are_counted():
    """Every real field call inside the ODE solve goes through the integrator's counter:
    XOX with rk4 evaluates F four times per X slice, 8 per step, as the program declares."""
    sde, params = _oscillator()
    integ = sd.Integrator(sde, "XOX", params)
    assert integ.evaluations_per_step == 8
    y0 = {"q": torch.ones(3, 1), "p": torch.zeros(3, 1)}
    res = sd.integrate(integ, y0, h=0.1, steps=20, seed=0)
    assert res.nfe == 8 * 20 and res.nfe_by_field == {"F": 160} and res.nfe_per_step == 8
    # several internal steps per slice: the count depends on h, so the program says None
    # (dyadic times: torchdiffeq rounds (t1 - t0)/step_size up, so 0.05/0.025 may give 3)
    fine = sd.Integrator(_oscillator(options={"step_size": 2.0**-5})[0], "XOX", params)
    assert fine.evaluations_per_step is None
    res = sd.integrate(fine, y0, h=2.0**-3, steps=4, seed=0)
    assert res.nfe == 4 * 2 * 2 * 4  # steps x slices x internal steps (2^-4 / 2^-5) x stages


def test_each_field_of_the_drift_is_counted():
    """Two fields in the mapped drift: rk4 evaluates each four times per slice."""
    q, p = sd.blocks("q p")
    F = sd.Field("F", [q], definition=-q)
    G = sd.Field("G", [p], definition=p)
    sde = sd.SDE([q, p], {"X": sd.Flow({q: G(), p: F()}, solver=ODESolver("rk4"))})
    integ = sd.Integrator(sde, "X")
    assert integ.evaluations_per_step == 8
    res = sd.integrate(integ, {"q": torch.ones(2, 1), "p": torch.zeros(2, 1)}, h=0.1, steps=5)
    assert res.nfe_by_field == {"F": 20, "G": 20}


def test_flow_map_is_evaluated_afresh_under_every_reduction():
    """A flow map is a solver, not a reusable field: per_step reuse must not reuse it."""
    sde, params = _oscillator()
    exact = sd.Integrator(sde, "XOX", params)
    reduced = sd.Integrator(sde, sd.reduce("XOX", reuse="per_step"), params)
    y0 = {"q": torch.tensor([[1.0]]), "p": torch.tensor([[0.5]])}
    xi = [torch.tensor([[0.3]])]
    a, b = exact.step(y0, 0.0, 0.1, noise=xi), reduced.step(y0, 0.0, 0.1, noise=xi)
    assert torch.equal(a["q"], b["q"]) and torch.equal(a["p"], b["p"])
    assert reduced.evaluations_per_step == 8


def test_dopri5_with_tight_tolerances_matches_the_exact_flow():
    sde, params = _oscillator("dopri5", rtol=1e-10, atol=1e-12)
    solver = sde.flows["X"].solver
    assert solver.weak_order == ODE_METHODS["dopri5"].order == 5
    integ = sd.Integrator(sde, "X", params, allow_missing=True)
    assert integ.evaluations_per_step is None  # adaptive: measured, not declared
    phi, _ = _step_map(integ, 0.7)
    np.testing.assert_allclose(phi, scipy.linalg.expm(A_X * 0.7), atol=1e-9)
    res = sd.integrate(
        integ, {"q": torch.ones(2, 1), "p": torch.zeros(2, 1)}, h=0.7, steps=3, seed=0
    )
    assert res.nfe > 3 * 6  # at least one 6-stage step per slice, all counted


def test_time_dependent_drift_and_frozen_blocks():
    """dz = cos(t) y dt with y a block the flow does not change: z(t+h) = z + y (sin(t+h) -
    sin(t)); rk4 slices keep the slice clock and the frozen block."""
    z, y = sd.blocks("z y")
    sde = sd.SDE([z, y], {"X": sd.Flow({z: sympy.cos(sd.t) * y}, solver=ODESolver("rk4"))})
    integ = sd.Integrator(sde, "X", allow_missing=True)
    s0 = {"z": torch.tensor([[0.2]]), "y": torch.tensor([[1.5]])}
    out = integ.step(s0, 0.4, 0.05)
    want = 0.2 + 1.5 * (np.sin(0.45) - np.sin(0.4))
    assert abs(float(out["z"]) - want) < 1e-10 and float(out["y"]) == 1.5


def test_bad_input():
    with pytest.raises(ValueError, match="unknown ODE method 'rk5'"):
        ODESolver("rk5")
    with pytest.raises(ValueError, match="tolerances must be positive"):
        ODESolver("dopri5", rtol=0)
    q = sd.Block("q")
    with pytest.raises(ValueError, match="solves deterministic flows"):
        _ = sd.Flow({q: -q}, {q: 1}, solver=ODESolver()).solver
    system = sd.langevin.underdamped(sd.potentials.Harmonic(1.0))
    with pytest.raises(sd.WordError, match="numerical ODE method"):
        system.integrator("O{BAB}O", solvers={"A": ODESolver("rk4")})
