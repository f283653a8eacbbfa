"""Exact finite-time weak orders (no Monte Carlo) of random words on random linear systems.

Theory (Baker--Campbell--Hausdorff on the moment generators :math:`X_\\ell` of the flows):
a word with exact sub-flows has modified generator :math:`\\sum_\\ell X_\\ell + O(h)`; the
:math:`O(h)` term is :math:`-\\tfrac12\\sum_{i<j}[X_{\\ell_i}, X_{\\ell_j}]` for a Lie word
(letters in word order, the first applied first) and
vanishes for a symmetric word. So a Lie word has order 1 unless that commutator sum vanishes,
a symmetric word order 2, and both are exact when all flows commute.
"""

from __future__ import annotations

import sympy
from hypothesis import example, given, settings
from hypothesis import strategies as st
from strategies import palindromes

import splitsde as sd
from splitsde import problems
from splitsde.analysis import (
    continuous_generator,
    finite_time_order,
    moment_generator,
    symbolic_step,
)

LETTERS = ("A", "B", "O")


systems = st.builds(
    lambda dim, seed, commuting: problems.random_linear(
        dim, seed, commuting=commuting and dim >= 3
    ),
    dim=st.integers(2, 3),
    seed=st.integers(0, 10**6),
    commuting=st.booleans(),
)


def _flow_generators(prob) -> dict[str, sympy.Matrix]:
    out = {}
    for letter, flow in prob.sde.flows.items():
        alone = sd.SDE(prob.sde.blocks, {letter: flow})
        out[letter] = moment_generator(*continuous_generator(alone))
    return out


def _commutator_sum(gens: dict[str, sympy.Matrix], letters: list[str]) -> sympy.Matrix:
    total = sympy.zeros(*next(iter(gens.values())).shape)
    for i, a in enumerate(letters):
        for b in letters[i + 1 :]:
            total += gens[a] * gens[b] - gens[b] * gens[a]
    return total.applyfunc(sympy.nsimplify)


def check_symmetric_word_has_order_two(word, prob):
    integ = prob.integrator(word)
    assert integ.word.is_symmetric
    fto = finite_time_order(symbolic_step(integ), prob.sde)
    gens = _flow_generators(prob)
    all_commute = all(
        (gens[a] * gens[b] - gens[b] * gens[a]).is_zero_matrix for a in gens for b in gens
    )
    if all_commute:
        assert fto.order is None  # the split is exact: identified, not skipped
    else:
        assert fto.order == 2 == integ.weak_order


@given(word=palindromes(), prob=systems)
def test_symmetric_words_have_order_two(word, prob):
    check_symmetric_word_has_order_two(word, prob)


@settings(max_examples=12)
@given(word=palindromes(weighted=True), prob=systems)
# the equal split written out (the same word as "BABOBAB"), and a non-default one
@example(word="B[1/4] A[1/2] B[1/4] O B[1/4] A[1/2] B[1/4]", prob=problems.random_linear(3, 7))
@example(
    word="B[1/6] A[1/8] O[1/4] B[1/3] A[3/8] O[1/2] A[3/8] B[1/3] O[1/4] A[1/8] B[1/6]",
    prob=problems.random_linear(2, 11),
)
def test_weighted_symmetric_words_have_order_two(word, prob):
    check_symmetric_word_has_order_two(word, prob)


@given(letters=st.permutations(LETTERS), prob=systems)
def test_lie_words_have_order_one_unless_the_flows_commute(letters, prob):
    integ = prob.integrator("".join(letters))
    fto = finite_time_order(symbolic_step(integ), prob.sde)
    gens = _flow_generators(prob)
    if _commutator_sum(gens, list(letters)).is_zero_matrix:
        # the O(h) term of the modified generator vanishes: at least second order
        assert fto.order is None or fto.order >= 2
    else:
        assert fto.order == 1 == integ.weak_order
        # and the error generator is exactly minus half the commutator sum (BCH)
        half = _commutator_sum(gens, list(letters)) / 2
        assert (fto.error_generator + half).applyfunc(sympy.nsimplify).is_zero_matrix


def test_commuting_system_is_detected_as_exact():
    prob = problems.random_linear(3, 5, commuting=True)
    gens = _flow_generators(prob)
    assert all((gens[a] * gens[b] - gens[b] * gens[a]).is_zero_matrix for a in gens for b in gens)
    for word in ("OBA", "ABO", "BAOAB"):
        assert finite_time_order(symbolic_step(prob.integrator(word)), prob.sde).order is None


@given(
    word=st.one_of(palindromes(), st.permutations(LETTERS).map(" ".join)),
    reuse=st.sampled_from(["none", "exact", "per_step"]),
    eval_at=st.sampled_from(["first", "start"]),
)
def test_declared_order_is_the_exact_order_on_the_harmonic_oscillator(word, reuse, eval_at):
    """The order an integrator declares (symmetry, solver orders, reuse of moved-state
    evaluations) is the exact one on a problem where no flows commute."""
    prob = problems.harmonic(1.3, 0.7, 1.1, 0.9)
    reduction = sd.Reduction(reuse, eval_at if reuse == "per_step" else "first")
    integ = prob.integrator(word, reduction=reduction)
    assert finite_time_order(symbolic_step(integ), prob.sde, values=prob.params).order == (
        integ.weak_order
    )
