r"""Linear stability bounds of a scheme in the step :math:`h`.

On a linear problem one step is :math:`y \mapsto \Phi(h) y + c + N\xi`, and the scheme has a
stationary law (its moments stay bounded) iff the spectral radius :math:`\rho(\Phi(h)) < 1`.
The stability bound is the smallest :math:`h` with :math:`\rho(\Phi(h)) \ge 1`, found by a scan
on a geometric grid followed by bisection.

:func:`stability_bound` works on any function :math:`h \mapsto \Phi(h)` (a lambdified
symbolic map, say); :func:`integrator_stability_bound` probes the compiled step of an
integrator and evaluates a whole batch of step lengths per lowering of the step program
(:func:`~splitsde.analysis.affine.affine_steps`), so that the bisection, too, costs a few
lowerings instead of one per trial step -- which matters for large systems.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from splitsde.analysis.affine import affine_steps
from splitsde.runtime.probe import stability_bound

__all__ = [
    "bisection_rounds",
    "integrator_stability_bound",
    "spectral_radii",
    "stability_bound",
]

_TOL = 1e-12


def _rho(Phi: np.ndarray) -> float:
    return float(np.max(np.abs(np.linalg.eigvals(Phi)))) if Phi.size else 0.0


def _unstable(rho: float) -> bool:
    return not rho < 1.0 - _TOL


def spectral_radii(
    integrator: Any, hs: Sequence[float], shapes: Mapping[str, Any] | None = None
) -> np.ndarray:
    """:math:`\\rho(\\Phi(h))` of the integrator's compiled step for every ``h`` in ``hs``
    (one lowering of the step program for an autonomous step)."""
    return np.array([_rho(m.Phi) for m in affine_steps(integrator, hs, shapes)])


def integrator_stability_bound(
    integrator: Any,
    h_min: float,
    h_max: float,
    *,
    points: int = 80,
    per_round: int = 15,
    shapes: Mapping[str, Any] | None = None,
    progress: Callable[[int], None] | None = None,
) -> float | None:
    r"""The stability bound of the integrator's compiled step on :math:`[h_{min}, h_{max}]`
    (as :func:`stability_bound`, to relative precision :math:`10^{-12}`): one batch of
    ``points`` geometric steps, then rounds of ``per_round`` equally spaced steps inside the
    bracket, each batch a single probe of the step program. ``progress(n)`` is called after
    each batch with the number of batches done. ``None`` if stable on the whole range.

    Raises :class:`~splitsde.analysis.affine.NotAffineError` for a nonlinear problem.
    """
    grid = np.geomspace(h_min, h_max, points)
    rho = spectral_radii(integrator, grid, shapes)
    done = 1
    if progress is not None:
        progress(done)
    bad = np.flatnonzero([_unstable(r) for r in rho])
    if not len(bad):
        return None
    i = int(bad[0])
    if i == 0:
        return float(grid[0])
    lo, hi = float(grid[i - 1]), float(grid[i])
    while hi - lo > _TOL * hi:
        trial = np.linspace(lo, hi, per_round + 2)[1:-1]
        rho = spectral_radii(integrator, trial, shapes)
        done += 1
        if progress is not None:
            progress(done)
        flags = [_unstable(r) for r in rho]
        j = flags.index(True) if True in flags else len(trial)
        lo = float(trial[j - 1]) if j > 0 else lo
        hi = float(trial[j]) if j < len(trial) else hi
    return hi


def bisection_rounds(h_min: float, h_max: float, points: int = 80, per_round: int = 15) -> int:
    """Upper bound on the number of probe batches :func:`integrator_stability_bound` needs
    (for stating the cost up front)."""
    ratio = (h_max / h_min) ** (1.0 / max(points - 1, 1)) - 1.0  # relative bracket width
    rounds = 0
    while ratio > _TOL:
        ratio /= per_round + 1
        rounds += 1
    return 1 + rounds
