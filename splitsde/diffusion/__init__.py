r"""Diffusion models as an instance of splitsde.

Forward processes are symbolic linear SDEs whose perturbation kernels come from the core's
exact linear solver; the reverse-SDE family is split into named sub-flows; samplers are words,
derived solvers and reduction rules run by :func:`splitsde.integrate`. Analytic targets
(Gaussian data, Gaussian mixtures) give exact scores and, for Gaussian data, the exact law of
the generated samples.

>>> import splitsde.diffusion as dm
>>> proc = dm.process("psld-cifar10")
>>> target = dm.GaussianMixture.ring(8)
>>> res = dm.sample("sps", proc, target.score(proc), 256, shape=2, nfe=20, seed=0)
>>> res.nfe, tuple(res.x.shape)
(20, (256, 2))
"""

from splitsde.diffusion.comparison import Comparison, compare, exact_kl, target
from splitsde.diffusion.conjugate import (
    CONJUGATE_SAMPLERS,
    ConjugateDEIS,
    PointFlowFrame,
    conjugate,
)
from splitsde.diffusion.epsilon import DiffusionClock, EpsilonField, epsilon_sde
from splitsde.diffusion.exponential import (
    EXPONENTIAL_SAMPLERS,
    ExponentialSampler,
    StochasticDDIM,
    ddim,
    deis,
    ipndm,
    rhork,
)
from splitsde.diffusion.grids import (
    GRIDS,
    GridError,
    check_grid,
    optimized_schedule,
    time_grid,
)
from splitsde.diffusion.metrics import (
    Estimate,
    energy_distance,
    exact_law,
    gaussian_kl,
    gaussian_w2,
    mixture_metrics,
    mode_weight_error,
    sliced_wasserstein,
)
from splitsde.diffusion.midpoint import POISSON_SAMPLERS, poisson_midpoint
from splitsde.diffusion.pfode import PFODEPlan, PFODESampler, ProbabilityFlow
from splitsde.diffusion.planning import plan, sample
from splitsde.diffusion.processes import (
    PROCESSES,
    ForwardProcess,
    KernelTerms,
    cld,
    process,
    psld,
    ve,
    vp,
    vp_cosine,
)
from splitsde.diffusion.protocols import (
    BudgetError,
    Law,
    PlanProtocol,
    SampleResult,
    SamplerProtocol,
)
from splitsde.diffusion.registry import SAMPLERS, sampler
from splitsde.diffusion.reverse import PARTS, SPLITS, ReverseSDE
from splitsde.diffusion.samplers import Plan, Sampler
from splitsde.diffusion.schedule_search import ScheduleSearch, optimize_schedule
from splitsde.diffusion.scores import (
    PARAMETRISATIONS,
    ScoreModel,
    eps_from_score,
    score_from_data,
    score_from_eps,
)
from splitsde.diffusion.stability import StabilityBound, StabilityWarning, stability_bound
from splitsde.diffusion.targets import ExactScore, GaussianData, GaussianMixture

__all__ = [
    "CONJUGATE_SAMPLERS",
    "EXPONENTIAL_SAMPLERS",
    "GRIDS",
    "PARAMETRISATIONS",
    "PARTS",
    "POISSON_SAMPLERS",
    "PROCESSES",
    "SAMPLERS",
    "SPLITS",
    "BudgetError",
    "Comparison",
    "ConjugateDEIS",
    "DiffusionClock",
    "EpsilonField",
    "Estimate",
    "ExactScore",
    "ExponentialSampler",
    "ForwardProcess",
    "GaussianData",
    "GaussianMixture",
    "GridError",
    "KernelTerms",
    "Law",
    "PFODEPlan",
    "PFODESampler",
    "Plan",
    "PlanProtocol",
    "PointFlowFrame",
    "ProbabilityFlow",
    "ReverseSDE",
    "SampleResult",
    "Sampler",
    "SamplerProtocol",
    "ScheduleSearch",
    "ScoreModel",
    "StabilityBound",
    "StabilityWarning",
    "StochasticDDIM",
    "check_grid",
    "cld",
    "compare",
    "conjugate",
    "ddim",
    "deis",
    "energy_distance",
    "eps_from_score",
    "epsilon_sde",
    "exact_kl",
    "exact_law",
    "gaussian_kl",
    "gaussian_w2",
    "ipndm",
    "mixture_metrics",
    "mode_weight_error",
    "optimize_schedule",
    "optimized_schedule",
    "plan",
    "poisson_midpoint",
    "process",
    "psld",
    "rhork",
    "sample",
    "sampler",
    "score_from_data",
    "score_from_eps",
    "sliced_wasserstein",
    "stability_bound",
    "target",
    "time_grid",
    "ve",
    "vp",
    "vp_cosine",
]
