r"""Compile and run a sampler given by name or object: the front doors :func:`plan` and
:func:`sample`.

Names are looked up in :data:`splitsde.diffusion.registry.SAMPLERS`; compiling goes through
:meth:`~splitsde.diffusion.protocols.SamplerProtocol.plan` and running through
:meth:`~splitsde.diffusion.protocols.PlanProtocol.run`, the same for every family.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from splitsde.diffusion.processes import ForwardProcess
from splitsde.diffusion.processes import process as get_process
from splitsde.diffusion.protocols import PlanProtocol, SampleResult, SamplerProtocol
from splitsde.diffusion.registry import sampler
from splitsde.diffusion.stability import check_plan

__all__ = ["plan", "sample"]


def plan(
    sampler_: str | SamplerProtocol,
    process: str | ForwardProcess,
    score: Callable[..., Any],
    *,
    nfe: int | None = None,
    steps: int | None = None,
    grid: str | Sequence[float] | np.ndarray | None = None,
    eps: float | None = None,
    denoise: bool = True,
    check_stability: bool = True,
    **integrator_options: Any,
) -> PlanProtocol:
    """Compile a sampler for a process, a score callable and a grid.

    Give exactly one of ``nfe`` (a budget: the most steps that fit, counting the denoising
    step) and ``steps``, unless ``grid`` is an explicit array of diffusion times. ``grid=None``
    is the sampler's recommended grid for the process's family
    (:mod:`splitsde.diffusion.defaults`). ``check_stability`` propagates the first steps on the
    stationary linearisation and warns (:class:`~splitsde.diffusion.stability.StabilityWarning`)
    when they amplify perturbations (:mod:`splitsde.diffusion.stability`; stepwise samplers
    only). Adaptive solves (``pf-dopri5``) take only a budget. Every plan runs the same way
    (:class:`~splitsde.diffusion.protocols.PlanProtocol`); ``integrator_options`` go to the
    step integrators of stepwise samplers.
    """
    s = sampler(sampler_)
    out = s.plan(
        get_process(process),
        score,
        nfe=nfe,
        steps=steps,
        grid=grid,
        eps=eps,
        denoise=denoise,
        **integrator_options,
    )
    if check_stability:
        check_plan(out)
    return out


def sample(
    sampler_: str | SamplerProtocol,
    process: str | ForwardProcess,
    score: Callable[..., Any],
    n: int | None = None,
    *,
    shape: int | Sequence[int] | None = None,
    y0: Mapping[str, torch.Tensor] | None = None,
    nfe: int | None = None,
    steps: int | None = None,
    grid: str | Sequence[float] | np.ndarray | None = None,
    eps: float | None = None,
    denoise: bool = True,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    device: Any = "cpu",
    progress: bool | None = None,
) -> SampleResult:
    """Draw ``n`` samples: prior at ``T`` (or ``y0``), the sampler over the grid (default: its
    recommended grid), then the denoising step. ``shape`` is the shape of one data sample
    (``(d,)`` or ``(C, H, W)``)."""
    proc = get_process(process)
    p = plan(sampler_, proc, score, nfe=nfe, steps=steps, grid=grid, eps=eps, denoise=denoise)
    if y0 is None:
        if n is None or shape is None:
            raise ValueError("give n= and shape= (or an initial state y0=)")
        gen = torch.Generator(device=device).manual_seed(seed + 7919)
        y0 = proc.prior(n, shape, generator=gen, dtype=dtype, device=device)
    return p.run(y0, seed=seed, progress=progress)
