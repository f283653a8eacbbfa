r"""Time grids for sampling, in diffusion time :math:`t \in [\varepsilon, T]`.

A grid is a strictly decreasing float64 array :math:`T = t_0 > t_1 > \dots > t_N = \varepsilon`;
the sampler runs in reverse time :math:`\tau_i = T - t_i` (increasing from 0 to
:math:`T - \varepsilon`), and a final noise-free denoising step covers :math:`[\varepsilon, 0]`.

==============  ==============================================================================
``uniform``     :math:`t_i = T - \tfrac{i}{N}(T - \varepsilon)`
``quadratic``   :math:`t_i = \varepsilon + (T - \varepsilon)(1 - i/N)^2` (small steps near the
                data; the PSLD/CLD reference code's "quadratic" stride)
``cubic``       :math:`t_i = \varepsilon + (T - \varepsilon)(1 - i/N)^3` (the power-of-:math:`t`
                grid with :math:`k = 3`; DEIS, Zhang & Chen 2023)
``edm``         :math:`\sigma_i = \big(\sigma_{\max}^{1/\rho} + \tfrac iN(\sigma_{\min}^{1/\rho}
                - \sigma_{\max}^{1/\rho})\big)^\rho`, :math:`\rho = 7` (Karras et al., NeurIPS
                2022), on the noise level :math:`\sigma(t)` of the process
``logsnr``      uniform in :math:`\log\sigma(t)` (uniform log-SNR, :math:`\mathrm{SNR} =
                \sigma^{-2}`; Lu et al., DPM-Solver, NeurIPS 2022)
``optimized``   the sampler's own schedule, optimized by the exact analysis on Gaussian data
                and stored per process (:mod:`splitsde.diffusion.schedules`; Sabour et al.,
                Align Your Steps, ICML 2024); needs the sampler's name
==============  ==============================================================================

The noise level is :meth:`~splitsde.diffusion.processes.ForwardProcess.noise_level`
(:math:`\sigma_t/\alpha_t` for VP, :math:`\sigma_t` for VE, the data block's
noise-to-signal ratio for PSLD/CLD); it is inverted by vectorised bisection in float64.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from splitsde.base.errors import SplitsdeError
from splitsde.diffusion.schedules import OPTIMIZED_SCHEDULES, interpolate_schedule

if TYPE_CHECKING:
    from splitsde.diffusion.processes import ForwardProcess

__all__ = ["GRIDS", "GridError", "check_grid", "optimized_schedule", "time_grid"]

GRIDS = ("uniform", "quadratic", "cubic", "edm", "logsnr", "optimized")


class GridError(SplitsdeError, ValueError):
    """A time grid that is not strictly decreasing in diffusion time or leaves [eps, T]."""


def time_grid(
    process: ForwardProcess,
    kind: str,
    steps: int,
    eps: float | None = None,
    *,
    rho: float = 7.0,
    sampler: str | None = None,
) -> np.ndarray:
    """A grid of ``steps`` steps (``steps + 1`` diffusion times from ``T`` down to ``eps``);
    ``"optimized"`` is the stored schedule of the sampler named ``sampler``."""
    if kind not in GRIDS:
        raise GridError(f"unknown grid {kind!r}; grids: {', '.join(GRIDS)}")
    if int(steps) != steps or steps < 1:
        raise GridError(f"a grid needs at least one step, got {steps}")
    steps = int(steps)
    if kind == "optimized":
        if sampler is None:
            raise GridError("the optimized grid belongs to a sampler: give sampler=<name>")
        return optimized_schedule(sampler, process, steps, eps)
    T = process.T
    eps = process.eps if eps is None else float(eps)
    if not 0 < eps < T:
        raise GridError(f"eps must lie in (0, T = {T:g}), got {eps}")
    u = np.arange(steps + 1, dtype=np.float64) / steps
    if kind == "uniform":
        ts = T - u * (T - eps)
    elif kind in ("quadratic", "cubic"):
        ts = eps + (T - eps) * (1.0 - u) ** (2 if kind == "quadratic" else 3)
    else:
        smax, smin = float(process.noise_level(T)), float(process.noise_level(eps))
        if not smax > smin > 0:
            raise GridError(
                f"the noise level of {process.name} does not increase from eps to T "
                f"({smin:g} -> {smax:g}); use a uniform or quadratic grid"
            )
        if kind == "edm":
            if not rho > 0:
                raise GridError(f"rho must be positive, got {rho}")
            sig = (smax ** (1 / rho) + u * (smin ** (1 / rho) - smax ** (1 / rho))) ** rho
        else:
            sig = np.exp(np.log(smax) + u * (np.log(smin) - np.log(smax)))
        ts = _invert_noise_level(process, sig[1:-1], eps, T)
        ts = np.concatenate([[T], ts, [eps]])
    ts[0], ts[-1] = T, eps
    return check_grid(process, ts, eps)


def optimized_schedule(
    sampler: str, process: ForwardProcess, steps: int, eps: float | None = None
) -> np.ndarray:
    """The optimized schedule of ``sampler`` on ``process`` with ``steps`` steps
    (:mod:`splitsde.diffusion.schedules`): the stored one, or the stored one with the nearest
    number of steps interpolated in log t."""
    stored = OPTIMIZED_SCHEDULES.get(sampler, {}).get(process.name, {})
    if not stored:
        have = sorted(f"{s} on {p}" for s, by in OPTIMIZED_SCHEDULES.items() for p in by)
        raise GridError(
            f"no optimized schedule of {sampler} on {process.name} is stored (optimized "
            f"schedules: {', '.join(have) or 'none'}); compute one with "
            "splitsde.diffusion.optimize_schedule or choose a named grid"
        )
    if int(steps) != steps or steps < 1:
        raise GridError(f"a grid needs at least one step, got {steps}")
    nearest = min(stored, key=lambda k: (abs(k - steps), -k))
    grid = np.array(stored[nearest], np.float64)
    want = process.eps if eps is None else float(eps)
    if abs(grid[0] - process.T) > 1e-12 * max(1.0, process.T) or abs(grid[-1] - want) > (
        1e-12 * want
    ):
        raise GridError(
            f"the optimized schedule of {sampler} on {process.name} runs from T = {grid[0]:g} "
            f"to eps = {grid[-1]:g}; this plan asks for T = {process.T:g}, eps = {want:g}"
        )
    return check_grid(process, interpolate_schedule(grid, int(steps)), want)


def _invert_noise_level(
    process: ForwardProcess, sig: np.ndarray, lo: float, hi: float
) -> np.ndarray:
    """Times with ``noise_level(t) = sig`` by vectorised bisection (the level increases in t)."""
    a = np.full_like(sig, lo)
    b = np.full_like(sig, hi)
    for _ in range(60):
        mid = 0.5 * (a + b)
        up = process.noise_level(mid) < sig
        a = np.where(up, mid, a)
        b = np.where(up, b, mid)
        if np.all(b - a <= 4 * np.finfo(np.float64).eps * np.maximum(1.0, b)):
            break
    return 0.5 * (a + b)


def check_grid(
    process: ForwardProcess, grid: Sequence[float] | Any, eps: float | None = None
) -> np.ndarray:
    """Validate a user grid in diffusion time: 1-D, finite, strictly decreasing, inside
    ``[eps, T]``; returns it as float64."""
    g = np.asarray(grid, dtype=np.float64)
    T = process.T
    eps = process.eps if eps is None else float(eps)
    if g.ndim != 1 or g.size < 2:
        raise GridError("a grid is a 1-D sequence of at least two diffusion times")
    if not np.all(np.isfinite(g)):
        raise GridError("the grid has non-finite times")
    d = np.diff(g)
    if not np.all(d < 0):
        i = int(np.argmax(d >= 0))
        raise GridError(
            f"the grid must be strictly decreasing in diffusion time (from T to eps); it is not "
            f"at index {i}: {g[i]:.10g} -> {g[i + 1]:.10g}"
        )
    tol = 1e-12 * max(1.0, T)
    if g[0] > T + tol or g[-1] < eps - tol:
        raise GridError(
            f"the grid leaves [eps, T] = [{eps:g}, {T:g}]: it runs from {g[0]:.10g} to {g[-1]:.10g}"
        )
    return g
