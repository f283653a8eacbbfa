r"""The one registry of diffusion samplers, and the front doors that look names up in it.

Every sampler family lives in its own module and exposes its members as a plain dictionary;
this module imports the families and lists them, in this order, in :data:`SAMPLERS` -- a
read-only mapping: no module adds to it at import time, and a name is defined once (a
duplicate is an error when the registry is built).

======================  =================================================================
family                  module
======================  =================================================================
splitting, reduced,     :mod:`splitsde.diffusion.samplers` (``em``, ``sscs``, ``oba``,
naive                   ``reduced-oba``, ``sps``, ...)
exponential             :mod:`splitsde.diffusion.exponential` (``ddim``, ``deis-*``,
integrators             ``rhork-*``, ``ipndm``, ``ei-sde``, ``ddpm``)
Poisson midpoint        :mod:`splitsde.diffusion.midpoint` (``pmm1-k20``, ...)
probability-flow ODE    :mod:`splitsde.diffusion.pfode` (``pf-dopri5``, ``pf-rk4``)
======================  =================================================================

Every entry satisfies :class:`~splitsde.diffusion.protocols.SamplerProtocol`; :func:`plan`
compiles any of them through that protocol and :func:`sample` runs the plan.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any

import numpy as np
import torch

from splitsde.diffusion.exponential import EXPONENTIAL_SAMPLERS
from splitsde.diffusion.midpoint import POISSON_SAMPLERS
from splitsde.diffusion.pfode import PFODE_SAMPLERS
from splitsde.diffusion.processes import ForwardProcess
from splitsde.diffusion.processes import process as get_process
from splitsde.diffusion.protocols import PlanProtocol, SampleResult, SamplerProtocol
from splitsde.diffusion.samplers import SPLITTING_SAMPLERS

__all__ = ["FAMILIES", "SAMPLERS", "plan", "sample", "sampler"]

#: The sampler families, by name, in the order of :data:`SAMPLERS`.
FAMILIES: Mapping[str, Mapping[str, SamplerProtocol]] = MappingProxyType(
    {
        "splitting": MappingProxyType(SPLITTING_SAMPLERS),
        "exponential": MappingProxyType(EXPONENTIAL_SAMPLERS),
        "poisson-midpoint": MappingProxyType(POISSON_SAMPLERS),
        "pf-ode": MappingProxyType(PFODE_SAMPLERS),
    }
)


def _collect(families: Mapping[str, Mapping[str, SamplerProtocol]]) -> dict[str, SamplerProtocol]:
    out: dict[str, SamplerProtocol] = {}
    for family, members in families.items():
        for name, s in members.items():
            if name != s.name:
                raise ValueError(f"sampler family {family}: entry {name!r} holds {s.name!r}")
            if name in out:
                raise ValueError(f"sampler name {name!r} is defined twice (family {family})")
            out[name] = s
    return out


#: Every registered sampler by name (read-only).
SAMPLERS: Mapping[str, SamplerProtocol] = MappingProxyType(_collect(FAMILIES))


def sampler(name: str | SamplerProtocol, **options: Any) -> SamplerProtocol:
    """A registered sampler by name (or a sampler object as is), with options applied by the
    sampler's :meth:`~splitsde.diffusion.protocols.SamplerProtocol.configure`: for the
    splitting family ``lam`` (noise scales), ``lam_s`` (the data-block noise scale of SPS),
    ``eval_at`` / ``time_label`` (reduced variants), ``solvers``."""
    if isinstance(name, str):
        key = name.strip().lower()
        if key not in SAMPLERS:
            raise ValueError(f"unknown sampler {name!r}; samplers: {', '.join(SAMPLERS)}")
        s = SAMPLERS[key]
    else:
        s = name
    return s.configure(**options) if options else s


def plan(
    sampler_: str | SamplerProtocol,
    process: str | ForwardProcess,
    score: Callable[..., Any],
    *,
    nfe: int | None = None,
    steps: int | None = None,
    grid: str | Sequence[float] | np.ndarray = "uniform",
    eps: float | None = None,
    denoise: bool = True,
    **integrator_options: Any,
) -> PlanProtocol:
    """Compile a sampler for a process, a score callable and a grid.

    Give exactly one of ``nfe`` (a budget: the most steps that fit, counting the denoising
    step) and ``steps``, unless ``grid`` is an explicit array of diffusion times. Adaptive
    solves (``pf-dopri5``) take only a budget. Every plan runs the same way
    (:class:`~splitsde.diffusion.protocols.PlanProtocol`); ``integrator_options`` go to the
    step integrators of stepwise samplers.
    """
    s = sampler(sampler_)
    return s.plan(
        get_process(process),
        score,
        nfe=nfe,
        steps=steps,
        grid=grid,
        eps=eps,
        denoise=denoise,
        **integrator_options,
    )


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
    grid: str | Sequence[float] | np.ndarray = "uniform",
    eps: float | None = None,
    denoise: bool = True,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    device: Any = "cpu",
    progress: bool | None = None,
) -> SampleResult:
    """Draw ``n`` samples: prior at ``T`` (or ``y0``), the sampler over the grid, then the
    denoising step. ``shape`` is the shape of one data sample (``(d,)`` or ``(C, H, W)``)."""
    proc = get_process(process)
    p = plan(sampler_, proc, score, nfe=nfe, steps=steps, grid=grid, eps=eps, denoise=denoise)
    if y0 is None:
        if n is None or shape is None:
            raise ValueError("give n= and shape= (or an initial state y0=)")
        gen = torch.Generator(device=device).manual_seed(seed + 7919)
        y0 = proc.prior(n, shape, generator=gen, dtype=dtype, device=device)
    return p.run(y0, seed=seed, progress=progress)
