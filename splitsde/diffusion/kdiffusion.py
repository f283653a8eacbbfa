r"""An adapter with k-diffusion's sampling convention.

k-diffusion (Crowson) samples a *denoiser* :math:`D(x, \sigma)` -- the estimate of the clean
data from :math:`x = x_0 + \sigma n` -- over a decreasing list of noise levels ``sigmas`` ending
at 0::

    x = sample(model, x, sigmas, sampler="heun", extra_args=..., callback=..., noise_sampler=...)

with ``model(x, sigma * s_in, **extra_args)``. Here the same call runs splitsde samplers on the
:math:`\sigma`-parametrised (EDM / variance-exploding) process

.. math:: dx = \sqrt{2t}\,dW, \qquad p(x_t \mid x_0) = N(x_0, t^2 I), \quad \sigma(t) = t,

(Karras et al., EDM, NeurIPS 2022) with the score :math:`s = (D(x, \sigma) - x)/\sigma^2`, so an
existing pipeline swaps in any splitsde sampler. The noise levels are the diffusion times; each
step ``sigmas[i] -> sigmas[i+1] > 0`` is a step of the chosen sampler run by
:func:`splitsde.integrate`, and the last step to ``sigma = 0`` is an Euler step of the
probability-flow ODE (which lands on the denoised estimate), as in k-diffusion.

==================  ========================================================================
``sampler``         splitsde sampler on the EDM process
==================  ========================================================================
``euler``           ``pf-euler``: Euler on the probability-flow ODE (= DDIM in :math:`\sigma`)
``heun``            ``rhork-heun``: Heun in :math:`\rho = \sigma` (EDM's second-order sampler)
``euler_ancestral`` ``ddpm``: stochastic DDIM with :math:`\eta = 1` (k-diffusion's ancestral
                    Euler step with :math:`\sigma_{\mathrm{up}}`, :math:`\sigma_{\mathrm{down}}`)
any other name      the registered splitsde sampler of that name (``deis-logrho2``,
                    ``ipndm``, ``rhork-rk4``, ``em``, ...)
==================  ========================================================================

``noise_sampler(sigma, sigma_next)`` supplies the Gaussians of stochastic samplers (default: a
seeded generator); ``callback`` receives ``{"x", "i", "sigma", "sigma_hat", "denoised"}`` after
every step. Reference: Crowson, k-diffusion (github.com/crowsonkb/k-diffusion); Karras et al.,
*Elucidating the design space of diffusion-based generative models*, NeurIPS 2022.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import sympy
import torch

from splitsde.diffusion.planning import plan as make_plan
from splitsde.diffusion.processes import ForwardProcess
from splitsde.diffusion.registry import sampler as get_sampler
from splitsde.runtime.integrate import integrate
from splitsde.runtime.noise import GaussianNoise, NoiseSource
from splitsde.runtime.observers import Observer
from splitsde.symbolic.symbols import Block, t

__all__ = ["ALIASES", "Denoiser", "edm", "sample"]

#: k-diffusion sampler names and the splitsde samplers they run.
ALIASES = {"euler": "pf-euler", "heun": "rhork-heun", "euler_ancestral": "ddpm"}


def edm(sigma_max: float = 80.0, sigma_min: float = 0.002) -> ForwardProcess:
    r"""The :math:`\sigma`-parametrised process :math:`dx = \sqrt{2t}\,dW` on
    :math:`t = \sigma \in [\sigma_{\min}, \sigma_{\max}]` (kernel :math:`N(x_0, t^2 I)`)."""
    if not 0 < sigma_min < sigma_max:
        raise ValueError(f"need 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
    x = Block("x")
    return ForwardProcess(
        "edm",
        [x],
        [[0]],
        [sympy.sqrt(2 * t)],
        {},
        T=float(sigma_max),
        eps=float(sigma_min),
        description="sigma-parametrised (EDM / k-diffusion) process, sigma(t) = t",
        reference="Karras, Aittala, Aila & Laine, EDM, NeurIPS 2022",
    )


class Denoiser:
    r"""A k-diffusion denoiser ``model(x, sigma, **extra_args)`` as the score field of the EDM
    process: :math:`s = (D(x, \sigma) - x)/\sigma^2` at :math:`\sigma = T - \tau`. Keeps the
    last denoised estimate per noise level for the callback."""

    def __init__(
        self, model: Callable[..., torch.Tensor], T: float, extra_args: Mapping[str, Any]
    ) -> None:
        self.model = model
        self.T = float(T)
        self.extra_args = dict(extra_args)
        self.denoised: dict[float, torch.Tensor] = {}

    def __call__(self, x: torch.Tensor, tau: float) -> torch.Tensor:
        sigma = self.T - float(tau)
        s_in = torch.full((x.shape[0],), sigma, dtype=x.dtype, device=x.device)
        d = self.model(x, s_in, **self.extra_args)
        if not isinstance(d, torch.Tensor) or d.shape != x.shape:
            got = tuple(d.shape) if isinstance(d, torch.Tensor) else type(d).__name__
            raise ValueError(f"the denoiser returned {got}, expected shape {tuple(x.shape)}")
        d = d.to(x.dtype)
        self.denoised[round(sigma, 12)] = d
        return (d - x) / sigma**2


class _SigmaNoise(NoiseSource):
    """Gaussians from ``noise_sampler(sigma, sigma_next)`` (k-diffusion's convention)."""

    takes_times = True

    def __init__(self, noise_sampler: Callable[[Any, Any], torch.Tensor], T: float) -> None:
        self.noise_sampler = noise_sampler
        self.T = T

    def bind(self, shapes, like):
        def draw(shape: torch.Size, start: float, stop: float) -> torch.Tensor:
            z = self.noise_sampler(
                torch.tensor(self.T - start, dtype=like.dtype),
                torch.tensor(self.T - stop, dtype=like.dtype),
            )
            return z.to(dtype=like.dtype, device=like.device).expand(shape)

        return [lambda a, b, s=s: draw(s, a, b) for s in shapes]


class _Callback(Observer):
    name = "k-diffusion callback"

    def __init__(self, fn: Callable[[dict], Any], sigmas: np.ndarray, den: Denoiser) -> None:
        self.fn = fn
        self.sigmas = sigmas
        self.den = den

    def on_step(self, step: int, t: float, state: Mapping[str, torch.Tensor]) -> None:
        sigma = float(self.sigmas[step])
        self.fn(
            {
                "x": state["x"],
                "i": step,
                "sigma": sigma,
                "sigma_hat": sigma,
                "denoised": self.den.denoised.get(round(sigma, 12)),
            }
        )


def sample(
    model: Callable[..., torch.Tensor],
    x: torch.Tensor,
    sigmas: Any,
    sampler: str = "euler",
    *,
    extra_args: Mapping[str, Any] | None = None,
    callback: Callable[[dict], Any] | None = None,
    disable: bool | None = None,
    noise_sampler: Callable[[Any, Any], torch.Tensor] | None = None,
    seed: int = 0,
) -> torch.Tensor:
    """Sample with k-diffusion's convention: ``x`` is the initial noise *already scaled* by
    ``sigmas[0]``, ``sigmas`` decreases to 0 (a final 0 is optional); returns the samples."""
    sig = np.asarray(
        sigmas.detach().cpu().numpy() if isinstance(sigmas, torch.Tensor) else sigmas,
        dtype=np.float64,
    )
    if sig.ndim != 1 or sig.size < 2:
        raise ValueError("sigmas must be a 1-D sequence of at least two noise levels")
    if not np.all(np.isfinite(sig)) or np.any(np.diff(sig) >= 0) or sig[-1] < 0:
        raise ValueError("sigmas must be finite, non-negative and strictly decreasing")
    positive = sig[sig > 0]
    if positive.size < 2:
        raise ValueError("sigmas need at least two positive noise levels")
    name = ALIASES.get(sampler, sampler)
    s = get_sampler(name)
    if not s.stepwise:
        raise ValueError(f"sampler {name} is a torchdiffeq solve; use a step-wise sampler")
    process = edm(float(positive[0]), float(positive[-1]))
    den = Denoiser(model, process.T, extra_args or {})
    p = make_plan(s, process, den, grid=positive, denoise=False)
    if noise_sampler is not None:
        noise: NoiseSource = _SigmaNoise(noise_sampler, process.T)
    else:
        noise = GaussianNoise(torch.Generator(device=x.device).manual_seed(seed))
    observers = [_Callback(callback, positive, den)] if callback is not None else []
    progress = None if disable is None else not disable
    res = integrate(
        p.integrator,
        {"x": x},
        grid=p.tau,
        noise=noise,
        observers=observers,
        progress=progress,
    )
    out = res.final["x"]
    if sig[-1] == 0:  # the last step to sigma = 0: Euler of the probability-flow ODE
        euler = get_sampler("pf-euler").integrator(process, den)
        grid = np.array([process.T - positive[-1], process.T])
        out = integrate(euler, {"x": out}, grid=grid, seed=0, progress=False).final["x"]
        if callback is not None:
            i = len(positive) - 1
            sigma = float(positive[-1])
            den_i = den.denoised.get(round(sigma, 12))
            callback({"x": out, "i": i, "sigma": sigma, "sigma_hat": sigma, "denoised": den_i})
    return out
