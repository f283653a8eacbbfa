r"""Per-step coefficients of a run, computed a chunk of steps at a time.

The generated step reads its float64 coefficients (the :math:`e^{-\gamma h}`,
:math:`\sqrt{1 - e^{-2\gamma h}}`, ... of every sub-step) from one row per step. A
:class:`CoefficientSchedule` evaluates those rows on demand for chunks of :data:`CHUNK` steps,
so the memory a run needs does not grow with its number of steps:

* **autonomous** coefficients (no explicit time dependence) depend on the step length only; a
  row is computed once per distinct step length :math:`h_k = t_{k+1} - t_k` (a uniform grid has
  a few dozen distinct values, rounding included) and cached; a chunk whose steps share one
  length runs with a constant row;
* **time-dependent** coefficients are evaluated for the steps of the current chunk (with the
  few earlier steps a multistep history needs).

Every row is computed by the same vectorised float64 evaluation
(:meth:`~splitsde.compose.codegen.CoefficientTable.evaluate`) whatever the chunking, so a run
resumed from a checkpoint in the middle of a chunk uses bit for bit the same coefficients.
Non-finite coefficients are refused before the first step: time-dependent ones over the whole
grid (one extra pass when the grid is longer than a chunk), autonomous ones at the nominal step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from splitsde.compose.codegen import CoefficientTable
from splitsde.runtime.timegrid import TimeGrid

__all__ = ["CHUNK", "CoefficientSchedule", "Window"]

#: Steps per chunk (memory per chunk: about 100 bytes per step).
CHUNK = 1 << 14

#: Distinct step lengths whose rows are cached (a grid with more is cleared and refilled).
CACHE = 1 << 12


@dataclass
class Window:
    """The coefficients and times of steps ``start, ..., stop - 1``."""

    start: int
    stop: int
    #: The row shared by every step of the window, or ``None`` (then ``rows``).
    constant: tuple | None
    rows: list[tuple] | None
    #: Times ``t_start, ..., t_stop`` (one more than steps) and step lengths, Python floats.
    times: list[float]
    h: list[float]


class CoefficientSchedule:
    """Coefficient rows of ``table`` for the steps of ``grid``, cast once to ``like``'s dtype
    and device (tensor-valued coefficients) or kept as Python floats.

    ``head`` may hold the already evaluated and checked rows of a time-dependent grid of at
    most one chunk (a diffusion plan's grid, memoised by its integrator); ``memo`` a dict of
    autonomous rows by step length, kept by the integrator across runs (same dtype and
    device as ``like``)."""

    def __init__(
        self,
        table: CoefficientTable,
        grid: TimeGrid,
        like: torch.Tensor,
        chunk: int | None = None,
        head: list[np.ndarray] | None = None,
        memo: dict[float, tuple] | None = None,
    ) -> None:
        self.table = table
        self.grid = grid
        self.like = like
        self.chunk = int(chunk if chunk is not None else CHUNK)
        self.steps = grid.steps
        self.empty = not table.symbols
        self._cache: dict[float, tuple] = memo if memo is not None else {}
        self._window: Window | None = None
        self._head: list[np.ndarray] | None = None  # time-dependent rows of the first chunk
        self.tensor_symbols: set[Any] = set()
        if self.empty:
            return
        if table.autonomous:
            h0 = grid.uniform_step
            h0 = h0 if h0 is not None else grid[1] - grid[0]
            if h0 in self._cache:  # a row of an earlier run of the same integrator
                self.tensor_symbols = {
                    s for s, v in zip(table.symbols, self._cache[h0]) if torch.is_tensor(v)
                }
                return
            vals = self._evaluate_autonomous(np.array([h0], dtype=np.float64))
        else:
            if self.steps > self.chunk:  # refuse a bad coefficient anywhere before step 1
                for a in range(0, self.steps, self.chunk):
                    self._evaluate_steps(a, min(self.steps, a + self.chunk))
            if head is not None and self.steps <= self.chunk:
                vals = self._head = head  # rows of the whole (short) grid, already checked
            else:
                vals = self._head = self._evaluate_steps(0, min(self.steps, self.chunk))
        self.tensor_symbols = {s for s, v in zip(table.symbols, vals) if v.ndim > 1}

    # -- evaluation ---------------------------------------------------------------------------
    def _evaluate_autonomous(self, hs: np.ndarray) -> list[np.ndarray]:
        zeros = np.zeros_like(hs)
        vals = self.table.evaluate(zeros, hs)
        self.table.check_finite(vals, zeros, hs)
        return vals

    def _evaluate_steps(self, a: int, b: int) -> list[np.ndarray]:
        """Rows of steps ``a..b-1``, computed with the history lookback they need."""
        lo = max(0, a - self.table.history)
        t_, h_ = self.grid.chunk(lo, b)
        vals = self.table.evaluate(t_, h_)
        self.table.check_finite(vals, t_, h_)
        return [v[a - lo :] for v in vals]

    def _rows(self, vals: list[np.ndarray]) -> list[tuple]:
        like = self.like
        columns: list[Any] = []
        for v in vals:
            if v.ndim > 1:
                columns.append(torch.as_tensor(v, dtype=like.dtype, device=like.device))
            else:
                columns.append(v.tolist())
        return [tuple(c[i] for c in columns) for i in range(len(vals[0]))]

    # -- access -------------------------------------------------------------------------------
    def window(self, k: int) -> Window:
        """The window holding step ``k`` (cached until another is asked for)."""
        w = self._window
        if w is not None and w.start <= k < w.stop:
            return w
        a = (k // self.chunk) * self.chunk
        b = min(self.steps, a + self.chunk)
        times = self.grid.times(a, b + 1)
        h_ = np.diff(times)
        constant: tuple | None = None
        rows: list[tuple] | None = None
        if self.empty:
            constant = ()
        elif self.table.autonomous:
            uniq, inverse = np.unique(h_, return_inverse=True)
            new = np.array([u for u in uniq.tolist() if u not in self._cache], dtype=np.float64)
            if len(new):
                if len(self._cache) + len(new) > CACHE:
                    self._cache.clear()
                    new = uniq
                for u, row in zip(new.tolist(), self._rows(self._evaluate_autonomous(new))):
                    self._cache[u] = row
            by_value = [self._cache[u] for u in uniq.tolist()]
            if len(by_value) == 1:
                constant = by_value[0]
            else:
                rows = [by_value[i] for i in inverse.tolist()]
        else:
            head = self._head if a == 0 else None
            rows = self._rows(head if head is not None else self._evaluate_steps(a, b))
        self._window = Window(a, b, constant, rows, times.tolist(), h_.tolist())
        return self._window

    def row(self, k: int) -> tuple:
        w = self.window(k)
        return w.constant if w.constant is not None else w.rows[k - w.start]
