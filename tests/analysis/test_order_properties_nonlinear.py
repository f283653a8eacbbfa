"""Exact stationary orders of drawn words on nonlinear problems, and the Monte Carlo verdict.

The reference is deterministic: :func:`splitsde.analysis.transfer.langevin_invariant_law`
computes the invariant law of a word's Markov chain on a (q, p) grid (Fourier shears for A
and B, the Gaussian kernel for O, power iteration), so the stationary bias at each step
comes without Monte Carlo noise. It is checked against the exact law of the linear scheme
(Lyapunov equation of the probed affine step) to 1e-11, against a finer grid, and against
Monte Carlo runs of the compiled integrator.

Hypothesis draws words (derandomized, no example database: every run draws the same
words); for each, the local log-log slopes of the biases on the step ladder are asserted:

* palindromes: ``<q^2>`` has order 2 exactly, ``<p^2>`` and ``<q p>`` order at least 2;
* Lie--Trotter words (every letter once): ``<q p>`` (exact value 0) has order 1 on the
  double well, ``<q^2>`` order 1 on the quartic, and ``<p^2>`` order 2 (the momentum
  marginal of these words is second order: the first-order term sits in the correlation
  of q and p, and in the configurational marginal).

On the double well the first-order term of ``<q^2>`` for ``O B A`` (and ``B A O``, ``A O B``:
the same positions) is small, about -0.013 h against -0.15 h^2: over h = 0.025 ... 0.2 the
local slopes are 1.3 ... 1.75 and the Monte Carlo fit at 4e-4 error bars used to certify 2.
``test_a_masked_first_order_term_is_not_certified_as_two`` reproduces that with the
deterministic biases and asserts the verdict the library now gives (not certified); with
precise values down to h = 0.00625 the fit certifies 1.

The Monte Carlo property (the last two tests): on the finite-time error of q^2 at T = 2 a
drawn word is certified with the order it declares or not certified, never another order
(some words are not certified on this fixed ladder and budget: ``A O B``, whose first-order
term is not resolved; certification itself is asserted for BAOAB 2 and OBA 1 in
``test_weak_order_verdict.py``).
"""

from __future__ import annotations

import math
import zlib

import numpy as np
import pytest
import scipy.integrate
import torch
from hypothesis import given, settings
from strategies import lie_words, palindromes

import splitsde as sd
from splitsde import problems
from splitsde.analysis import affine_step, estimate_weak_order, fit_order, stationary
from splitsde.analysis.transfer import langevin_invariant_law


# the potentials written out here, independently of splitsde.potentials
def dw_energy(q):
    return (q * q - 1.0) ** 2


def dw_force(q):
    return -4.0 * q * (q * q - 1.0)


def quartic_energy(q):
    return q**4 / 4.0


def quartic_force(q):
    return -(q**3)


DW_BOX = (-2.6, 2.6)  # U = 33 kT at the edges; Verlet is stable there for h <= 0.2
QUARTIC_BOX = (-3.6, 3.6)  # U = 42 kT


def boltzmann_q2(energy) -> float:
    def w(q):
        return math.exp(-energy(q))

    z = scipy.integrate.quad(w, -np.inf, np.inf, epsabs=0, epsrel=1e-13)[0]
    m = scipy.integrate.quad(lambda q: q * q * w(q), -np.inf, np.inf, epsabs=0, epsrel=1e-13)
    return m[0] / z


DW_Q2 = boltzmann_q2(dw_energy)
QUARTIC_Q2 = boltzmann_q2(quartic_energy)
OBSERVABLES = {
    "q2": lambda q, p: q * q,
    "p2": lambda q, p: p * p,
    "qp": lambda q, p: q * p,
}
HS = (0.2, 0.1, 0.05)


def biases(word, force, energy, box, q2, hs=HS, q_points=64):
    """Stationary biases of <q^2>, <p^2>, <q p> (kT = M = gamma = 1) at each step."""
    out = []
    for h in hs:
        law = langevin_invariant_law(word, force, h, box, energy=energy, q_points=q_points)
        exact = {"q2": q2, "p2": 1.0, "qp": 0.0}
        out.append({k: law.average(f) - exact[k] for k, f in OBSERVABLES.items()})
    return out


def slopes(b, key, hs=HS):
    v = np.array([abs(x[key]) for x in b])
    return np.log(v[:-1] / v[1:]) / np.log(np.array(hs[:-1]) / np.array(hs[1:]))


# ------------------------------------------------------------------------------------------
# The reference itself
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("word", ["OBA", "ABO", "BAO", "BAOAB", "OBABO", "B A O[1/3] A O[2/3] B"])
def test_grid_law_is_the_exact_law_of_the_linear_scheme(word):
    """On the harmonic oscillator the scheme is linear and its invariant law is the solution of
    the discrete Lyapunov equation of the probed step map (no grid, no iteration)."""
    prob = problems.harmonic(omega=1.0, gamma=1.0, kT=1.0)
    _, cov = stationary(affine_step(prob.integrator(word), t0=0.0, h=0.2))
    law = langevin_invariant_law(word, lambda q: -q, 0.2, (-8, 8), energy=lambda q: q * q / 2)
    assert law.average(OBSERVABLES["q2"]) == pytest.approx(cov[0, 0], abs=1e-11)
    assert law.average(OBSERVABLES["p2"]) == pytest.approx(cov[1, 1], abs=1e-11)
    assert law.average(OBSERVABLES["qp"]) == pytest.approx(cov[0, 1], abs=1e-11)


def test_grid_law_has_converged_in_the_grid_and_matches_monte_carlo():
    """A finer grid changes the averages by < 1e-10; the compiled integrator's stationary
    averages (Monte Carlo, fixed seed, batch-means error over walkers) agree within 4 standard
    errors."""
    from splitsde.analysis import stationary_average

    coarse = langevin_invariant_law("OBA", dw_force, 0.1, DW_BOX, energy=dw_energy, q_points=64)
    fine = langevin_invariant_law(
        "OBA", dw_force, 0.1, DW_BOX, energy=dw_energy, q_points=128, p_points=128
    )
    for f in OBSERVABLES.values():
        assert abs(coarse.average(f) - fine.average(f)) < 1e-10
    prob = problems.double_well()
    integ = prob.integrator("OBA")
    gen = torch.Generator().manual_seed(11)
    y0 = {
        "q": torch.where(torch.rand(4000, 1, generator=gen, dtype=torch.float64) < 0.5, -1.0, 1.0),
        "p": torch.randn(4000, 1, generator=gen, dtype=torch.float64),
    }
    for name, obs in (("qp", lambda s: s["q"] * s["p"]), ("q2", lambda s: s["q"] ** 2)):
        est = stationary_average(integ, y0, obs, h=0.1, steps=1000, burn_in=100, seed=12)
        ref = coarse.average(OBSERVABLES[name])
        assert abs(est.value - ref) < 4 * est.se, (name, est, ref)
    assert coarse.average(OBSERVABLES["qp"]) > 0.05  # the first-order term, ~h/2


def test_transfer_law_refuses_bad_input():
    with pytest.raises(ValueError, match="letter"):
        langevin_invariant_law("BAOC", dw_force, 0.1, DW_BOX)
    with pytest.raises(ValueError, match="Metropolized"):
        langevin_invariant_law("O {B A B} O", dw_force, 0.1, DW_BOX)
    with pytest.raises(ValueError, match="h must be positive"):
        langevin_invariant_law("OBA", dw_force, 0.0, DW_BOX)
    with pytest.raises(ValueError, match="q_box"):
        langevin_invariant_law("OBA", dw_force, 0.1, (1.0, -1.0))
    with pytest.raises(ValueError, match="edges of the box"):  # a box that cuts the law
        langevin_invariant_law("OBA", dw_force, 0.1, (-1.2, 1.2), energy=dw_energy)


# ------------------------------------------------------------------------------------------
# Exact orders of drawn words
# ------------------------------------------------------------------------------------------
@settings(max_examples=4, derandomize=True, database=None, deadline=None)
@given(word=palindromes())
def test_symmetric_words_are_second_order_in_the_invariant_law(word):
    b = biases(word, dw_force, dw_energy, DW_BOX, DW_Q2)
    s = slopes(b, "q2")
    assert abs(s[-1] - 2.0) < 0.1, (word, s, b)
    for key in ("p2", "qp"):  # order 2 or higher (OBABO: <p^2> is fourth order; <qp> is 0
        small = abs(b[-1][key]) < 1e-9  # at symmetric sampling points)
        assert small or slopes(b, key)[-1] > 1.9, (word, key, b)


@settings(max_examples=6, derandomize=True, database=None, deadline=None)
@given(word=lie_words())
def test_lie_words_are_first_order_in_the_invariant_law(word):
    b = biases(word, dw_force, dw_energy, DW_BOX, DW_Q2)
    assert abs(slopes(b, "qp")[-1] - 1.0) < 0.1, (word, b)
    assert abs(b[-1]["qp"]) > 0.02  # ~ +-h/2: a first-order term of size one
    assert abs(slopes(b, "p2")[-1] - 2.0) < 0.15, (word, b)
    bq = biases(word, quartic_force, quartic_energy, QUARTIC_BOX, QUARTIC_Q2)
    assert abs(slopes(bq, "q2")[-1] - 1.0) < 0.1, (word, bq)


def test_a_masked_first_order_term_is_not_certified_as_two():
    """O B A on the double well: the deterministic <q^2> biases over h = 0.025 ... 0.2 with
    the error bars of 50 000 Monte Carlo walkers (4.2e-4) were certified order 2; the
    h^1 term the data allow outweighs the h^2 term on all but the largest steps, so the
    verdict is now "not certified". With precise values down to h = 0.00625 the first-order
    term is resolved and the fit certifies 1, with coefficient -0.013."""
    hs = (0.2, 0.1, 0.05, 0.025)
    b = biases("OBA", dw_force, dw_energy, DW_BOX, DW_Q2, hs=hs)
    v = DW_Q2 + np.array([x["q2"] for x in b])
    fit = fit_order(hs, v, np.full(4, 4.2e-4), DW_Q2)
    assert not fit.verdict.certified
    assert "h^1 term is not excluded" in fit.verdict.reason
    small = biases("OBA", dw_force, dw_energy, DW_BOX, DW_Q2, hs=(0.0125, 0.00625))
    hs2 = (*hs, 0.0125, 0.00625)
    v2 = DW_Q2 + np.array([x["q2"] for x in b + small])
    fine = fit_order(hs2, v2, np.full(6, 1e-6), DW_Q2)
    assert fine.verdict.certified and fine.certified_order == 1, str(fine)
    # the h^1 coefficient by Richardson extrapolation on the three smallest steps
    b3 = v2[-3:] - DW_Q2
    c1 = (32 * b3[2] - 12 * b3[1] + b3[0]) / (12 * 0.00625)  # b = c1 h + c2 h^2 + c3 h^3
    assert -0.015 < c1 < -0.010


# ------------------------------------------------------------------------------------------
# Monte Carlo: the finite-time verdict is never another order
# ------------------------------------------------------------------------------------------
SYSTEM = sd.langevin.underdamped(sd.potentials.DoubleWell(), gamma=1.0, kT=1.0)
MC_HS = (0.025, 0.05, 0.1, 0.2)
WALKERS = 20_000


def check(word: str, order: int) -> None:
    integ = SYSTEM.integrator(word)
    assert integ.weak_order == order  # what the word declares
    res = estimate_weak_order(
        integ,
        MC_HS,
        {
            "q": torch.full((WALKERS, 1), 0.5, dtype=torch.float64),
            "p": torch.zeros(WALKERS, 1, dtype=torch.float64),
        },
        lambda s: s["q"] ** 2,
        mode="final",
        T=2.0,
        seed=zlib.crc32(word.encode()),
        reference="fine",
        batches=100,
    )
    assert res.verdict.order in (order, None), (word, res.format())
    if not res.verdict.certified:
        assert res.verdict.reason and res.verdict.suggestions, (word, str(res.verdict))


@settings(max_examples=3)
@given(word=palindromes())
def test_symmetric_words_are_never_given_another_order_on_the_double_well(word):
    check(word, 2)


@settings(max_examples=6)
@given(word=lie_words())
def test_lie_words_are_never_given_another_order_on_the_double_well(word):
    check(word, 1)
