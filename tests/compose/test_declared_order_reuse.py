"""The declared weak order drops to 1 only when a field value is reused after its input moved."""

import pytest

import splitsde as sd
from splitsde import problems
from splitsde.analysis import finite_time_order, symbolic_step


@pytest.mark.parametrize(
    "word,declared",
    [("BAOAB", 1), ("OBABO", 1), ("ABOBA", 2), ("AOBOA", 2), ("OBA", 1)],
)
def test_per_step_reuse_declared_order_matches_exact_order(word, declared):
    prob = problems.harmonic(1.3, 0.7, 1.0, 1.0)
    integ = prob.integrator(word, reduction=sd.Reduction("per_step"))
    assert integ.weak_order == declared
    assert finite_time_order(symbolic_step(integ), prob.sde).order == declared


def test_per_step_reuse_without_fields_keeps_order_two():
    prob = problems.random_linear(2, 0)
    integ = prob.integrator("BAOAB", reduction=sd.Reduction("per_step"))
    assert integ.weak_order == 2
    assert finite_time_order(symbolic_step(integ), prob.sde).order == 2
