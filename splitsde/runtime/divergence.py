r"""Divergence: when a run blows up, say where and whether the step size is to blame.

A run *diverges* when its state leaves every bounded set: its values become non-finite
(:class:`~splitsde.runtime.integrator.NonFiniteError`), or, with ``max_abs=`` given to
:func:`splitsde.integrate`, some element of the state exceeds that magnitude
(:class:`DivergenceError`). Both are found at the run's checks and replayed from the last good
snapshot to name the first step at fault.

For a linear problem the cause is decided exactly. One step of the compiled integrator is the
affine map :math:`y \mapsto \Phi(h)\,y + c + N\xi` (probed by
:func:`~splitsde.runtime.probe.affine_step`), and the scheme is stable at step :math:`h` iff
the spectral radius :math:`\rho(\Phi(h)) < 1`. :func:`linear_stability` returns
:math:`\rho(\Phi(h))` and, when the scheme is unstable at :math:`h`, the stability bound -- the
smallest step with :math:`\rho \ge 1`, from :func:`~splitsde.runtime.probe.stability_bound`
-- so an error can say "h = 2.5 exceeds the stability bound h < 2" instead of "may exceed".
For BAOAB on the harmonic oscillator :math:`\ddot q = -\omega^2 q` the bound is
:math:`h\omega < 2` (Leimkuhler & Matthews, *Molecular Dynamics*, Springer 2015, sec. 7.4).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from splitsde.base.errors import SplitsdeError
from splitsde.runtime.integrator import FieldError, NonFiniteError

__all__ = [
    "DivergenceError",
    "FinitenessCheck",
    "Stability",
    "linear_stability",
    "stability_hint",
]

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
    from splitsde.runtime.probe import affine_step, is_autonomous, stability_bound

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


@dataclass
class _Snapshot:
    """A run at a step where its state was checked: where a replay starts."""

    step: int
    state: tuple[torch.Tensor, ...]
    carry: Any
    noise: dict[str, Any]


def _clone(x: Any) -> Any:
    if isinstance(x, torch.Tensor):
        return x.clone()
    if isinstance(x, tuple):
        return tuple(_clone(v) for v in x)
    if isinstance(x, dict):
        return {k: _clone(v) for k, v in x.items()}
    return x


def _tensors(x: Any) -> list[torch.Tensor]:
    if isinstance(x, torch.Tensor):
        return [x]
    if isinstance(x, tuple | list):
        return [t for v in x for t in _tensors(v)]
    return []


class FinitenessCheck:
    """Checks a run for non-finite values (and, with ``max_abs``, values beyond a magnitude)
    every ``every`` steps, and explains a failure.

    After every passed check it keeps a snapshot (state, carried values, noise state). When a
    check fails, or a step raises, the run is replayed from the snapshot with the checked step
    variant, so the error names the exact step, sub-step and block (or field) at no per-step
    cost, with a sentence on the step size (:func:`stability_hint`).

    ``run`` is the :class:`~splitsde.runtime.integrator.PreparedRun` and ``noise`` its noise
    source (rewound for the replay).
    """

    def __init__(
        self,
        run: Any,
        noise: Any,
        every: int,
        max_abs: float | None,
        step: int,
        state: tuple[torch.Tensor, ...],
        carry: Any,
    ) -> None:
        self.run = run
        self.integrator = run.integrator
        self.noise = noise
        self.every = every
        self.max_abs = max_abs
        self.limit = math.inf if max_abs is None else float(max_abs)
        self.snapshot = _Snapshot(step, _clone(state), _clone(carry), _clone(noise.state_dict()))

    def next_check(self, k: int) -> int:
        """The step index of the next check after ``k``."""
        return (k // self.every + 1) * self.every

    def healthy(self, state: tuple[torch.Tensor, ...], carry: Any) -> bool:
        """All values of the state and of the carried field values finite (and within
        ``max_abs``): one reduction per tensor."""
        if self.max_abs is None:
            return all(bool(torch.isfinite(x).all()) for x in (*state, *_tensors(carry)))
        # NaN compares false: one test covers non-finite and too large values
        return all(bool(x.abs().max() <= self.limit) for x in state) and all(
            bool(torch.isfinite(x).all()) for x in _tensors(carry)
        )

    def check(self, k: int, state: tuple[torch.Tensor, ...], carry: Any) -> None:
        """Check the state after step ``k``; on failure replay to name the culprit and raise,
        else keep a new snapshot."""
        if not self.healthy(state, carry):
            self.replay(k)
            raise NonFiniteError(
                f"non-finite (or too large) values appeared between steps "
                f"{self.snapshot.step} and {k}, and a replay did not reproduce them"
            )
        self.snapshot = _Snapshot(k, _clone(state), _clone(carry), _clone(self.noise.state_dict()))

    def step_failed(self, exc: BaseException, k: int) -> None:
        """Raise the library's error for ``exc``, raised by the unchecked step ``k`` (called
        inside the ``except`` block; returns when ``exc`` is to be re-raised as it is)."""
        run = self.run
        if isinstance(exc, NonFiniteError):
            raise _explained(exc, k, self.integrator, self.snapshot.state, run) from None
        if isinstance(exc, FieldError):
            raise _at_step(exc, k, run) from None
        name = run.field_at(exc.__traceback__)
        if name is not None:
            raise FieldError(
                f"step {k} (t = {run.grid[k]:.6g}): field {name} raised "
                f"{type(exc).__name__}: {exc}",
                field=name,
                step=k,
            ) from exc
        try:  # a checked replay may explain it (a field output of the wrong shape)
            self.replay(k + 1)
        except SplitsdeError as err:
            raise err from exc
        except Exception:
            pass

    def replay(self, upto: int) -> None:
        """Re-run from the snapshot with per-sub-step checks to name the culprit (returns
        normally if nothing goes wrong up to step ``upto``)."""
        run, integ, snap = self.run, self.integrator, self.snapshot
        state = _clone(snap.state)
        carry = _clone(snap.carry)
        self.noise.load_state_dict(_clone(snap.noise))
        for k in range(snap.step, upto):
            before = state  # (shapes only, for the stability hint)
            try:
                state, carry = run.call(k, state, carry, checked=True)
            except NonFiniteError as err:
                raise _explained(err, k, integ, before, run) from None
            except FieldError as err:
                raise _at_step(err, k, run) from None
            except Exception as exc:
                name = run.field_at(exc.__traceback__)
                if name is None:
                    raise
                raise FieldError(
                    f"step {k} (t = {run.grid[k]:.6g}): field {name} raised "
                    f"{type(exc).__name__}: {exc}",
                    field=name,
                    step=k,
                ) from exc
            if self.max_abs is not None:
                for name, x in zip(integ.block_names, state):
                    m = float(x.abs().max())
                    if m > self.max_abs:
                        err = DivergenceError(
                            f"block {name} reached |{name}| = {m:.3g} > max_abs = {self.max_abs:g}",
                            block=name,
                        )
                        raise _explained(err, k, integ, before, run) from None


def _at_step(err: FieldError, k: int, run: Any) -> FieldError:
    return FieldError(f"step {k} (t = {run.grid[k]:.6g}): {err}", field=err.field, step=k)


def _explained(
    err: NonFiniteError, k: int, integ: Any, state: Sequence[torch.Tensor], run: Any
) -> NonFiniteError:
    """``err`` at step ``k`` with a sentence on the step size: exact for linear problems."""
    t, h = run.grid[k], run.grid[k + 1] - run.grid[k]
    hint, stable = stability_hint(integ, state, h)
    if err.field is not None:  # the field returned non-finite values at a finite input
        if stable:
            hint = (
                f"{hint}, so the field itself is not finite there: check its callable at that input"
            )
        elif stable is None:
            hint = f"the field may be undefined at that input, or {hint}"
    message = f"step {k} (t = {t:.6g}, h = {h:.6g}): {err}; {hint}"
    kind = DivergenceError if isinstance(err, DivergenceError) else NonFiniteError
    return kind(message, step=k, substep=err.substep, block=err.block, field=err.field)
