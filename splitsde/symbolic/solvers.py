"""Solver strategies for sub-flows (re-exported from :mod:`splitsde.symbolic.solve`).

Pass one to :class:`~splitsde.symbolic.flow.Flow` (``solver=``) or to an integrator
(``solvers={"B": ...}``) to override the derived solver.
"""

from splitsde.symbolic.expint import (
    ExponentialClock,
    ExponentialMultistep,
    ExponentialRungeKutta,
)
from splitsde.symbolic.poisson import PoissonMidpoint
from splitsde.symbolic.solve import (
    Auto,
    Custom,
    EulerMaruyama,
    Exact,
    ExponentialEuler,
    Solver,
    SolverStrategy,
    noise_symbol,
)

__all__ = [
    "Auto",
    "Custom",
    "EulerMaruyama",
    "Exact",
    "ExponentialClock",
    "ExponentialEuler",
    "ExponentialMultistep",
    "ExponentialRungeKutta",
    "PoissonMidpoint",
    "Solver",
    "SolverStrategy",
    "noise_symbol",
]
