"""Symmetric words are certified second order and Lie words first order: property-based
(hypothesis draws the words), through the verdict the Monte Carlo estimates get, on data whose
law is exact.

On the harmonic oscillator every scheme's law at ``T`` is known exactly (affine analysis), so
a Monte Carlo average of the observable :math:`\\varphi = y^\\top A y + b^\\top y` over ``W``
walkers is replaced by its exact expectation plus a Gaussian error with its exact standard
error (:math:`\\mathrm{Var}\\,\\varphi = 2\\,\\mathrm{tr}(A\\Sigma A\\Sigma)
+ 4 m^\\top A\\Sigma A m + b^\\top\\Sigma b + 4 b^\\top \\Sigma A m` for
:math:`y \\sim N(m, \\Sigma)`), drawn with a seed
fixed by the word: no flaky intervals, and any number of walkers costs nothing. The true order of
the observable is independent of the fit: the exact series of the modified generator
(:func:`~splitsde.analysis.symbolic.finite_time_order`) and its leading coefficient for this
observable. The verdict must be that order or "not certified" -- never another order -- and
the true order must be certified for the noise-free averages.
"""

from __future__ import annotations

import zlib

import numpy as np
from hypothesis import given, settings
from strategies import lie_words, palindromes

from splitsde import problems
from splitsde.analysis import finite_time_order, fit_order, propagate, symbolic_step

PROB = problems.harmonic(1.3, 0.7, 1.1, 0.9)
T = 2.0
LADDER = (1 / 32, 1 / 16, 1 / 8, 1 / 4, 1 / 2, 1.0)  # times the largest step
M0, C0 = np.array([1.0, 0.0]), np.diag([0.0, 0.5])
A = np.array([[1.0, 0.25], [0.25, 0.25]])  # q^2 + q p / 2 + p^2 / 4
B = np.array([0.5, 0.0])  # + q / 2
#: The ladder is placed in the asymptotic regime (the largest step where the exact bias is within
#: 30% of its leading term, a user following the advice "use smaller steps"), and walkers are
#: chosen so that the leading term at the third smallest step is this many standard errors.
#: A lower-order term below the error bars at every step would be invisible to any fit; the
#: asymptotic placement is what makes the leading term visible. Virtual walkers cost nothing.
RESOLUTION = 10.0


def _phi(m: np.ndarray, S: np.ndarray) -> tuple[float, float]:
    mean = np.trace(A @ S) + m @ A @ m + B @ m
    var = 2 * np.trace(A @ S @ A @ S) + 4 * m @ A @ S @ A @ m + B @ S @ B + 4 * B @ S @ A @ m
    return float(mean), float(var)


REF = _phi(*PROB.law(T, M0, C0))[0]


def _moment(integ, h: float) -> tuple[float, float]:
    m, S = propagate(integ, h * np.arange(round(T / h) + 1), M0, C0)
    return _phi(m, S)


def _exact_ladder(
    word: str, leading: float, order: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The steps, the exact E[phi(y_T)] of the scheme at each, and the standard errors of
    Monte Carlo averages over the walkers described at RESOLUTION."""
    integ = PROB.integrator(word)
    h_max = 0.4
    while abs((_moment(integ, h_max)[0] - REF) / (leading * h_max**order) - 1) > 0.3:
        h_max /= 2
    hs = np.array(LADDER) * h_max
    moments = np.array([_moment(integ, h) for h in hs])
    sds = np.sqrt(moments[:, 1])
    walkers = (RESOLUTION * sds[2] / abs(leading * hs[2] ** order)) ** 2
    return hs, moments[:, 0], sds / np.sqrt(walkers)


def _true_order(word: str) -> tuple[int, float]:
    """The order of the weak error of phi and its leading coefficient (exact series of the
    modified generator)."""
    fto = finite_time_order(symbolic_step(PROB.integrator(word)), PROB.sde, values=PROB.params)
    z0 = np.array([1.0, *M0, C0[0, 0] + M0[0] ** 2, C0[0, 1] + M0[0] * M0[1], C0[1, 1]])
    ell = np.array([0.0, *B, A[0, 0], 2 * A[0, 1], A[1, 1]])  # on z = (1, m, vech E[yy^T])
    leading = fto.error_at(T, z0, ell, PROB.params)
    assert abs(leading) > 1e-6  # phi sees the leading term
    return fto.order, leading


def check(word: str, order: int) -> None:
    true, leading = _true_order(word)
    assert true == order
    hs, exact, se = _exact_ladder(word, leading, order)
    clean = fit_order(hs, exact, se, REF)
    assert clean.certified and clean.certified_order == order, (word, str(clean))
    rng = np.random.default_rng(zlib.crc32(word.encode()))
    for _ in range(3):
        noisy = fit_order(hs, exact + rng.normal(0.0, se), se, REF)
        assert noisy.verdict.order in (order, None), (word, str(noisy))


@settings(max_examples=20)
@given(word=palindromes())
def test_symmetric_words_are_certified_second_order(word):
    check(word, 2)


@settings(max_examples=20)
@given(word=palindromes(weighted=True))
def test_weighted_symmetric_words_are_certified_second_order(word):
    check(word, 2)


@given(word=lie_words())
def test_lie_words_are_certified_first_order(word):
    check(word, 1)
