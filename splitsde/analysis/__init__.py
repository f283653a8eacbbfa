"""Exact and statistical verification of splitting integrators.

* :mod:`~splitsde.analysis.affine` -- exact one-step maps of compiled steps on linear problems
  (by probing), the exact law after n steps, the scheme's exact stationary law;
* :mod:`~splitsde.analysis.symbolic` -- the same maps as sympy formulas from the step program,
  stationary moments as formulas in h, leading error terms, exact finite-time weak order;
* :mod:`~splitsde.analysis.continuous` -- the exact law of the linear SDE itself, exact weak
  errors over step ladders and their log--log slopes;
* :mod:`~splitsde.analysis.montecarlo` -- Monte Carlo averages with batch-means errors and
  fitted weak orders with confidence intervals, for nonlinear problems;
* :mod:`~splitsde.analysis.certify` -- the certificate behind ``splitsde verify``;
* :mod:`~splitsde.analysis.randomized` -- exact mean and covariance of randomized affine schemes
  (per-walker random selections, the Poisson midpoint method).
"""

from splitsde.analysis.affine import (
    AffineMap,
    BlockLayout,
    NotAffineError,
    UnstableError,
    affine_step,
    is_autonomous,
    layout_of,
    propagate,
    stationary,
)
from splitsde.analysis.certify import Certificate, certificate, stability_bound
from splitsde.analysis.continuous import (
    LadderResult,
    LinearSDE,
    linear_sde,
    loglog_slopes,
    second_moments,
    stationary_bias,
    weak_error_ladder,
)
from splitsde.analysis.montecarlo import (
    Estimate,
    OrderFit,
    WeakOrderResult,
    final_average,
    fit_order,
    stationary_average,
    weak_order,
)
from splitsde.analysis.randomized import propagate_moments, selection_cells
from splitsde.analysis.symbolic import (
    FiniteTimeOrder,
    LeadingTerm,
    SymbolicError,
    SymbolicStep,
    continuous_generator,
    finite_time_order,
    leading_term,
    moment_generator,
    moment_map,
    stationary_exact,
    stationary_moments,
    symbolic_step,
)

__all__ = [
    "AffineMap",
    "BlockLayout",
    "Certificate",
    "Estimate",
    "FiniteTimeOrder",
    "LadderResult",
    "LeadingTerm",
    "LinearSDE",
    "NotAffineError",
    "OrderFit",
    "SymbolicError",
    "SymbolicStep",
    "UnstableError",
    "WeakOrderResult",
    "affine_step",
    "certificate",
    "continuous_generator",
    "final_average",
    "finite_time_order",
    "fit_order",
    "is_autonomous",
    "layout_of",
    "leading_term",
    "linear_sde",
    "loglog_slopes",
    "moment_generator",
    "moment_map",
    "propagate",
    "propagate_moments",
    "second_moments",
    "selection_cells",
    "stability_bound",
    "stationary",
    "stationary_average",
    "stationary_bias",
    "stationary_exact",
    "stationary_moments",
    "symbolic_step",
    "weak_error_ladder",
    "weak_order",
]
