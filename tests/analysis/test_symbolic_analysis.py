"""Symbolic execution of step programs: exact formulas, agreement with probing, known results."""

from __future__ import annotations

import math

import numpy as np
import pytest
import sympy
import torch
from hypothesis import given
from hypothesis import strategies as st
from strategies import words

import splitsde as sd
from splitsde import problems
from splitsde.analysis import (
    NotAffineError,
    SymbolicError,
    affine_step,
    finite_time_order,
    leading_term,
    stationary,
    stationary_exact,
    stationary_moments,
    symbolic_step,
    weak_error_ladder,
)
from splitsde.runtime.noise import NoiseSource


def _sym(prob, name):
    return {p.name: p for p in prob.sde.parameters}[name]


@given(
    data=st.data(),
    omega=st.floats(0.3, 2.0),
    gamma=st.floats(0.1, 3.0),
    kT=st.floats(0.2, 2.0),
    mass=st.floats(0.5, 2.0),
    h=st.floats(0.01, 0.6),
    reuse=st.sampled_from(["none", "exact", "per_step"]),
)
def test_symbolic_and_probed_maps_agree_harmonic(data, omega, gamma, kT, mass, h, reuse):
    word = data.draw(words(max_size=6, weighted=data.draw(st.booleans())))
    prob = problems.harmonic(omega, gamma, kT, mass)
    integ = prob.integrator(word, reduction=sd.Reduction(reuse))
    probed = affine_step(integ, 0.0, h)
    formula = symbolic_step(integ).numeric(prob.params, h)
    np.testing.assert_allclose(formula.Phi, probed.Phi, rtol=1e-11, atol=1e-13)
    np.testing.assert_allclose(formula.cov, probed.cov, rtol=1e-11, atol=1e-13)
    np.testing.assert_allclose(formula.c, probed.c, atol=1e-13)


@given(
    word=words(max_size=6, weighted=True),
    dim=st.integers(2, 4),
    seed=st.integers(0, 50),
    h=st.floats(0.01, 0.5),
)
def test_symbolic_and_probed_maps_agree_random_linear(word, dim, seed, h):
    prob = problems.random_linear(dim, seed)
    integ = prob.integrator(word)
    probed = affine_step(integ, 0.0, h)
    formula = symbolic_step(integ).numeric({}, h)
    np.testing.assert_allclose(formula.Phi, probed.Phi, rtol=1e-11, atol=1e-13)
    np.testing.assert_allclose(formula.cov, probed.cov, rtol=1e-11, atol=1e-13)


def test_baoab_position_variance_is_exact_for_every_h():
    prob = problems.harmonic()
    kT, omega, M = _sym(prob, "kT"), _sym(prob, "omega"), _sym(prob, "M")
    _, cov = stationary_moments(symbolic_step(prob.integrator("BAOAB")))
    assert sympy.simplify(cov[0, 0] - kT / omega**2) == 0
    assert cov[0, 1] == 0
    # and the momentum variance carries the known bias kT (M - omega^2 h^2 / 4)
    assert sympy.simplify(cov[1, 1] - kT * (M - omega**2 * sd.h**2 / 4)) == 0
    assert leading_term(cov[0, 0] - kT / omega**2).exact
    lt = leading_term(cov[1, 1] - M * kT)
    assert lt.order == 2 and sympy.simplify(lt.coefficient + kT * omega**2 / 4) == 0


def test_obabo_kinetic_exact_position_biased():
    prob = problems.harmonic()
    kT, omega, M = _sym(prob, "kT"), _sym(prob, "omega"), _sym(prob, "M")
    _, cov = stationary_moments(symbolic_step(prob.integrator("OBABO")))
    assert sympy.simplify(cov[1, 1] - M * kT) == 0
    lt = leading_term(cov[0, 0] - kT / omega**2)
    assert lt.order == 2 and sympy.simplify(lt.coefficient - kT / (4 * M)) == 0


def test_stationary_exact_of_the_sde():
    prob = problems.harmonic()
    mean, cov = stationary_exact(prob.sde)
    formulas = prob.stationary_formulas()
    assert mean == sympy.zeros(2, 1)
    assert sympy.simplify(cov[0, 0] - formulas["q2"]) == 0
    assert sympy.simplify(cov[1, 1] - formulas["p2"]) == 0 and cov[0, 1] == 0


def test_euler_maruyama_overdamped_bias_formula():
    prob = problems.overdamped_harmonic()
    kT, omega, h = _sym(prob, "kT"), _sym(prob, "omega"), sd.h
    _, cov = stationary_moments(symbolic_step(prob.integrator("BO")))
    # q' = (1 - h omega^2) q + sqrt(2 kT h) xi  =>  var = kT / (omega^2 (1 - h omega^2 / 2))
    assert sympy.simplify(cov[0, 0] - kT / (omega**2 * (1 - h * omega**2 / 2))) == 0
    lt = leading_term(cov[0, 0] - kT / omega**2)
    assert lt.order == 1 and sympy.simplify(lt.coefficient - kT / 2) == 0
    # the formula is what the compiled sampler does: probe it at a few steps
    for omega_v, kT_v, h_v in [(1.0, 1.0, 0.1), (2.0, 0.5, 0.3), (0.7, 2.0, 1.5)]:
        p = problems.overdamped_harmonic(omega_v, kT_v)
        _, c = stationary(affine_step(p.integrator("BO"), 0.0, h_v))
        value = float(cov[0, 0].subs({kT: kT_v, omega: omega_v, h: h_v}))
        assert c[0, 0] == pytest.approx(value, rel=1e-12)


def _lm_system(omega_v: float, kT_v: float, h_v: float, potential=None):
    pot = potential or problems.harmonic_potential(omega_v)
    system, delta = sd.langevin.overdamped_lm(pot, kT=kT_v, h=h_v)
    if potential is None:
        system = system.with_params(omega=omega_v)
    return system, delta


def test_leimkuhler_matthews_is_exact_on_the_harmonic_potential():
    system, _ = _lm_system(1.0, 1.0, 0.1)
    _, cov = stationary_moments(symbolic_step(system.integrator("BAOAB")))
    params = {p.name: p for p in system.sde.parameters}
    assert sympy.simplify(cov[0, 0] - params["kT"] / params["omega"] ** 2) == 0


class _Sequence(NoiseSource):
    """Pre-drawn standard normals, one tensor per draw per step, in order."""

    def __init__(self, values: list[torch.Tensor]) -> None:
        self.values = values
        self.i = 0

    def bind(self, shapes, like):
        def draw():
            v = self.values[self.i]
            self.i += 1
            return v.clone()

        return [draw for _ in shapes]


def test_leimkuhler_matthews_recursion_with_the_same_noises():
    """BAOAB at infinite friction with step sqrt(2h) reproduces LM iterates exactly."""
    pot = sd.potentials.DoubleWell()
    kT, h, walkers, steps = 0.8, 0.05, 5, 40
    system, delta = _lm_system(0.0, kT, h, potential=pot)
    g = torch.Generator().manual_seed(3)
    R = [torch.randn(walkers, 1, generator=g) for _ in range(steps + 1)]
    q0 = torch.randn(walkers, 1, generator=g)
    # p at the start of step 0 as LM needs it: sqrt(kT) R_0 + (delta/2) F(q0)
    p0 = math.sqrt(kT) * R[0] + delta / 2 * pot.force(q0)
    res = sd.integrate(
        system.integrator("BAOAB"),
        {"q": q0, "p": p0},
        h=delta,
        steps=steps,
        noise=_Sequence(R[1:]),
        save_every=1,
    )
    q = q0.clone()
    for n in range(steps):
        q = q + h * pot.force(q) + math.sqrt(kT * h / 2) * (R[n] + R[n + 1])
        torch.testing.assert_close(res.states["q"][n + 1], q, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", ["BAOAB", "ABOBA", "OBABO", "OABAO", "BAOA", "OBA", "ABO", "BOA"])
def test_preset_finite_time_orders(name):
    prob = problems.harmonic()
    integ = prob.integrator(name)
    fto = finite_time_order(symbolic_step(integ), prob.sde)
    assert fto.order == sd.preset(name).weak_order == integ.weak_order


@pytest.mark.parametrize("name", ["BAOAB", "OBA"])
def test_symbolic_order_matches_exact_ladder_slopes(name):
    prob = problems.harmonic(1.3, 0.7, 1.2, 1.5)
    integ = prob.integrator(name)
    fto = finite_time_order(symbolic_step(integ), prob.sde)
    ladder = weak_error_ladder(integ, 2.0, [0.1, 0.05, 0.025, 0.0125], [1.0, -0.5], [0.3, 0.2])
    assert ladder.order == fto.order
    # the leading coefficient predicts the error of E[q^2] at T
    z0 = np.array([1.0, 1.0, -0.5, 0.3 + 1.0, -0.5, 0.2 + 0.25])  # (1, m, vech E[yy^T])
    ell = np.zeros(6)
    ell[3] = 1.0
    C = fto.error_at(2.0, z0, ell, prob.params)
    q2 = [d["value"][2] - d["exact"][2] for d in ladder.details]
    assert q2[-1] / ladder.hs[-1] ** fto.order == pytest.approx(C, rel=0.05)


def test_errors_name_the_problem():
    with pytest.raises(NotAffineError, match="nonlinear"):
        symbolic_step(sd.langevin.underdamped(sd.potentials.DoubleWell()).integrator("BAOAB"))
    q, p = sd.blocks("q p")
    F = sd.Field("F", [q])
    sde = sd.SDE([q, p], {"A": sd.Flow({q: p}), "B": sd.Flow({p: F()})})
    with pytest.raises(SymbolicError, match="field F has no symbolic definition"):
        symbolic_step(sde, "BAB")
