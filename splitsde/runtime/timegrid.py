r"""Time grids computed on demand, so a run's memory does not grow with its number of steps.

A :class:`TimeGrid` holds the float64 times :math:`t_0 < t_1 < \dots < t_n` of a run without
storing them: a uniform grid is :math:`t_k = t_0 + h\,k`, a grid between two end points is
:math:`t_k = k\,(t_1 - t_0)/n + t_0` with :math:`t_n = t_1` (the arithmetic of
:func:`numpy.linspace`), and a grid given as an array is kept as given. Every time is computed
with the same float64 operations as the full array would be, so a value read from the grid is
bit for bit the corresponding element of :meth:`TimeGrid.array`. Step lengths are differences
of neighbouring times, :math:`h_k = t_{k+1} - t_k`.

**Direction.** A ``grid`` is always listed in the order a run visits it. The integrator's own
clock increases, so a grid given to :func:`splitsde.integrate` (``grid=``) is strictly
increasing. Diffusion samplers take ``grid=`` in *diffusion* time :math:`t`, which a sampling
run traverses backwards (:math:`T \to \varepsilon`, strictly decreasing, see
:mod:`splitsde.diffusion.grids`); they convert it to reverse time :math:`\tau = T - t`, which
increases, before the one time loop runs it.

:func:`splitsde.integrate` reads the grid in chunks of steps (:meth:`TimeGrid.chunk`); a
2e9-step run needs no more memory before its first step than a 2-step run.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

__all__ = ["TimeGrid", "time_grid"]


class TimeGrid:
    """Base class: ``len(grid)`` times, ``grid[k]`` the k-th (a Python float)."""

    #: Number of steps (intervals), ``len(self) - 1``.
    steps: int

    def __len__(self) -> int:
        return self.steps + 1

    def times(self, a: int, b: int) -> np.ndarray:
        """The times ``t_a, ..., t_{b-1}`` as a float64 array (``0 <= a <= b <= len``)."""
        raise NotImplementedError

    def __getitem__(self, k: int) -> float:
        k = int(k)
        if k < 0:
            k += len(self)
        if not 0 <= k < len(self):
            raise IndexError(f"time index {k} outside a grid of {len(self)} times")
        return float(self.times(k, k + 1)[0])

    def chunk(self, a: int, b: int) -> tuple[np.ndarray, np.ndarray]:
        """Start times and lengths of the steps ``a, ..., b-1``."""
        t = self.times(a, b + 1)
        return t[:-1], np.diff(t)

    def array(self) -> np.ndarray:
        """All times as one array (size grows with the steps: for inspection, not for runs)."""
        return self.times(0, len(self))

    def description(self) -> str:
        """What identifies the grid (used by checkpoint fingerprints)."""
        raise NotImplementedError

    @property
    def uniform_step(self) -> float | None:
        """The nominal step of a uniform grid, else ``None``."""
        return None


class _Uniform(TimeGrid):
    def __init__(self, t0: float, h: float, steps: int) -> None:
        self.t0, self.h, self.steps = float(t0), float(h), int(steps)

    def times(self, a: int, b: int) -> np.ndarray:
        return self.t0 + self.h * np.arange(a, min(b, len(self)), dtype=np.float64)

    def description(self) -> str:
        return f"uniform: {self.steps} steps, t0={self.t0!r}, h={self.h!r}"

    @property
    def uniform_step(self) -> float:
        return self.h


class _Linspace(TimeGrid):
    def __init__(self, t0: float, t1: float, steps: int) -> None:
        self.t0, self.t1, self.steps = float(t0), float(t1), int(steps)
        self.delta = self.t1 - self.t0
        self.step = self.delta / self.steps

    def times(self, a: int, b: int) -> np.ndarray:
        b = min(b, len(self))
        y = np.arange(a, b, dtype=np.float64)
        if self.step == 0:  # numpy.linspace's branch for a subnormal step
            y = y / self.steps * self.delta
        else:
            y = y * self.step
        y += self.t0
        if b == len(self) and b > a:
            y[-1] = self.t1
        return y

    def description(self) -> str:
        return f"linspace: {self.steps} steps, t0={self.t0!r}, t1={self.t1!r}"

    @property
    def uniform_step(self) -> float:
        return self.step


class _Explicit(TimeGrid):
    def __init__(self, values: np.ndarray) -> None:
        self.values = values
        self.steps = len(values) - 1

    def times(self, a: int, b: int) -> np.ndarray:
        return self.values[a:b].copy()

    def array(self) -> np.ndarray:
        return self.values.copy()

    def description(self) -> str:
        import hashlib

        digest = hashlib.sha256(np.ascontiguousarray(self.values).tobytes()).hexdigest()[:16]
        return (
            f"given: {self.steps} steps, t0={float(self.values[0])!r}, "
            f"t1={float(self.values[-1])!r}, {digest}"
        )


def time_grid(
    t0: float = 0.0,
    *,
    h: float | None = None,
    steps: int | None = None,
    t1: float | None = None,
    grid: Any = None,
) -> TimeGrid:
    """A float64 time grid from exactly one of: ``grid``; ``h`` and ``steps``; ``t1`` and
    ``steps``; ``t1`` and ``h`` (when ``(t1 - t0)/h`` is an integer). Only a given ``grid``
    is stored; the others are computed on demand."""
    if grid is not None:
        if h is not None or steps is not None or t1 is not None:
            raise ValueError("give either grid= or h/steps/t1, not both")
        if isinstance(grid, TimeGrid):
            return grid
        g = grid.detach().cpu().numpy() if isinstance(grid, torch.Tensor) else np.asarray(grid)
        g = g.astype(np.float64)
        if g.ndim != 1 or g.size < 2:
            raise ValueError("a grid is a 1-D sequence of at least two times")
        if not np.all(np.isfinite(g)):
            raise ValueError("the grid has non-finite times")
        if not np.all(np.diff(g) > 0):
            i = int(np.argmax(np.diff(g) <= 0))
            raise ValueError(
                "the grid must be strictly increasing; it is not at index "
                f"{i}: {g[i]} -> {g[i + 1]}"
            )
        return _Explicit(g)
    try:
        t0 = float(t0)
    except (TypeError, ValueError):
        raise ValueError(f"t0 must be a number, got {t0!r}") from None
    if not math.isfinite(t0):
        raise ValueError(f"t0 must be finite, got {t0}")
    if steps is not None:
        if isinstance(steps, bool) or int(steps) != steps or steps < 1:
            raise ValueError(f"steps must be a positive integer, got {steps}")
        steps = int(steps)
    if h is not None and steps is not None and t1 is None:
        if not (h > 0 and math.isfinite(h)):
            raise ValueError(f"h must be positive and finite, got {h}")
        grid_ = _Uniform(t0, h, steps)
        # float64 spacing is coarsest at the largest |t|: the first or the last interval
        if not (
            math.isfinite(grid_[steps]) and grid_[0] < grid_[1] and grid_[steps - 1] < grid_[steps]
        ):
            raise ValueError(
                f"h = {h} and {steps} steps from t0 = {t0} leave the float64 range or repeat times"
            )
        return grid_
    if t1 is not None and steps is not None and h is None:
        if not (math.isfinite(t1) and t1 > t0):
            raise ValueError(f"t1 = {t1} must be finite and exceed t0 = {t0}")
        return _Linspace(t0, t1, steps)
    if t1 is not None and h is not None and steps is None:
        if not (h > 0 and math.isfinite(h)):
            raise ValueError(f"h must be positive and finite, got {h}")
        n = (t1 - t0) / h
        if not (n > 0 and math.isfinite(n) and abs(n - round(n)) < 1e-9 * max(1.0, n)):
            raise ValueError(f"(t1 - t0)/h = {n} is not a positive integer; give steps= instead")
        return _Uniform(t0, h, round(n))
    raise ValueError("give grid=, or two of h=, steps=, t1=")
