"""Exact and statistical verification of splitting integrators.

* :mod:`~splitsde.analysis.affine` -- exact one-step maps of compiled steps on linear problems
  (by probing), the exact law after n steps, the scheme's exact stationary law;
* :mod:`~splitsde.analysis.symbolic` -- the same maps as sympy formulas from the step program,
  stationary moments as formulas in h, leading error terms, exact finite-time weak order;
* :mod:`~splitsde.analysis.continuous` -- the exact law of the linear SDE itself, exact weak
  errors over step ladders and their log--log slopes;
* :mod:`~splitsde.analysis.montecarlo` -- Monte Carlo averages with batch-means errors and
  weak orders estimated over step ladders, for nonlinear problems;
* :mod:`~splitsde.analysis.fit` -- the weak-order fit with goodness of fit, selection of the
  asymptotic subset and a verdict (certified or not, and why);
* :mod:`~splitsde.analysis.common_noise` -- common random numbers across step sizes (one
  Brownian path, coarsened);
* :mod:`~splitsde.analysis.distributed` -- Monte Carlo sharded over ``torch.distributed``;
* :mod:`~splitsde.analysis.stability` -- linear stability bounds in the step;
* :mod:`~splitsde.analysis.plot` -- figures of weak-order fits;
* :mod:`~splitsde.analysis.certify` -- the certificate behind ``splitsde verify``;
* :mod:`~splitsde.analysis.randomized` -- exact mean and covariance of randomized affine schemes
  (per-walker random selections, the Poisson midpoint method);
* :mod:`~splitsde.analysis.transfer` -- the invariant law of a Langevin splitting word in one
  dimension on a phase-space grid (no Monte Carlo): the reference for stationary biases.
"""

from splitsde.analysis.affine import (
    AffineMap,
    NotAffineError,
    UnstableError,
    affine_step,
    affine_steps,
    is_autonomous,
    layout_of,
    propagate,
    stationary,
)
from splitsde.analysis.certify import Certificate, CertificateError, certificate
from splitsde.analysis.common_noise import CommonNoise
from splitsde.analysis.continuous import (
    LadderResult,
    LinearSDE,
    linear_sde,
    loglog_slopes,
    second_moments,
    stationary_bias,
    weak_error_ladder,
)
from splitsde.analysis.distributed import World, init_world, rank_seed
from splitsde.analysis.fit import ALPHA, Estimate, FitAttempt, OrderFit, Verdict, fit_order
from splitsde.analysis.montecarlo import (
    LadderPoint,
    MonteCarloOptions,
    WeakOrderResult,
    estimate_weak_order,
    final_average,
    ladder_cost,
    stationary_average,
)
from splitsde.analysis.plot import plot_certificate, plot_fit
from splitsde.analysis.randomized import propagate_moments, selection_cells
from splitsde.analysis.stability import integrator_stability_bound, stability_bound
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
from splitsde.analysis.transfer import GridLaw, langevin_invariant_law

__all__ = [
    "ALPHA",
    "AffineMap",
    "Certificate",
    "CertificateError",
    "CommonNoise",
    "Estimate",
    "FiniteTimeOrder",
    "FitAttempt",
    "GridLaw",
    "LadderPoint",
    "LadderResult",
    "LeadingTerm",
    "LinearSDE",
    "MonteCarloOptions",
    "NotAffineError",
    "OrderFit",
    "SymbolicError",
    "SymbolicStep",
    "UnstableError",
    "Verdict",
    "WeakOrderResult",
    "World",
    "affine_step",
    "affine_steps",
    "certificate",
    "continuous_generator",
    "estimate_weak_order",
    "final_average",
    "finite_time_order",
    "fit_order",
    "init_world",
    "integrator_stability_bound",
    "is_autonomous",
    "ladder_cost",
    "langevin_invariant_law",
    "layout_of",
    "leading_term",
    "linear_sde",
    "loglog_slopes",
    "moment_generator",
    "moment_map",
    "plot_certificate",
    "plot_fit",
    "propagate",
    "propagate_moments",
    "rank_seed",
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
]


def __getattr__(name: str) -> object:
    # ``weak_order`` is the declared order (a property of integrators and plans); the Monte
    # Carlo estimate of it was once also called ``weak_order``
    if name == "weak_order":
        raise AttributeError(
            "splitsde.analysis.weak_order is now estimate_weak_order (weak_order is the "
            "declared order, a property of integrators and plans)"
        )
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
