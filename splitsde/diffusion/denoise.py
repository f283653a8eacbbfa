r"""The final denoising step shared by every sampler family.

After the sampler reaches :math:`t = \varepsilon`, one noise-free Euler step of the reverse
drift at :math:`\lambda = 1` takes the state to :math:`t = 0` (as in the reference
implementations: Song et al., ICLR 2021; Dockhorn et al., ICLR 2022). It is its own one-step
integrator, run by :func:`splitsde.integrate` like every other step.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from splitsde.runtime.integrate import Result, integrate
from splitsde.runtime.integrator import Integrator
from splitsde.symbolic.solve import EulerMaruyama

if TYPE_CHECKING:
    from splitsde.diffusion.processes import ForwardProcess

__all__ = ["denoise", "denoise_grid", "denoiser"]


def denoiser(process: ForwardProcess, score: Callable[..., Any], **kwargs: Any) -> Integrator:
    """The one-step noise-free Euler integrator of the denoising step (the drift at
    :math:`\\lambda = 1`); ``kwargs`` go to :class:`~splitsde.runtime.integrator.Integrator`."""
    rev = process.reverse(1.0)
    sde = rev.denoiser_sde()
    return Integrator(
        sde,
        "D",
        rev.params_for(sde),
        {"s": score},
        solvers={"D": EulerMaruyama(reason="the denoising step is one Euler step")},
        **kwargs,
    )


def denoise_grid(process: ForwardProcess, grid: np.ndarray) -> np.ndarray:
    """Reverse times of the denoising step after a run over the diffusion times ``grid``:
    from :math:`T - t_N` to :math:`T`."""
    return np.array([process.T - grid[-1], process.T])


def denoise(
    integ: Integrator,
    state: Mapping[str, torch.Tensor],
    process: ForwardProcess,
    grid: np.ndarray,
    seed: int,
) -> Result:
    """Run the denoising integrator ``integ`` from ``state`` (the end of a run over ``grid``)."""
    return integrate(integ, state, grid=denoise_grid(process, grid), seed=seed, progress=False)
