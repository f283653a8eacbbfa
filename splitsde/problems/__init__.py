"""Test problems with exact answers: Ornstein--Uhlenbeck, the harmonic oscillator
(underdamped and overdamped), random stable linear SDEs of any dimension, and nonlinear
Langevin problems (quartic, double well, Müller--Brown) with quadrature references."""

from splitsde.problems.boltzmann import (
    BoltzmannProblem,
    MullerBrownProblem,
    SeparableProblem,
    double_well,
    muller_brown,
)
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
    "BoltzmannProblem",
    "HarmonicProblem",
    "LinearProblem",
    "MullerBrownProblem",
    "ParametricHarmonic",
    "QuarticProblem",
    "SeparableProblem",
    "double_well",
    "harmonic",
    "harmonic_potential",
    "muller_brown",
    "ou",
    "overdamped_harmonic",
    "quartic",
    "random_linear",
]
