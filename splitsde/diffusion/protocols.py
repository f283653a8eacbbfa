r"""What every diffusion sampler and every compiled plan provides.

A **sampler** is a named recipe (a splitting word, an exponential integrator, a Poisson
midpoint step, a probability-flow solve, ...). Compiling it for a forward process, a score
callable and a grid of diffusion times :math:`T = t_0 > t_1 > \dots > t_N = \varepsilon` gives
a **plan**, which draws samples (:meth:`PlanProtocol.run`), says what that costs
(:attr:`PlanProtocol.nfe`), what accuracy it claims (:attr:`PlanProtocol.weak_order`) and, when
the score is affine in the state (Gaussian data), what law its output has
(:meth:`PlanProtocol.exact_law`). Every sampler family satisfies :class:`SamplerProtocol` and
its plans :class:`PlanProtocol`; callers use only these members and never ask a sampler which
class it is.

Capabilities that only some families have are declared, not probed:
:attr:`SamplerProtocol.stepwise` says whether a plan is one compiled step integrator over the
grid (so that a caller such as the k-diffusion or diffusers adapter may drive it step by step
with its own noise and observers); every plan gives its exact law for an affine score, and a
plan whose output is not affine in its initial state raises
:class:`~splitsde.analysis.affine.NotAffineError`.

:class:`ProcessLike` is the part of a forward process that the kernels, the reverse family and
these protocols use, so that they need not import :mod:`splitsde.diffusion.processes`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
import torch

from splitsde.base.errors import SplitsdeError

__all__ = [
    "BudgetError",
    "Law",
    "PlanProtocol",
    "ProcessLike",
    "SampleResult",
    "SamplerProtocol",
]


class BudgetError(SplitsdeError, ValueError):
    """An NFE budget too small for one step of a sampler (plus its denoising step)."""


@runtime_checkable
class ProcessLike(Protocol):
    r"""A linear forward process :math:`dz = F(t) z\,dt + G(t)\,dW` on named blocks, as seen by
    the kernels, the reverse family and the plans (implemented by
    :class:`~splitsde.diffusion.processes.ForwardProcess`)."""

    name: str
    T: float
    eps: float
    values: Mapping[str, float]
    drift: Any  # the (n, n) sympy matrix F(t)
    diffusion: tuple[Any, ...]  # g_b(t) per block
    stationary_expressions: tuple[Any, ...] | None

    @property
    def blocks(self) -> tuple[Any, ...]: ...

    @property
    def block_names(self) -> tuple[str, ...]: ...

    def data_kernel(self, t: Any) -> tuple[np.ndarray, np.ndarray]: ...

    def prior(
        self, n: int, shape: int | Sequence[int], *, generator: torch.Generator, **kw: Any
    ) -> dict[str, torch.Tensor]: ...


@dataclass
class SampleResult:
    """Generated samples and how they were made.

    ``nfe`` is measured by the field counters (steps plus the denoising step, the way the
    papers report it); ``results`` holds the :class:`~splitsde.runtime.integrate.Result` of every
    integrator run (the sampling run, if it is one, and the denoising step); ``tolerance`` is
    the tolerance an adaptive solve used (``None`` for fixed grids).
    """

    final: dict[str, torch.Tensor]
    nfe: int
    nfe_steps: int
    nfe_denoise: int
    steps: int
    grid: np.ndarray
    wall_time: float
    results: list[Any]
    tolerance: float | None = None

    @property
    def x(self) -> torch.Tensor:
        """The data block of the samples."""
        return next(iter(self.final.values()))


@dataclass(frozen=True)
class Law:
    r"""The law of a plan's output started from :math:`N(m_0, \Sigma_0)`: mean and covariance
    (float64, blocks concatenated block-major).

    ``kind`` is ``"gaussian"`` when the output is Gaussian with these moments (an affine
    plan), or ``"moments"`` when it is a mixture (a randomized sampler such as the Poisson
    midpoint method) of which these are the exact mean and covariance. ``nfe`` is the number
    of score evaluations spent computing it (a probed solve), ``None`` when it was propagated
    analytically without calling the score.
    """

    mean: torch.Tensor
    cov: torch.Tensor
    kind: Literal["gaussian", "moments"] = "gaussian"
    nfe: int | None = None


@runtime_checkable
class PlanProtocol(Protocol):
    """A sampler compiled for one process, score and grid.

    Attributes
    ----------
    sampler, process:
        What was compiled.
    grid:
        Diffusion times :math:`T \\to \\varepsilon` the plan runs over.
    steps:
        Number of intervals of ``grid``.
    nfe:
        Score evaluations as compiled (steps plus the denoising step); ``None`` when only a
        run can tell (adaptive solves). :meth:`run` reports the measured count.
    weak_order:
        The declared weak order of the sampler (``None``: none claimed).
    """

    sampler: Any
    process: Any
    grid: np.ndarray

    @property
    def steps(self) -> int: ...

    @property
    def nfe(self) -> int | None: ...

    @property
    def weak_order(self) -> int | None: ...

    def run(
        self, y0: Mapping[str, torch.Tensor], *, seed: int = 0, progress: bool | None = None
    ) -> SampleResult:
        """Samples from the initial state ``y0`` at :math:`T` (blocks by name)."""
        ...

    def exact_law(self, mean0: Any, cov0: Any) -> Law:
        """The law of the output started from :math:`N(\\text{mean0}, \\text{cov0})` (raises
        :class:`~splitsde.analysis.affine.NotAffineError` when the plan is not affine)."""
        ...


@runtime_checkable
class SamplerProtocol(Protocol):
    """A registered diffusion sampler.

    Attributes
    ----------
    name, description, reference:
        What it is and where it comes from.
    reconstructed:
        Whether parts of the definition are reconstructed rather than taken from a paper.
    stepwise:
        Whether its plans are one compiled step integrator over the grid (``plan.integrator``
        run by :func:`splitsde.integrate`, then ``plan.denoiser``): adapters that drive the
        steps themselves need it. ``False`` for whole-trajectory solves.
    """

    name: str
    description: str
    reference: str
    reconstructed: bool
    stepwise: bool

    def check_process(self, process: Any) -> None:
        """Raise ``ValueError`` if the sampler cannot run on ``process``."""
        ...

    def weak_order_for(self, process: Any) -> int | None:
        """The declared weak order on ``process`` (``None``: none claimed). A method, not the
        property ``weak_order``, because it depends on the process; a compiled plan has the
        property :attr:`PlanProtocol.weak_order`."""
        ...

    def configure(self, **options: Any) -> SamplerProtocol:
        """A copy with user options applied (``ValueError`` for options it does not take)."""
        ...

    def with_options(self, **changes: Any) -> SamplerProtocol:
        """A copy with some attributes changed."""
        ...

    def plan(
        self,
        process: Any,
        score: Callable[..., Any],
        *,
        nfe: int | None = None,
        steps: int | None = None,
        grid: str | Sequence[float] | np.ndarray | None = None,
        eps: float | None = None,
        denoise: bool = True,
        **options: Any,
    ) -> PlanProtocol:
        """Compile for a process, a score callable and a grid (an NFE budget ``nfe``, a number
        of ``steps`` of a named grid -- ``None``: the sampler's recommended grid,
        :mod:`splitsde.diffusion.defaults` -- or an explicit array of diffusion times)."""
        ...
