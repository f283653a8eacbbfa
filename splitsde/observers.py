"""Observers: measurements taken by :func:`splitsde.integrate` during a run.

An observer sees the state after every step (``on_step``) and, if it asks for it, after every
sub-step (``on_substep``; shadow work and heat need this). What ``on_step`` returns is recorded
every ``every`` steps and returned in :attr:`splitsde.integrate.Result.observables`.

States handed to observers are the live tensors of the run (updated in place by the next
step): compute what you need immediately, or clone.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch

__all__ = ["Observer", "Running", "observe"]


class Observer:
    """Base class; override what you need."""

    name: str = "observer"
    every: int = 1
    substeps: bool = False

    def start(self, t: float, state: Mapping[str, torch.Tensor], integrator: Any) -> None:
        """Called once before the first step."""

    def on_substep(self, step: int, substep: Any, state: Mapping[str, torch.Tensor]) -> None:
        """Called after every sub-step when ``substeps`` is true (``substep`` is a SubstepInfo),
        and after every Metropolis test of a ``{ }`` group (``substep`` is then a GroupInfo)."""

    def on_step(self, step: int, t: float, state: Mapping[str, torch.Tensor]) -> Any:
        """Called after every step; the return value is recorded every ``every`` steps."""
        return None

    def finish(self) -> Any:
        """Called after the last step; the return value is stored as ``<name>.final``."""
        return None

    def state_dict(self) -> dict[str, Any]:
        """Accumulators to checkpoint (tensors, arrays, numbers, strings, containers)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore accumulators when a run resumes (called after :meth:`start`)."""


class _FunctionObserver(Observer):
    def __init__(
        self, fn: Callable[[float, Mapping[str, torch.Tensor]], Any], name: str, every: int
    ) -> None:
        self.fn = fn
        self.name = name
        self.every = every

    def on_step(self, step: int, t: float, state: Mapping[str, torch.Tensor]) -> Any:
        return self.fn(t, state)


def observe(
    fn: Callable[[float, Mapping[str, torch.Tensor]], Any], name: str | None = None, every: int = 1
) -> Observer:
    """Record ``fn(t, state)`` every ``every`` steps (a tensor or a number)."""
    if every < 1:
        raise ValueError("every must be at least 1")
    return _FunctionObserver(fn, name or getattr(fn, "__name__", "observable"), every)


class Running(Observer):
    """Accumulate per-walker time sums of ``fn(state)`` after a burn-in, without storing the
    trajectory: ``finish()`` returns per-walker time averages of the value and of its square,
    the input of batch-means error bars.

    ``fn`` returns a tensor of shape ``(walkers, ...)``.
    """

    def __init__(
        self,
        fn: Callable[[Mapping[str, torch.Tensor]], torch.Tensor],
        name: str,
        burn_in: int = 0,
        every: int = 1,
    ) -> None:
        self.fn = fn
        self.name = name
        self.burn_in = burn_in
        self.every = every
        self.sum: torch.Tensor | None = None
        self.sumsq: torch.Tensor | None = None
        self.count = 0

    def on_step(self, step: int, t: float, state: Mapping[str, torch.Tensor]) -> Any:
        if step + 1 <= self.burn_in or (step + 1 - self.burn_in) % self.every:
            return None
        x = self.fn(state).to(torch.float64)
        if self.sum is None:
            self.sum = torch.zeros_like(x)
            self.sumsq = torch.zeros_like(x)
        self.sum += x
        self.sumsq += x * x
        self.count += 1
        return None

    def finish(self) -> dict[str, Any]:
        if self.sum is None:
            raise ValueError(f"observer {self.name}: no samples after the burn-in")
        return {
            "mean": self.sum / self.count,
            "mean_sq": self.sumsq / self.count,
            "count": self.count,
        }

    def state_dict(self) -> dict[str, Any]:
        return {"sum": self.sum, "sumsq": self.sumsq, "count": self.count}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sum, self.sumsq, self.count = state["sum"], state["sumsq"], state["count"]
