"""Derived solvers against independent references (closed forms, matrix exponentials,
numerically integrated covariances, fine-step ODE solutions)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.integrate
import scipy.linalg
import sympy as sp
import torch

import splitsde as sd
from splitsde.symbolic.solvers import Auto, Custom, EulerMaruyama, Exact, ExponentialEuler


def probe(integ: sd.Integrator, t0: float, h: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(Phi, c, Q) of one step of a linear system with scalar blocks, by probing the step."""
    names = integ.block_names
    d = len(names)
    draws = integ.program.draws
    k = len(draws)
    batch = d + 1 + k
    state = {
        n: torch.tensor([[1.0 if i == j else 0.0] for i in range(batch)], dtype=torch.float64)
        for j, n in enumerate(names)
    }
    noise = [
        torch.tensor([[1.0 if i == d + 1 + j else 0.0] for i in range(batch)], dtype=torch.float64)
        for j in range(k)
    ]
    out = integ.step(state, t0, h, noise=noise)
    y = np.stack([out[n][:, 0].numpy() for n in names], axis=1)  # (batch, d)
    c = y[d]
    phi = (y[:d] - c).T
    n = (y[d + 1 :] - c).T
    return phi, c, n @ n.T


def test_ou_step_matches_closed_form():
    p = sd.Block("p")
    g, kT, M = sd.parameters("gamma kT M", positive=True)
    flow = sd.Flow({p: -g * p}, {p: sp.sqrt(2 * g * kT * M)})
    assert flow.solver.exact and flow.solver.method == "linear"
    sde = sd.SDE([p], {"O": flow})
    for gamma, T, m, h in [(1.0, 1.0, 1.0, 0.5), (3.7, 0.4, 2.5, 0.03), (0.01, 2.0, 0.5, 7.0)]:
        integ = sd.Integrator(sde, "O", {"gamma": gamma, "kT": T, "M": m})
        phi, c, q = probe(integ, 0.0, h)
        assert phi[0, 0] == pytest.approx(math.exp(-gamma * h), rel=1e-14)
        assert c[0] == 0
        assert q[0, 0] == pytest.approx(T * m * -math.expm1(-2 * gamma * h), rel=1e-12)


def test_ou_with_zero_friction_is_finite_and_frozen():
    p = sd.Block("p")
    g, kT = sd.parameters("gamma kT", nonnegative=True)
    sde = sd.SDE([p], {"O": sd.Flow({p: -g * p}, {p: sp.sqrt(2 * g * kT)})})
    integ = sd.Integrator(sde, "O", {"gamma": 0.0, "kT": 1.0})
    phi, _, q = probe(integ, 0.0, 0.1)
    assert phi[0, 0] == 1.0 and q[0, 0] == 0.0


def coupled_sde():
    x, m = sd.blocks("x m")
    a, b, c, d, s1, s2 = sd.parameters("a b c d s1 s2")
    flow = sd.Flow(sd.linear_drift([[a, b], [c, d]], [x, m]), {x: s1, m: s2})
    return sd.SDE([x, m], {"L": flow}), flow


def test_two_by_two_linear_flow_matches_matrix_exp_and_integrated_covariance():
    sde, flow = coupled_sde()
    assert flow.solver.exact and flow.solver.method == "linear"
    A = np.array([[-0.3, 1.2], [-2.0, -0.7]])
    s = np.array([0.4, 1.3])
    params = dict(a=A[0, 0], b=A[0, 1], c=A[1, 0], d=A[1, 1], s1=s[0], s2=s[1])
    integ = sd.Integrator(sde, "L", params)
    h = 0.8
    phi, c, q = probe(integ, 0.0, h)
    ref_phi = torch.linalg.matrix_exp(torch.tensor(A * h)).numpy()
    np.testing.assert_allclose(phi, ref_phi, rtol=1e-12, atol=1e-14)
    GG = np.diag(s**2)

    def integrand(u: float) -> np.ndarray:
        e = scipy.linalg.expm(A * u)
        return (e @ GG @ e.T).ravel()

    ref_q = scipy.integrate.quad_vec(integrand, 0.0, h, epsabs=1e-14, epsrel=1e-13)[0].reshape(2, 2)
    np.testing.assert_allclose(q, ref_q, rtol=1e-10, atol=1e-14)
    np.testing.assert_array_equal(c, 0.0)


def test_coupled_flow_refuses_tensor_parameters():
    sde, _ = coupled_sde()
    params = dict(a=torch.tensor([[-1.0], [-2.0]]), b=1.0, c=-1.0, d=-1.0, s1=1.0, s2=1.0)
    integ = sd.Integrator(sde, "L", params)
    state = {"x": torch.zeros(3, 2, 1), "m": torch.zeros(3, 2, 1)}
    with pytest.raises(TypeError, match="scalar parameters"):
        sd.integrate(integ, state, h=0.1, steps=1, seed=0)


def vp_flow(closed_form: bool = True):
    x = sd.Block("x")
    b0, b1 = sd.parameters("beta0 beta1", positive=True)
    beta = b0 + (b1 - b0) * sd.t
    return x, sd.Flow({x: -beta * x / 2}, {x: sp.sqrt(beta)}, solver=Auto(closed_form=closed_form))


def test_time_dependent_clock_matches_fine_ode_reference():
    x, flow = vp_flow()
    assert flow.solver.exact and flow.solver.time == "closed form (sympy)"
    sde = sd.SDE([x], {"V": flow})
    b0, b1 = 0.1, 20.0
    integ = sd.Integrator(sde, "V", {"beta0": b0, "beta1": b1})
    t0, h = 0.13, 0.41
    phi, _, q = probe(integ, t0, h)

    def rhs(t, y):  # mean factor and variance: dm = -beta/2 m, dv = -beta v + beta
        beta = b0 + (b1 - b0) * t
        return [-beta * y[0] / 2, -beta * y[1] + beta]

    sol = scipy.integrate.solve_ivp(rhs, (t0, t0 + h), [1.0, 0.0], rtol=1e-12, atol=1e-14)
    assert phi[0, 0] == pytest.approx(sol.y[0, -1], rel=1e-9)
    assert q[0, 0] == pytest.approx(sol.y[1, -1], rel=1e-9)


def test_quadrature_matches_closed_form_where_both_exist():
    x, closed = vp_flow(True)
    _, quad = vp_flow(False)
    assert quad.solver.time.startswith("Gauss-Legendre")
    params = {"beta0": 0.1, "beta1": 20.0}
    maps = [
        probe(sd.Integrator(sd.SDE([x], {"V": f}), "V", params), 0.2, 0.3) for f in (closed, quad)
    ]
    np.testing.assert_allclose(maps[0][0], maps[1][0], rtol=1e-13)
    np.testing.assert_allclose(maps[0][2], maps[1][2], rtol=1e-12)
    # a noise without a closed-form integral also agrees with scipy quadrature
    y = sd.Block("y")
    flow = sd.Flow({y: -y}, {y: sp.exp(-(sd.t**2))})
    assert flow.solver.time.startswith("Gauss-Legendre")
    integ = sd.Integrator(sd.SDE([y], {"Y": flow}), "Y", {})
    _, _, q = probe(integ, 0.3, 0.5)
    ref = scipy.integrate.quad(lambda u: math.exp(-2 * (0.8 - u)) * math.exp(-2 * u * u), 0.3, 0.8)
    assert q[0, 0] == pytest.approx(ref[0], rel=1e-12)


def test_coupled_time_dependent_clock_matches_fine_ode_reference():
    x, m = sd.blocks("x m")
    b0, b1, G, nu, Mi = sd.parameters("beta0 beta1 Gamma nu Minv", positive=True)
    beta = b0 + (b1 - b0) * sd.t
    drift = sd.linear_drift([[-beta * G / 2, beta * Mi / 2], [-beta / 2, -beta * nu / 2]], [x, m])
    flow = sd.Flow(drift, {x: sp.sqrt(G * beta), m: sp.sqrt(nu * beta / Mi)})
    assert flow.solver.exact and "clock" in flow.solver.reason
    P = dict(beta0=0.1, beta1=20.0, Gamma=0.01, nu=4.01, Minv=4.0)
    integ = sd.Integrator(sd.SDE([x, m], {"F": flow}), "F", P)
    t0, h = 0.05, 0.3
    phi, _, q = probe(integ, t0, h)
    A0 = np.array([[-P["Gamma"] / 2, P["Minv"] / 2], [-0.5, -P["nu"] / 2]])
    GG0 = np.diag([P["Gamma"], P["nu"] / P["Minv"]])

    def rhs(t, y):
        beta_t = P["beta0"] + (P["beta1"] - P["beta0"]) * t
        Phi = y[:4].reshape(2, 2)
        S = y[4:].reshape(2, 2)
        A = beta_t * A0
        return np.concatenate([(A @ Phi).ravel(), (A @ S + S @ A.T + beta_t * GG0).ravel()])

    y0 = np.concatenate([np.eye(2).ravel(), np.zeros(4)])
    sol = scipy.integrate.solve_ivp(rhs, (t0, t0 + h), y0, rtol=1e-12, atol=1e-14, method="DOP853")
    np.testing.assert_allclose(phi, sol.y[:4, -1].reshape(2, 2), rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(q, sol.y[4:, -1].reshape(2, 2), rtol=1e-8, atol=1e-12)


def test_shear_is_exact_and_names_its_field():
    q, p = sd.blocks("q p")
    F = sd.Field("F", [q])
    s = sd.Flow({p: F()}).solver
    assert s.exact and s.method == "shear" and [f.name for f in s.fields] == ["F"]
    assert s.update.exprs[0] == p + sd.h * F()
    assert "does not depend on p" in s.reason
    assert "p <- " in s.formula() and r"\leftarrow" in s.latex()


def test_nonlinear_flow_is_euler_maruyama_first_order():
    q = sd.Block("q")
    kT = sd.Parameter("kT", positive=True)
    s = sd.Flow({q: -(q**3)}, {q: sp.sqrt(2 * kT)}).solver
    assert not s.exact and s.method == "Euler-Maruyama" and s.weak_order == 1
    assert "nonlinearly" in s.reason


def test_linear_part_plus_field_is_exponential_euler():
    p = sd.Block("p")
    g = sd.Parameter("gamma", positive=True)
    N = sd.Field("N", [p])
    s = sd.Flow({p: -g * p + N()}).solver
    assert s.method == "exponential Euler" and s.weak_order == 1 and not s.exact
    # on a linear field the frozen update is p e^{-gh} + h phi1(-gh) N(p): check numerically
    sde = sd.SDE([p], {"E": sd.Flow({p: -g * p + N()})})
    integ = sd.Integrator(sde, "E", {"gamma": 2.0}, {"N": lambda x: 0.5 * x})
    phi, _, _ = probe(integ, 0.0, 0.3)
    expected = math.exp(-0.6) + 0.5 * (1 - math.exp(-0.6)) / 2.0
    assert phi[0, 0] == pytest.approx(expected, rel=1e-13)


def test_time_dependent_field_in_shear_is_frozen_and_first_order():
    q, p = sd.blocks("q p")
    F = sd.Field("F", [q], time=True)
    s = sd.Flow({p: F()}).solver
    assert not s.exact and s.weak_order == 1 and "frozen" in s.reason


def test_user_solver_overrides_derived_one():
    q, p = sd.blocks("q p")
    F = sd.Field("F", [q])
    flow = sd.Flow({p: F()}, solver=EulerMaruyama())
    assert flow.solver.method == "Euler-Maruyama"
    custom = Custom({p: p + 2 * sd.h * F()}, weak_order=0, name="doubled kick")
    assert sd.Flow({p: F()}, solver=custom).solver.method == "doubled kick"
    with pytest.raises(ValueError, match="no exact solver"):
        sd.Flow({q: -(q**3)}, solver=Exact()).solver  # noqa: B018
    assert sd.Flow({p: -p + F()}, solver=ExponentialEuler()).solver.exact


def test_multiplicative_noise_falls_back_to_euler_maruyama():
    x = sd.Block("x")
    s = sd.Flow({x: -x}, {x: x}).solver
    assert s.method == "Euler-Maruyama" and "multiplicative" in s.reason
    assert s.strong_order == 0.5


def test_unknown_symbols_and_strings_are_refused():
    x = sd.Block("x")
    with pytest.raises(ValueError, match="unknown symbol"):
        sd.Flow({x: sp.Symbol("y") * x})
    with pytest.raises(TypeError, match="parse_expression"):
        sd.Flow({x: "x**2"})
    with pytest.raises(ValueError, match="undefined function"):
        sd.Flow({x: sp.Function("g")(x)})


def test_sde_checks_declared_totals():
    q, p = sd.blocks("q p")
    g = sd.Parameter("gamma", positive=True)
    flows = {"A": sd.Flow({q: p}), "O": sd.Flow({p: -g * p}, {p: sp.sqrt(2 * g)})}
    sd.SDE([q, p], flows, drift={q: p, p: -g * p}, noise={p: sp.sqrt(2 * g)})
    with pytest.raises(ValueError, match="add up"):
        sd.SDE([q, p], flows, drift={q: p, p: -2 * g * p})
    with pytest.raises(ValueError, match="letter"):
        sd.SDE([q, p], {"a": sd.Flow({q: p})})


def test_parse_expression_never_evaluates_code():
    x = sd.Block("x")
    assert sd.parse_expression("(x**2 - 1)**2", [x]) == (x**2 - 1) ** 2
    for bad in ["__import__('os')", "x.real", "lambda: 1", "x; y", "[x]", "open"]:
        with pytest.raises(sd.ExpressionError):
            sd.parse_expression(bad, [x])
