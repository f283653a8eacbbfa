"""Test problems with exact answers: Ornstein--Uhlenbeck, the harmonic oscillator
(underdamped and overdamped), random stable linear SDEs of any dimension, and a quartic
potential with quadrature references."""

from splitsde.problems.harmonic import (
    HarmonicProblem,
    ParametricHarmonic,
    harmonic,
    harmonic_potential,
    overdamped_harmonic,
)
from splitsde.problems.linear import LinearProblem, ou, random_linear
from splitsde.problems.quartic import QuarticProblem, quartic

__all__ = [
    "HarmonicProblem",
    "LinearProblem",
    "ParametricHarmonic",
    "QuarticProblem",
    "harmonic",
    "harmonic_potential",
    "ou",
    "overdamped_harmonic",
    "quartic",
    "random_linear",
]
