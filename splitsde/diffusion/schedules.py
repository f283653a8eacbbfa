r"""Optimized sampling schedules: grids whose times minimise the exact KL divergence on Gaussian
data, stored per sampler and process (grid ``"optimized"``, resolved by
:func:`splitsde.diffusion.grids.optimized_schedule`).

The named grids of :mod:`splitsde.diffusion.grids` are one-parameter families; the best
sampler on PSLD (``cdeis3``) is so sensitive to where its few steps fall that at 10 NFE the
difference between two of them is more than a factor 10 in KL. Following *Align Your Steps* (Sabour,
Fidler & Kreis, ICML 2024), which optimises the schedule of a given sampler and model instead
of fixing a formula, an optimized schedule here is the grid
:math:`T = t_0 > t_1 > \dots > t_N = \varepsilon` that minimises the **exact** KL divergence of
the sampler's output law (:mod:`splitsde.diffusion.metrics`, no Monte Carlo) on *training*
Gaussian data (:func:`splitsde.diffusion.schedule_search.training_data`: 32-D, variances
log-spaced over :math:`[0.002, 2]`), found by :func:`splitsde.diffusion.schedule_search
.optimize_schedule`. The grids are then **evaluated on other data** (the 64-D Gaussian of the
selection, three more random Gaussians, the 8-mode ring): ``docs/diffusion-conjugate.md`` has
the tables and the command. The recommended grid of a sampler is its optimized schedule only
at the stored numbers of steps (:func:`splitsde.diffusion.defaults.recommended_grid`).

A stored schedule has a fixed number of steps. For another number of steps the nearest stored
schedule is interpolated linearly in :math:`\log t` against the fraction of steps taken (the
interpolation of Align Your Steps); interpolated schedules are not optimal, and the docs record
how much of the gain they keep.

:data:`OPTIMIZED_SCHEDULES` is written from ``benchmarks/optimized_schedules.py``'s JSON
(``tests/diffusion/test_schedules.py`` checks that the two agree).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from splitsde.diffusion.processes import ForwardProcess

__all__ = ["OPTIMIZED_SCHEDULES", "has_optimized_schedule", "interpolate_schedule"]

#: ``{sampler: {process name: {steps: diffusion times T -> eps}}}`` (float64, written from
#: ``benchmarks/results/optimized_schedules.json``).
OPTIMIZED_SCHEDULES: dict[str, dict[str, dict[int, tuple[float, ...]]]] = {
    "cdeis2": {
        "psld-cifar10": {
            9: (
                1.0,
                0.633159584459276,
                0.4773349114550796,
                0.16904325068899173,
                0.12122008328767757,
                0.08708064426997701,
                0.05883179022365018,
                0.031678501462026956,
                0.012111740920950478,
                0.001,
            ),
            19: (
                1.0,
                0.8553486687350232,
                0.5836896251628787,
                0.5287889171418194,
                0.29619051705391214,
                0.26091590158062217,
                0.20232168971637227,
                0.1829063460110842,
                0.157868208559495,
                0.136918369114513,
                0.12371985735789574,
                0.09818628950001104,
                0.07974626510050177,
                0.06121341943919764,
                0.039940408466442597,
                0.03177119571599672,
                0.024335452360765657,
                0.011474322753645379,
                0.0036652165614646,
                0.001,
            ),
        },
    },
    "cdeis3": {
        "cld": {
            9: (
                1.0,
                0.7140031897423126,
                0.30819621368432576,
                0.26741930124748015,
                0.17068536039315357,
                0.09424255084881697,
                0.045452979819314086,
                0.019115299685351396,
                0.005487639853204687,
                0.001,
            ),
            19: (
                1.0,
                0.8997111761361917,
                0.7747280405255386,
                0.5593467148482317,
                0.42247065570663805,
                0.3522320449984013,
                0.32515374982557205,
                0.26714204986339274,
                0.2081394096626404,
                0.1444713554911326,
                0.1003445830461012,
                0.06413183184554407,
                0.04311297227828937,
                0.028563504522667194,
                0.018442668693082285,
                0.013055684116754401,
                0.008118275602913965,
                0.004763060246676493,
                0.0022684637841935223,
                0.001,
            ),
        },
        "psld-cifar10": {
            9: (
                1.0,
                0.7363180589877486,
                0.37689477752801265,
                0.30731451454157716,
                0.25479956717531527,
                0.14466183958220802,
                0.07764169385353008,
                0.03455075368996378,
                0.009309469408426111,
                0.001,
            ),
            19: (
                1.0,
                0.7414802773274846,
                0.6739620485376795,
                0.3736304254351087,
                0.32018324201114545,
                0.2770803730760864,
                0.21735668210379575,
                0.17761078683774864,
                0.1278062732320735,
                0.0921170544578979,
                0.07846566347876952,
                0.053055227941195916,
                0.035941240323702744,
                0.030249923055235172,
                0.021718049413625037,
                0.010878325193127703,
                0.00378632549913611,
                0.0018739975173012598,
                0.0010961225404131439,
                0.001,
            ),
        },
    },
}


def has_optimized_schedule(sampler: str, process: ForwardProcess) -> bool:
    """Whether a schedule of ``sampler`` on ``process`` is stored."""
    return bool(OPTIMIZED_SCHEDULES.get(sampler, {}).get(process.name))


def interpolate_schedule(grid: np.ndarray, steps: int) -> np.ndarray:
    r"""A schedule of ``steps`` steps from ``grid`` (decreasing diffusion times): :math:`\log t`
    interpolated linearly against the fraction of steps taken (end points kept exactly)."""
    grid = np.asarray(grid, np.float64)
    if int(steps) != steps or steps < 1:
        raise ValueError(f"a grid needs at least one step, got {steps}")
    steps = int(steps)
    n = len(grid) - 1
    if steps == n:
        return grid.copy()
    frac = np.linspace(0.0, 1.0, steps + 1)
    out = np.exp(np.interp(frac, np.linspace(0.0, 1.0, n + 1), np.log(grid)))
    out[0], out[-1] = grid[0], grid[-1]
    return out
