"""The one time loop (architecture rule 2).

:func:`integrate` runs any :class:`~splitsde.compose.integrator.Integrator` over a uniform or
given time grid with a seeded generator, calls observers, saves states, shows a progress bar
(only on a terminal), checks for non-finite values and reports the measured number of field
evaluations.

Non-finite values (and, with ``max_abs=``, values beyond a magnitude) are checked every
``check_every`` steps and before every checkpoint; when one is found the run is replayed
deterministically from the last good snapshot with per-sub-step checks, so the error names the
exact step, sub-step and block at no per-step cost, and says whether the step size exceeds the
scheme's stability bound (exactly, for linear problems; see :mod:`splitsde.divergence`). An
exception raised inside a field's callable is reported as a
:class:`~splitsde.compose.integrator.FieldError` naming the field and the step.

Memory does not grow with the number of steps: times and coefficients are computed a chunk of
steps at a time (:mod:`splitsde.timegrid`, :mod:`splitsde.compose.schedule`).

Long runs write checkpoints (``checkpoint=``, ``checkpoint_every=``; see
:mod:`splitsde.checkpoint`) and resume from them bit for bit (``resume=True``); saved states can
stream to disk in chunks (``trajectory=``; see :mod:`splitsde.trajectory`).
"""

from __future__ import annotations

import math
import operator
import os
import secrets
import time as _time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from splitsde.checkpoint import (
    CheckpointError,
    CheckpointWarning,
    discard_checkpoint,
    open_checkpoint,
    write_checkpoint,
)
from splitsde.compose.integrator import FieldError, Integrator, NonFiniteError, StateError
from splitsde.divergence import DivergenceError, stability_hint
from splitsde.errors import SplitsdeError
from splitsde.fingerprint import UNIDENTIFIED, check_fingerprint, run_fingerprint
from splitsde.noise import GaussianNoise, NoiseSource
from splitsde.observers import Observer
from splitsde.progress import progress_bar
from splitsde.timegrid import TimeGrid, time_grid
from splitsde.trajectory import Trajectory, TrajectoryWriter

__all__ = ["Acceptance", "IntegratorTypeError", "Result", "integrate", "make_grid"]


class IntegratorTypeError(SplitsdeError, TypeError):
    """:func:`integrate` was given something that is not a splitsde integrator."""


@dataclass
class Acceptance:
    """Metropolis statistics of one ``{ }`` group: accepted proposals per walker out of
    ``trials`` (one test per walker and step)."""

    group: str
    accepted: torch.Tensor
    trials: int

    @property
    def rate(self) -> float:
        return float(self.accepted.sum()) / max(1, self.accepted.numel() * self.trials)

    @property
    def rate_se(self) -> float:
        """Standard error of :attr:`rate` from the spread of independent walkers."""
        per = self.accepted.to(torch.float64) / max(1, self.trials)
        n = per.numel()
        return float(per.std(unbiased=True) / math.sqrt(n)) if n > 1 else float("nan")


@dataclass
class Result:
    """What a run returns.

    Attributes
    ----------
    final:
        The state after the last step (block name -> tensor).
    times, states:
        Saved times and states (block name -> tensor of shape ``(n_saved, *block_shape)``).
    observables:
        Recorded observer values (name -> stacked tensor or array) and their times in
        ``observable_times``; ``finals`` holds what observers returned from ``finish``.
    nfe, nfe_by_field, nfe_first_step:
        Field evaluations counted during the run (measured, not computed).
    steps:
        Steps run (fewer than asked only in the result attached to a
        :class:`~splitsde.checkpoint.CheckpointError` raised when a checkpoint write failed).
    acceptance:
        Metropolis statistics, one :class:`Acceptance` per ``{ }`` group of the word.
    trajectory:
        The streamed :class:`~splitsde.trajectory.Trajectory` when ``trajectory=`` was given
        (``states`` is then empty).
    time_grid:
        The run's :class:`~splitsde.timegrid.TimeGrid`; :attr:`grid` is its times as an array.
    """

    final: dict[str, torch.Tensor]
    times: np.ndarray
    states: dict[str, torch.Tensor]
    observables: dict[str, Any]
    observable_times: dict[str, np.ndarray]
    finals: dict[str, Any]
    nfe: int
    nfe_by_field: dict[str, int]
    nfe_first_step: int
    steps: int
    seed: int | None
    wall_time: float
    time_grid: TimeGrid | None = field(repr=False, default=None)
    acceptance: list[Acceptance] = field(default_factory=list)
    trajectory: Trajectory | None = None

    @property
    def grid(self) -> np.ndarray:
        """The times of the steps run, ``t_0, ..., t_steps`` (built on access: its size grows
        with the number of steps)."""
        if self.time_grid is None:
            return np.zeros(0)
        return self.time_grid.times(0, self.steps + 1)

    @property
    def acceptance_rate(self) -> float | None:
        """Fraction of accepted Metropolis proposals over all groups, walkers and steps."""
        if not self.acceptance:
            return None
        acc = sum(int(a.accepted.sum()) for a in self.acceptance)
        return acc / max(1, sum(a.accepted.numel() * a.trials for a in self.acceptance))

    @property
    def nfe_per_step(self) -> float:
        """Measured field evaluations per step after the first (steady state)."""
        if self.steps <= 1:
            return float(self.nfe)
        return (self.nfe - self.nfe_first_step) / (self.steps - 1)


def make_grid(
    t0: float = 0.0,
    *,
    h: float | None = None,
    steps: int | None = None,
    t1: float | None = None,
    grid: Any = None,
) -> np.ndarray:
    """A float64 time grid from exactly one of: ``grid``; ``h`` and ``steps``; ``t1`` and
    ``steps``; ``t1`` and ``h`` (when ``(t1 - t0)/h`` is an integer), as an array.

    :func:`integrate` never builds this array: it reads the same times from a
    :class:`~splitsde.timegrid.TimeGrid` chunk by chunk (:func:`splitsde.timegrid.time_grid`).
    """
    return time_grid(t0, h=h, steps=steps, t1=t1, grid=grid).array()


@dataclass
class _Snapshot:
    step: int
    state: tuple[torch.Tensor, ...]
    carry: Any
    noise: dict[str, Any]
    nfe: list[int]


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


def _check_integrator(integrator: Any) -> None:
    """Refuse what is not a splitsde integrator, saying what to do instead."""
    if isinstance(integrator, Integrator):
        return
    kind = type(integrator)
    name = f"{kind.__module__}.{kind.__qualname__}"
    # an OpenMM integrator (ours compiled to a CustomIntegrator, or OpenMM's own), recognised
    # by where its classes live, without importing openmm
    modules = [getattr(c, "__module__", "") or "" for c in kind.__mro__]
    if any(
        m.split(".")[0] in ("openmm", "simtk") or m == "splitsde.backends.openmm" for m in modules
    ):
        raise IntegratorTypeError(
            f"integrate runs a splitsde Integrator; got a {name}, which is an OpenMM integrator: "
            "run it with an OpenMM Simulation or Context (openmm.app.Simulation(topology, "
            "system, integrator).step(n)), or use system.integrator(word) for the torch backend"
        )
    if isinstance(integrator, str):
        hint = f"; build one from a system: system.integrator({integrator!r})"
    elif hasattr(integrator, "integrator") and callable(integrator.integrator):
        hint = "; call its .integrator(word) method first"
    else:
        hint = " (build one with system.integrator(word) or splitsde.Integrator(sde, word, ...))"
    raise IntegratorTypeError(f"integrate runs a splitsde Integrator, got a {name}{hint}")


def integrate(
    integrator: Integrator,
    y0: Mapping[str, torch.Tensor],
    *,
    t0: float = 0.0,
    h: float | None = None,
    steps: int | None = None,
    t1: float | None = None,
    grid: Any = None,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    noise: NoiseSource | None = None,
    observers: Sequence[Observer] = (),
    save_every: int | None = None,
    save: Sequence[str] | None = None,
    progress: bool | None = None,
    check_every: int = 100,
    max_abs: float | None = None,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: int | None = None,
    resume: bool | str = False,
    overwrite: bool = False,
    trajectory: str | os.PathLike | None = None,
    chunk: int = 100,
) -> Result:
    """Run ``integrator`` from ``y0`` over a time grid.

    Parameters
    ----------
    y0:
        Initial state, block name -> tensor ``(batch, ...)`` with finite values; it is copied,
        never modified.
    t0, h, steps, t1, grid:
        The time grid (see :func:`make_grid`); only a given ``grid`` is held in memory.
    seed, generator, noise:
        Randomness: a seed (a new CPU/device generator), a :class:`torch.Generator`, or any
        :class:`~splitsde.noise.NoiseSource`. With none of them a random seed is drawn and
        recorded in the result.
    observers:
        :class:`~splitsde.observers.Observer` objects (see :func:`splitsde.observe`).
    save_every, save:
        Save the state every ``save_every`` steps (and at the start and end); ``save`` limits
        which blocks.
    progress:
        Show a tqdm bar (default: only when stderr is a terminal).
    check_every:
        Steps between non-finite checks (a failure is replayed to name the exact sub-step).
        The state is also checked before every checkpoint and at the end.
    max_abs:
        Treat a state element larger than this in magnitude as divergence: the run stops with
        :class:`~splitsde.divergence.DivergenceError` naming the first step at which it
        happened (found like non-finite values, at the checks). Default: only non-finite
        values stop a run.
    checkpoint, checkpoint_every:
        Write a checkpoint file (see :mod:`splitsde.checkpoint`) every ``checkpoint_every``
        steps and at the end, atomically, keeping the previous one as ``<name>.prev``. The
        location is checked before step 1 (its directory is created if missing); an existing
        checkpoint is refused unless ``resume`` or ``overwrite``. If a write fails during the
        run, the run stops and :class:`~splitsde.checkpoint.CheckpointError` carries the
        result so far as ``err.result``.
    resume:
        ``True``: if the checkpoint exists, continue from the newest usable file (bit for bit
        the run that wrote it, on the same device and dtype); a checkpoint of another run or
        damaged files are refused with :class:`~splitsde.checkpoint.CheckpointError`. Without
        a file the run starts from ``y0``, so the same call both starts and restarts a job.
        ``"trust"``: the same, also accepting fields whose callables cannot be identified
        (see :mod:`splitsde.fingerprint`), which ``True`` refuses.
    overwrite:
        Start a new run over an existing checkpoint (it and its previous version are deleted
        before step 1).
    trajectory, chunk:
        Stream the saved states to this directory in chunks of ``chunk`` frames instead of
        keeping them in memory (see :class:`~splitsde.trajectory.Trajectory`); a crash loses
        at most one chunk.
    """
    _check_integrator(integrator)
    initial = integrator.check_state(y0)
    for name, x in zip(integrator.blocks, initial):
        if not bool(torch.isfinite(x).all()):
            raise StateError(f"the initial state has non-finite values in block {name}")
    state = tuple(x.detach().clone() for x in initial)
    tgrid = time_grid(t0, h=h, steps=steps, t1=t1, grid=grid)
    n_steps = tgrid.steps
    try:
        check_every = operator.index(check_every)
    except TypeError:
        check_every = 0
    if check_every < 1:
        raise ValueError("check_every must be an integer of at least 1")
    if checkpoint_every is not None and (checkpoint is None or checkpoint_every < 1):
        raise ValueError("checkpoint_every needs checkpoint= and must be at least 1")
    if resume not in (False, True, "trust") or not isinstance(resume, bool | str):
        raise ValueError(f"resume must be False, True or 'trust', got {resume!r}")
    if resume and checkpoint is None:
        raise ValueError("resume= needs checkpoint= (the file to resume from)")
    if overwrite and (checkpoint is None or resume):
        raise ValueError("overwrite=True needs checkpoint= and excludes resume")
    if trajectory is not None and not save_every:
        raise ValueError("trajectory= streams the saved states: give save_every= as well")
    if max_abs is not None:
        if not (isinstance(max_abs, int | float) and max_abs > 0 and not math.isnan(max_abs)):
            raise ValueError(f"max_abs must be a positive number, got {max_abs!r}")
        for name, x in zip(integrator.blocks, initial):
            if float(x.abs().max()) > max_abs:
                raise StateError(f"the initial state exceeds max_abs = {max_abs:g} in block {name}")
    if noise is not None and (seed is not None or generator is not None):
        raise ValueError("give noise= or seed=/generator=, not both")
    if generator is not None and seed is not None:
        raise ValueError("give seed= or generator=, not both")
    names = integrator.blocks
    save_names = tuple(save) if save is not None else names
    bad = set(save_names) - set(names)
    if bad:
        raise ValueError(f"cannot save unknown block(s) {sorted(bad)}")
    observers = list(observers)
    if len({o.name for o in observers}) != len(observers):
        raise ValueError("observer names must be distinct")
    ckpt = Path(checkpoint) if checkpoint is not None else None
    stored = (
        open_checkpoint(ckpt, resume=bool(resume), overwrite=overwrite, device=state[0].device)
        if ckpt is not None
        else None
    )
    used_seed = None
    if noise is None:
        if generator is None:
            if stored is not None and seed is not None and stored["seed"] != seed:
                raise CheckpointError(
                    f"checkpoint {ckpt} was written with seed {stored['seed']}, "
                    f"this run has seed {seed}"
                )
            if stored is not None and stored["seed"] is not None:
                used_seed = stored["seed"]
            else:
                used_seed = secrets.randbits(62) if seed is None else int(seed)
            generator = torch.Generator(device=state[0].device)
            generator.manual_seed(used_seed)
        noise = GaussianNoise(generator)

    save_idx = [names.index(s) for s in save_names]
    # the fingerprint digests the program and the fields: only pay for it when checkpointing
    fingerprint = (
        run_fingerprint(
            integrator,
            initial,
            tgrid,
            noise=noise,
            observers=observers,
            save_every=save_every,
            save=save_names,
            chunk=chunk if trajectory is not None else None,
        )
        if ckpt is not None
        else None
    )
    if stored is not None:
        check_fingerprint(ckpt, stored["fingerprint"], fingerprint, trust=resume == "trust")
    elif fingerprint is not None:
        unknown = [
            v[len(UNIDENTIFIED) :] for v in fingerprint.values() if v.startswith(UNIDENTIFIED)
        ]
        if unknown:
            warnings.warn(
                "; ".join(unknown)
                + ': resuming this run from its checkpoint will need resume="trust"',
                CheckpointWarning,
                stacklevel=2,
            )

    counts = integrator.nfe_counts
    counts[:] = [0] * len(counts)
    run = integrator.prepare(state, tgrid, noise)
    sub_obs = [o for o in observers if o.substeps]
    records: dict[str, list[Any]] = {o.name: [] for o in observers}
    record_t: dict[str, list[float]] = {o.name: [] for o in observers}
    saved: list[tuple[torch.Tensor, ...]] = []
    saved_t: list[float] = []
    writer = TrajectoryWriter(trajectory, save_names, chunk) if trajectory is not None else None

    def as_map(s: tuple[torch.Tensor, ...]) -> dict[str, torch.Tensor]:
        return dict(zip(names, s))

    def keep(t: float, s: tuple[torch.Tensor, ...]) -> None:
        frame = tuple(s[i].clone() for i in save_idx)
        if writer is not None:
            writer.append(t, frame)
        else:
            saved.append(frame)
            saved_t.append(t)

    step_ctx = {"k": 0}
    if sub_obs:
        points = [*integrator.program.substeps, *integrator.program.groups]

        def on_sub(i: int, s: tuple[torch.Tensor, ...]) -> None:
            m = as_map(s)
            for o in sub_obs:
                o.on_substep(step_ctx["k"], points[i], m)

        run.hook.callback = on_sub

    first = 0
    carry = None
    nfe_first = 0
    elapsed = 0.0
    started = _time.perf_counter()
    bar = None

    def result(k_done: int, finals: dict[str, Any]) -> Result:
        observables = {name: _stack(v) for name, v in records.items() if v}
        obs_times = {name: np.asarray(v) for name, v in record_t.items() if v}
        states = (
            {n: torch.stack([s[j] for s in saved]) for j, n in enumerate(save_names)}
            if saved
            else {}
        )
        acceptance = [
            Acceptance(g.letter, acc.clone(), k_done)
            for g, acc in zip(integrator.program.groups, run.accepted)
        ]
        return Result(
            final=as_map(state),
            times=np.asarray(saved_t),
            states=states,
            observables=observables,
            observable_times=obs_times,
            finals={k: v for k, v in finals.items() if v is not None},
            nfe=sum(counts),
            nfe_by_field={bf.field.name: c for bf, c in zip(integrator.fields, counts)},
            nfe_first_step=nfe_first,
            steps=k_done,
            seed=used_seed,
            wall_time=elapsed + _time.perf_counter() - started,
            time_grid=tgrid,
            acceptance=acceptance,
            trajectory=Trajectory(trajectory) if trajectory is not None else None,
        )

    def partial(k_done: int) -> Result:
        """The result of the steps run so far (observers that cannot finish are left out)."""
        finals = {}
        for o in observers:
            try:
                finals[o.name] = o.finish()
            except Exception:  # an accumulator without samples yet: nothing to report
                finals[o.name] = None
        if writer is not None:
            try:
                writer.flush()
            except OSError:
                pass
        return result(k_done, finals)

    def write(k_done: int) -> None:
        try:
            write_checkpoint(
                ckpt,
                {
                    "fingerprint": fingerprint,
                    "step": k_done,
                    "seed": used_seed,
                    "state": state,
                    "carry": carry,
                    "noise": noise.state_dict(),
                    "nfe": list(counts),
                    "nfe_first": nfe_first,
                    "accepted": list(run.accepted),
                    "observers": {o.name: o.state_dict() for o in observers},
                    "records": records,
                    "record_t": record_t,
                    "saved": saved,
                    "saved_t": saved_t,
                    "trajectory": writer.state_dict() if writer is not None else None,
                    "wall_time": elapsed + _time.perf_counter() - started,
                },
            )
        except (OSError, CheckpointError) as exc:
            if bar is not None:
                bar.close()
            what = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise CheckpointError(
                f"writing checkpoint {ckpt} after step {k_done} failed ({what}); the run stopped "
                f"there: the result of its {k_done} steps is attached as err.result, and the "
                "checkpoints already on disk are unchanged",
                result=partial(k_done),
            ) from exc

    if ckpt is not None and stored is None and overwrite:
        discard_checkpoint(ckpt)  # everything is ready: start the new run over the old one
    with torch.no_grad():
        for o in observers:
            if hasattr(o, "watch_acceptance"):  # live Metropolis counters, for reporters
                o.watch_acceptance(run.accepted)
            o.start(tgrid[0], as_map(state), integrator)
        if stored is not None:
            first = int(stored["step"])
            state = tuple(x.to(state[0].device) for x in stored["state"])
            carry = stored["carry"]
            noise.load_state_dict(stored["noise"])
            counts[:] = list(stored["nfe"])
            nfe_first = int(stored["nfe_first"])
            for acc, a in zip(run.accepted, stored["accepted"]):
                acc.copy_(a)
            for o in observers:
                o.load_state_dict(stored["observers"][o.name])
            records = {k: list(v) for k, v in stored["records"].items()}
            record_t = {k: list(v) for k, v in stored["record_t"].items()}
            saved, saved_t = [tuple(f) for f in stored["saved"]], list(stored["saved_t"])
            if writer is not None:
                writer.load_state_dict(stored["trajectory"])
            elapsed = float(stored["wall_time"])
        else:
            if writer is not None:
                writer.create()
            if save_every:
                keep(tgrid[0], state)

        bar = progress_bar(n_steps, f"{integrator.word}", progress)
        if bar is not None and first:
            bar.update(first)
        stride = max(1, n_steps // 200)
        snapshot = _Snapshot(
            first, _clone(state), _clone(carry), _clone(noise.state_dict()), list(counts)
        )
        hooked = bool(sub_obs)
        step_fn = run.lowered.hooked if hooked else run.lowered.fast
        limit = math.inf if max_abs is None else float(max_abs)

        def healthy() -> bool:
            """All values of the state and the carried field values finite (and within
            ``max_abs``): one reduction per tensor."""
            if max_abs is None:
                return all(bool(torch.isfinite(x).all()) for x in (*state, *_tensors(carry)))
            # NaN compares false: one test covers non-finite and too large values
            return all(bool(x.abs().max() <= limit) for x in state) and all(
                bool(torch.isfinite(x).all()) for x in _tensors(carry)
            )

        def replay(upto: int) -> None:
            _replay(run, integrator, snapshot, noise, upto, max_abs)

        def next_event(k: int) -> int:
            """Index after the next step that needs attention (saving, checks, ...)."""
            if observers or k == 0:
                return k + 1
            e = min(n_steps, (k // check_every + 1) * check_every)
            if save_every:
                e = min(e, (k // save_every + 1) * save_every)
            if ckpt is not None and checkpoint_every:
                e = min(e, (k // checkpoint_every + 1) * checkpoint_every)
            if bar is not None:
                e = min(e, (k // stride + 1) * stride)
            return max(e, k + 1)

        k = first
        while k < n_steps:
            win = run.window(k)
            stop = min(next_event(k), win.stop)
            base, tl, hl = win.start, win.times, win.h
            j = k
            try:
                if k == 0:
                    step_ctx["k"] = 0
                    state, carry = run.call(0, state, carry, checked=True)
                    nfe_first = sum(counts)
                else:
                    const, rows = win.constant, win.rows
                    for j in range(k, stop):  # the hot loop: nothing but the step
                        if hooked:
                            step_ctx["k"] = j
                        c = const if const is not None else rows[j - base]
                        state, carry = step_fn(state, c, carry, tl[j - base], hl[j - base])
            except NonFiniteError as err:
                raise _explained(err, j, integrator, snapshot.state, run) from None
            except FieldError as err:
                raise _at_step(err, j, run) from None
            except Exception as exc:
                name = run.field_at(exc.__traceback__)
                if name is not None:
                    raise FieldError(
                        f"step {j} (t = {tl[j - base]:.6g}): field {name} raised "
                        f"{type(exc).__name__}: {exc}",
                        field=name,
                        step=j,
                    ) from exc
                try:  # a checked replay may explain it (a field output of the wrong shape)
                    replay(j + 1)
                except SplitsdeError as err:
                    raise err from exc
                except Exception:
                    pass
                raise
            k = stop
            t_k = tl[k - base]
            last = k - 1  # the step just completed
            if observers:
                m = as_map(state)
                for o in observers:
                    v = o.on_step(last, t_k, m)
                    if v is not None and k % o.every == 0:
                        records[o.name].append(
                            v.detach().clone() if isinstance(v, torch.Tensor) else v
                        )
                        record_t[o.name].append(t_k)
            if save_every and (k % save_every == 0 or k == n_steps):
                keep(t_k, state)
            due = bool(ckpt is not None and checkpoint_every and k % checkpoint_every == 0)
            if k % check_every == 0 or k == n_steps or due:
                # checked before every checkpoint: a bad state is never written
                if not healthy():
                    replay(k)
                    raise NonFiniteError(
                        f"non-finite (or too large) values appeared between steps "
                        f"{snapshot.step} and {k}, and a replay did not reproduce them"
                    )
                snapshot = _Snapshot(
                    k, _clone(state), _clone(carry), _clone(noise.state_dict()), list(counts)
                )
            if due and k < n_steps:
                write(k)
            if bar is not None and (k % stride == 0 or k == n_steps):
                bar.update(k - bar.n)
        if writer is not None:
            writer.flush()
        if ckpt is not None:
            write(n_steps)
        finals = {o.name: o.finish() for o in observers}
    if bar is not None:
        bar.close()
    return result(n_steps, finals)


def _stack(values: list[Any]) -> Any:
    if all(isinstance(v, torch.Tensor) for v in values):
        return torch.stack(values)
    return np.asarray(values)


def _at_step(err: FieldError, k: int, run: Any) -> FieldError:
    return FieldError(f"step {k} (t = {run.grid[k]:.6g}): {err}", field=err.field, step=k)


def _explained(
    err: NonFiniteError, k: int, integ: Integrator, state: Sequence[torch.Tensor], run: Any
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


def _replay(
    run: Any,
    integ: Integrator,
    snap: _Snapshot,
    noise: NoiseSource,
    upto: int,
    max_abs: float | None = None,
) -> None:
    """Re-run from the last good snapshot with per-sub-step checks to name the culprit
    (returns normally if nothing goes wrong up to step ``upto``)."""
    state = _clone(snap.state)
    carry = _clone(snap.carry)
    noise.load_state_dict(_clone(snap.noise))
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
        if max_abs is not None:
            for name, x in zip(integ.blocks, state):
                m = float(x.abs().max())
                if m > max_abs:
                    err = DivergenceError(
                        f"block {name} reached |{name}| = {m:.3g} > max_abs = {max_abs:g}",
                        block=name,
                    )
                    raise _explained(err, k, integ, before, run) from None
