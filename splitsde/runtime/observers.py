"""Observers: measurements taken by :func:`splitsde.integrate` during a run.

An observer sees the state after every step (``on_step``) and, if it asks for it, after every
sub-step (``on_substep``; shadow work and heat need this). What ``on_step`` returns is recorded
every ``every`` steps and returned in :attr:`splitsde.runtime.integrate.Result.observables`.

Functions given to :func:`observe` and :class:`Running` are called as ``fn(t, state)``, the
order of torchsde's drift ``f(t, y)``: ``t`` is the time at the end of the step (a float) and
``state`` maps block names to tensors of shape ``(walkers, ...)``. The recorded observable is
named by ``name=`` or, without it, by the function's ``__name__``; a lambda has no name and
must be given one. (The earlier one-argument form ``fn(state)`` still works for
:class:`Running` and :func:`observe` during a transition, with a :class:`DeprecationWarning`.)

States handed to observers are the live tensors of the run (updated in place by the next
step): compute what you need immediately, or clone.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from splitsde.base.errors import SplitsdeError

__all__ = ["Observer", "ObserverError", "ObserverSet", "Running", "observe"]

#: What :func:`observe` and :class:`Running` call: ``fn(t, state)``.
ObservableFn = Callable[[float, Mapping[str, torch.Tensor]], Any]


class ObserverError(SplitsdeError, ValueError):
    """An observer that cannot be used as given (no name, wrong signature, bad options)."""


def observable_name(fn: Any, name: str | None, what: str) -> str:
    """``name`` if given, else the function's ``__name__``; a lambda (or a callable without a
    ``__name__``, such as a :func:`functools.partial`) must be named explicitly."""
    if name is not None:
        if not isinstance(name, str) or not name.strip():
            raise ObserverError(f"{what}: name must be a non-empty string, got {name!r}")
        return name
    found = getattr(fn, "__name__", None)
    if not isinstance(found, str) or not found or found.startswith("<"):
        kind = "a lambda" if found == "<lambda>" else f"a {type(fn).__name__}"
        raise ObserverError(
            f"{what}: {kind} has no name to record its values under; give one, e.g. "
            f"{what}(lambda t, state: ..., name='energy')"
        )
    return found


def _required_positional(fn: Any) -> int | None:
    """How many positional arguments ``fn`` needs (``None``: any number, or unknown)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # builtins without a signature
        return None
    if any(p.kind is p.VAR_POSITIONAL for p in params):
        return None
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return sum(p.kind in positional and p.default is p.empty for p in params)


def time_state_function(fn: Any, name: str, what: str) -> ObservableFn:
    """``fn`` as a function of ``(t, state)``; the deprecated one-argument ``fn(state)`` is
    wrapped with a :class:`DeprecationWarning`."""
    if not callable(fn):
        raise ObserverError(f"{what} {name!r}: expected a function of (t, state), got {fn!r}")
    n = _required_positional(fn)
    if n is None or n == 2:
        return fn
    if n == 1:
        warnings.warn(
            f"{what} {name!r}: observer functions are called as fn(t, state), like torchsde's "
            "f(t, y); the one-argument form fn(state) is deprecated (write "
            "`lambda t, state: ...`)",
            DeprecationWarning,
            stacklevel=3,
        )
        return lambda t, state: fn(state)
    raise ObserverError(
        f"{what} {name!r}: the function takes {n} required positional arguments; observer "
        "functions are called as fn(t, state)"
    )


def _positive_int(value: Any, what: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ObserverError(f"{what} must be an integer >= {minimum}, got {value!r}")
    return value


class Observer:
    """Base class; override what you need."""

    name: str = "observer"
    every: int = 1
    substeps: bool = False

    def start(self, t: float, state: Mapping[str, torch.Tensor], integrator: Any) -> None:
        """Called once before the first step."""

    def watch_acceptance(self, accepted: Sequence[torch.Tensor]) -> None:
        """Called before :meth:`start` with the run's live Metropolis counters: one int64
        tensor per ``{ }`` group of the word, accepted proposals per walker since step 0
        (restored on resume). Read them when needed; never modify them."""

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
    def __init__(self, fn: ObservableFn, name: str, every: int) -> None:
        self.fn = fn
        self.name = name
        self.every = every

    def on_step(self, step: int, t: float, state: Mapping[str, torch.Tensor]) -> Any:
        return self.fn(t, state)


def observe(fn: ObservableFn, name: str | None = None, every: int = 1) -> Observer:
    """Record ``fn(t, state)`` (a tensor or a number) every ``every`` steps, under ``name``
    (default: ``fn.__name__``; a lambda must be named).

    >>> def energy(t, state):
    ...     return (state["p"] ** 2).sum(-1) / 2
    >>> observe(energy, every=10).name
    'energy'
    """
    label = observable_name(fn, name, "observe")
    every = _positive_int(every, f"observe {label!r}: every")
    return _FunctionObserver(time_state_function(fn, label, "observe"), label, every)


class Running(Observer):
    r"""Accumulate per-walker time sums of ``fn(t, state)`` after a burn-in, without storing the
    trajectory: ``finish()`` returns per-walker time averages of the value and of its square,
    :math:`\bar x = \frac1n\sum_k x_k` and :math:`\overline{x^2}`, the input of batch-means
    error bars.

    ``fn`` returns a tensor of shape ``(walkers, ...)``; ``name`` defaults to ``fn.__name__``
    (a lambda must be named). Samples are taken after step ``burn_in`` and then every
    ``every`` steps.
    """

    def __init__(
        self,
        fn: ObservableFn,
        name: str | None = None,
        burn_in: int = 0,
        every: int = 1,
    ) -> None:
        self.name = observable_name(fn, name, "Running")
        self.fn = time_state_function(fn, self.name, "Running")
        self.burn_in = _positive_int(burn_in, f"Running {self.name!r}: burn_in", 0)
        self.every = _positive_int(every, f"Running {self.name!r}: every")
        self.sum: torch.Tensor | None = None
        self.sumsq: torch.Tensor | None = None
        self.count = 0

    def on_step(self, step: int, t: float, state: Mapping[str, torch.Tensor]) -> Any:
        if step + 1 <= self.burn_in or (step + 1 - self.burn_in) % self.every:
            return None
        x = self.fn(t, state).to(torch.float64)
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


class ObserverSet:
    """The observers of one run: calls them in order, records what they return and keeps the
    records, and dispatches sub-step callbacks of the hooked step variant.

    ``points`` are the sub-steps and Metropolis groups of the program, in the numbering of the
    step's ``on_substep`` callback; ``block_names`` names the state's blocks. :attr:`step` is the
    index of the step being run, set by the time loop before each hooked step.
    """

    def __init__(
        self, observers: Sequence[Observer], block_names: Sequence[str], points: Sequence[Any]
    ) -> None:
        self.observers = list(observers)
        if len({o.name for o in self.observers}) != len(self.observers):
            raise ValueError("observer names must be distinct")
        self.block_names = tuple(block_names)
        self.points = list(points)
        self.substep_observers = [o for o in self.observers if o.substeps]
        self.records: dict[str, list[Any]] = {o.name: [] for o in self.observers}
        self.record_t: dict[str, list[float]] = {o.name: [] for o in self.observers}
        self.step = 0

    def __bool__(self) -> bool:
        return bool(self.observers)

    @property
    def wants_substeps(self) -> bool:
        return bool(self.substep_observers)

    def on_substep(self, i: int, state: tuple[torch.Tensor, ...]) -> None:
        """The step's callback after sub-step (or Metropolis test) ``i``."""
        m = dict(zip(self.block_names, state))
        for o in self.substep_observers:
            o.on_substep(self.step, self.points[i], m)

    def start(
        self,
        t: float,
        state: Mapping[str, torch.Tensor],
        integrator: Any,
        accepted: Sequence[torch.Tensor],
    ) -> None:
        for o in self.observers:
            o.watch_acceptance(accepted)
            o.start(t, state, integrator)

    def after_step(self, k: int, t: float, state: Mapping[str, torch.Tensor]) -> None:
        """``k`` steps are done; the time is ``t``."""
        for o in self.observers:
            v = o.on_step(k - 1, t, state)
            if v is not None and k % o.every == 0:
                self.records[o.name].append(
                    v.detach().clone() if isinstance(v, torch.Tensor) else v
                )
                self.record_t[o.name].append(t)

    def finish(self) -> dict[str, Any]:
        return {o.name: o.finish() for o in self.observers}

    def finish_partial(self) -> dict[str, Any]:
        """:meth:`finish` for a run stopped early: an observer that cannot finish yet (an
        accumulator without samples) reports ``None``."""
        finals: dict[str, Any] = {}
        for o in self.observers:
            try:
                finals[o.name] = o.finish()
            except Exception:  # nothing to report yet
                finals[o.name] = None
        return finals

    def observables(self) -> dict[str, Any]:
        """Recorded values, name -> stacked tensor (or array)."""
        return {name: _stack(v) for name, v in self.records.items() if v}

    def observable_times(self) -> dict[str, np.ndarray]:
        return {name: np.asarray(v) for name, v in self.record_t.items() if v}

    def state_dict(self) -> dict[str, Any]:
        """The checkpoint entries of the observers (``observers``, ``records``, ``record_t``)."""
        return {
            "observers": {o.name: o.state_dict() for o in self.observers},
            "records": self.records,
            "record_t": self.record_t,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for o in self.observers:
            o.load_state_dict(state["observers"][o.name])
        self.records = {k: list(v) for k, v in state["records"].items()}
        self.record_t = {k: list(v) for k, v in state["record_t"].items()}


def _stack(values: list[Any]) -> Any:
    if all(isinstance(v, torch.Tensor) for v in values):
        return torch.stack(values)
    return np.asarray(values)
