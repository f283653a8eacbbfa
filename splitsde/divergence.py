r"""Divergence: when a run blows up, say where and whether the step size is to blame.

A run *diverges* when its state leaves every bounded set: its values become non-finite
(:class:`~splitsde.compose.integrator.NonFiniteError`), or, with ``max_abs=`` given to
:func:`splitsde.integrate`, some element of the state exceeds that magnitude
(:class:`DivergenceError`). Both are found at the run's checks and replayed from the last good
snapshot to name the first step at fault.

For a linear problem the cause is decided exactly. One step of the compiled integrator is the
affine map :math:`y \mapsto \Phi(h)\,y + c + N\xi` (probed by
:func:`~splitsde.analysis.affine.affine_step`), and the scheme is stable at step :math:`h` iff
the spectral radius :math:`\rho(\Phi(h)) < 1`. :func:`linear_stability` returns
:math:`\rho(\Phi(h))` and, when the scheme is unstable at :math:`h`, the stability bound -- the
smallest step with :math:`\rho \ge 1`, from :func:`~splitsde.analysis.certify.stability_bound`
-- so an error can say "h = 2.5 exceeds the stability bound h < 2" instead of "may exceed".
For BAOAB on the harmonic oscillator :math:`\ddot q = -\omega^2 q` the bound is
:math:`h\omega < 2` (Leimkuhler & Matthews, *Molecular Dynamics*, Springer 2015, sec. 7.4).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from splitsde.compose.integrator import NonFiniteError

__all__ = ["DivergenceError", "Stability", "linear_stability", "stability_hint"]

#: Largest per-walker state size for which an error message probes the exact bound (the probe
#: runs one step on ``1 + 2 D`` states and takes eigenvalues of a ``D x D`` matrix).
MAX_PROBE_SIZE = 64


class DivergenceError(NonFiniteError):
    """The state grew beyond ``max_abs``; names the step and the block."""


@dataclass(frozen=True)
class Stability:
    """Exact stability of a linear scheme at one step size."""

    h: float
    spectral_radius: float
    #: Smallest unstable step size (``None`` when stable at ``h``).
    bound: float | None

    @property
    def stable(self) -> bool:
        return self.spectral_radius < 1.0 - 1e-12

    def describe(self) -> str:
        if self.stable:
            return (
                f"h = {self.h:.6g} is within the scheme's stability bound on this linear "
                f"system (spectral radius of the one-step map {self.spectral_radius:.6g} < 1)"
            )
        bound = f" h < {self.bound:.6g}" if self.bound is not None else ""
        return (
            f"h = {self.h:.6g} exceeds the scheme's stability bound{bound} on this linear "
            f"system (spectral radius of the one-step map {self.spectral_radius:.6g} >= 1)"
        )


def linear_stability(
    integrator: Any, h: float, shapes: Mapping[str, Sequence[int]] | None = None
) -> Stability | None:
    """The exact stability of ``integrator`` at step ``h`` when its step is affine and
    autonomous (``None`` otherwise); ``shapes`` gives the per-walker shape of each block."""
    from splitsde.analysis.affine import affine_step, is_autonomous
    from splitsde.analysis.certify import stability_bound
    from splitsde.errors import SplitsdeError

    if not (h > 0 and math.isfinite(h)):
        return None
    try:
        if not is_autonomous(integrator) or integrator.program.uniform_draws:
            return None
        if integrator.program.groups:  # a Metropolis test is not affine
            return None
        rho = affine_step(integrator, 0.0, h, shapes).spectral_radius
        if rho < 1.0 - 1e-12:
            return Stability(h, rho, None)
        bound = stability_bound(
            lambda x: affine_step(integrator, 0.0, x, shapes).Phi, h * 1e-3, h, points=40
        )
    except (SplitsdeError, ValueError, RuntimeError, TypeError):
        return None  # not linear (or not probeable): no exact statement
    return Stability(h, rho, bound)


def stability_hint(integrator: Any, state: Sequence[Any], h: float) -> tuple[str, bool | None]:
    """A sentence on whether the step size explains a blow-up at step ``h``, and whether the
    scheme is stable there (``None`` when unknown).

    Exact (with the bound) for linear problems of at most :data:`MAX_PROBE_SIZE` values per
    walker; otherwise the generic "may exceed".
    """
    shapes = {b: tuple(x.shape[1:]) for b, x in zip(integrator.block_names, state)}
    size = sum(math.prod(s) for s in shapes.values())
    stab = linear_stability(integrator, h, shapes) if size <= MAX_PROBE_SIZE else None
    if stab is None:
        return f"the step size h = {h:.6g} may exceed the scheme's stability bound", None
    return stab.describe(), stab.stable
