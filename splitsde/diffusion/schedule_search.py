r"""Search for the schedule of a sampler that minimises the exact KL divergence on Gaussian data.

The free variables are the :math:`N` log-time increments of the grid, written as a softmax of
:math:`N` unconstrained numbers :math:`w`:

.. math:: \log t_i = \log T - (\log T - \log\varepsilon)\,\sum_{k < i}
          \frac{e^{w_k}}{\sum_l e^{w_l}},

so every candidate is a valid grid from :math:`T` to :math:`\varepsilon`. The objective is
:math:`\log\mathrm{KL}` of the sampler's exact output law (:func:`splitsde.diffusion.comparison
.exact_kl`: the compiled steps propagated by the exact analysis, from the stationary prior),
minimised by Nelder--Mead from a named grid. The training data are deliberately *not* the
data the result is judged on: :func:`training_data` is a 32-D Gaussian whose variances are
log-spaced over :math:`[0.002, 2]`, wider than the 64-D selection target's :math:`[0.01, 1]`.

Reference: Sabour, Fidler & Kreis, *Align Your Steps: optimizing sampling schedules in diffusion
models*, ICML 2024 (schedules optimised per sampler and model; here the objective is the exact
KL on Gaussian data instead of a bound on real data); Nelder & Mead, *A simplex method for
function minimization*, Comput. J. 7 (1965).
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from splitsde.diffusion.comparison import exact_kl
from splitsde.diffusion.grids import check_grid, time_grid
from splitsde.diffusion.planning import plan
from splitsde.diffusion.processes import ForwardProcess
from splitsde.diffusion.processes import process as get_process
from splitsde.diffusion.protocols import SamplerProtocol
from splitsde.diffusion.registry import sampler as get_sampler
from splitsde.diffusion.stability import StabilityWarning
from splitsde.diffusion.targets import GaussianData

__all__ = ["ScheduleSearch", "optimize_schedule", "schedule_kl", "training_data"]

#: The training data of the stored schedules (:func:`training_data`).
TRAINING_DATA = {"dim": 32, "seed": 5, "condition": 1000.0, "scale": 2.0}

_FAILED = 50.0  # log KL of a candidate whose law is not finite (e^50: far above any result)


def training_data(dim: int | None = None) -> GaussianData:
    """The Gaussian the stored schedules were optimised on (:data:`TRAINING_DATA`; ``dim``
    overrides the dimension, e.g. for a quick search)."""
    spec = dict(TRAINING_DATA)
    if dim is not None:
        spec["dim"] = int(dim)
    return GaussianData.random(
        spec["dim"], seed=spec["seed"], condition=spec["condition"], scale=spec["scale"]
    )


@dataclass
class ScheduleSearch:
    """The result of :func:`optimize_schedule`."""

    sampler: str
    process: str
    steps: int
    start: str
    grid: np.ndarray
    kl: float  # on the training data, at the optimum
    kl_start: float  # on the training data, on the start grid
    evaluations: int
    seconds: float
    history: list[float] = field(default_factory=list, repr=False)

    def to_json(self) -> dict[str, Any]:
        return {
            "sampler": self.sampler,
            "process": self.process,
            "steps": self.steps,
            "start": self.start,
            "grid": [float(x) for x in self.grid],
            "kl": self.kl,
            "kl_start": self.kl_start,
            "evaluations": self.evaluations,
            "seconds": self.seconds,
        }


def _grid_of(w: np.ndarray, T: float, eps: float) -> np.ndarray:
    f = np.exp(w - w.max())
    c = np.concatenate([[0.0], np.cumsum(f / f.sum())])
    ts = np.exp(math.log(T) - (math.log(T) - math.log(eps)) * c)
    ts[0], ts[-1] = T, eps
    return ts


def schedule_kl(
    sampler_: str | SamplerProtocol,
    process: str | ForwardProcess,
    grid: np.ndarray,
    data: GaussianData,
) -> float:
    """The exact KL of ``sampler_`` on ``data`` over the explicit ``grid`` (``inf`` if the law
    is not finite; stability warnings are not raised: a blow-up shows in the KL)."""
    proc = get_process(process)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", StabilityWarning)
        p = plan(sampler_, proc, data.score(proc), grid=grid, check_stability=False)
    return exact_kl(p, data)


def optimize_schedule(
    sampler_: str | SamplerProtocol,
    process: str | ForwardProcess,
    steps: int,
    *,
    data: GaussianData | None = None,
    start: str | np.ndarray = "cubic",
    max_evaluations: int = 2000,
    eps: float | None = None,
) -> ScheduleSearch:
    """Minimise the exact KL of ``sampler_`` on ``process`` over grids of ``steps`` steps,
    starting from ``start`` (a named grid, or a grid of diffusion times with ``steps`` steps,
    e.g. a shorter optimized schedule interpolated), on ``data`` (default
    :func:`training_data`). Deterministic (Nelder--Mead, no random restarts)."""
    from scipy.optimize import minimize

    if int(steps) != steps or steps < 2:
        raise ValueError(f"a schedule search needs at least 2 steps, got {steps}")
    steps = int(steps)
    proc = get_process(process)
    s = get_sampler(sampler_)
    data = training_data() if data is None else data
    eps = proc.eps if eps is None else float(eps)
    history: list[float] = []

    def objective(w: np.ndarray) -> float:
        kl = schedule_kl(s, proc, _grid_of(w, proc.T, eps), data)
        val = math.log(kl) if math.isfinite(kl) and kl > 0 else _FAILED
        history.append(val)
        return val

    if isinstance(start, str):
        g0 = time_grid(proc, start, steps, eps, sampler=s.name)
        start_name = start
    else:
        g0 = check_grid(proc, start, eps)
        if len(g0) != steps + 1 or g0[0] != proc.T or g0[-1] != eps:
            raise ValueError(f"the start grid must run from T to eps in {steps} steps")
        start_name = "given"
    w0 = np.log(-np.diff(np.log(g0)))
    started = time.perf_counter()
    f0 = objective(w0)
    res = minimize(
        objective,
        w0,
        method="Nelder-Mead",
        options={"maxfev": int(max_evaluations), "xatol": 1e-4, "fatol": 1e-5, "adaptive": True},
    )
    best = min(f0, float(res.fun))
    w = res.x if float(res.fun) <= f0 else w0
    return ScheduleSearch(
        sampler=s.name,
        process=proc.name,
        steps=steps,
        start=start_name,
        grid=check_grid(proc, _grid_of(w, proc.T, eps), eps),
        kl=math.exp(best),
        kl_start=math.exp(f0),
        evaluations=len(history),
        seconds=time.perf_counter() - started,
        history=history,
    )
