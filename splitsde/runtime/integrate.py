"""The one time loop (architecture rule 2).

:func:`integrate` runs any :class:`~splitsde.runtime.integrator.Integrator` over a uniform or
given time grid with a seeded generator, calls observers, saves states, shows a progress bar
(only on a terminal), checks for non-finite values and reports the measured number of field
evaluations.

Non-finite values (and, with ``max_abs=``, values beyond a magnitude) are checked every
``check_every`` steps and before every checkpoint; when one is found the run is replayed
deterministically from the last good snapshot with per-sub-step checks, so the error names the
exact step, sub-step and block at no per-step cost, and says whether the step size exceeds the
scheme's stability bound (exactly, for linear problems; see :mod:`splitsde.runtime.divergence`). An
exception raised inside a field's callable is reported as a
:class:`~splitsde.runtime.integrator.FieldError` naming the field and the step.

Memory does not grow with the number of steps: times and coefficients are computed a chunk of
steps at a time (:mod:`splitsde.runtime.timegrid`, :mod:`splitsde.runtime.schedule`).

Long runs write checkpoints (``checkpoint=``, ``checkpoint_every=``; see
:mod:`splitsde.runtime.checkpoint`) and resume from them bit for bit (``resume=True``); saved
states can stream to disk in chunks (``trajectory=``; see :mod:`splitsde.runtime.trajectory`).

The loop itself only steps; each other job is one object with one concern, called at the steps that
need it: :class:`~splitsde.runtime.observers.ObserverSet` (observers and their records),
:class:`~splitsde.runtime.trajectory.Saver` (saved states),
:class:`~splitsde.runtime.checkpoint.Checkpointer` (fingerprint, rotation, resume),
:class:`~splitsde.runtime.divergence.FinitenessCheck` (checks, replay, explanation) and
:class:`~splitsde.base.progress.Progress`. Between those events the steps run back to back.
Everything a run changes -- field-evaluation counters, Metropolis acceptance counts -- lives on its
:class:`~splitsde.runtime.integrator.PreparedRun` and is returned in the :class:`Result`; the
integrator is never modified, so one integrator serves any number of runs.
"""

from __future__ import annotations

import math
import operator
import os
import secrets
import time as _time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from splitsde.base.errors import SplitsdeError
from splitsde.base.progress import Progress
from splitsde.runtime.checkpoint import Checkpointer
from splitsde.runtime.divergence import FinitenessCheck
from splitsde.runtime.fingerprint import run_fingerprint
from splitsde.runtime.integrator import Integrator, PreparedRun, StateError
from splitsde.runtime.noise import GaussianNoise, NoiseSource
from splitsde.runtime.observers import Observer, ObserverSet
from splitsde.runtime.timegrid import TimeGrid, time_grid
from splitsde.runtime.trajectory import Saver, Trajectory

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
        :class:`~splitsde.runtime.checkpoint.CheckpointError` raised when a checkpoint write
        failed).
    acceptance:
        Metropolis statistics, one :class:`Acceptance` per ``{ }`` group of the word.
    trajectory:
        The streamed :class:`~splitsde.runtime.trajectory.Trajectory` when ``trajectory=`` was given
        (``states`` is then empty).
    time_grid:
        The run's :class:`~splitsde.runtime.timegrid.TimeGrid`; :attr:`grid` is its times as an
        array.
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
    :class:`~splitsde.runtime.timegrid.TimeGrid` chunk by chunk
    (:func:`splitsde.runtime.timegrid.time_grid`).
    """
    return time_grid(t0, h=h, steps=steps, t1=t1, grid=grid).array()


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
        :class:`~splitsde.runtime.noise.NoiseSource`. With none of them a random seed is drawn and
        recorded in the result.
    observers:
        :class:`~splitsde.runtime.observers.Observer` objects (see :func:`splitsde.observe`).
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
        :class:`~splitsde.runtime.divergence.DivergenceError` naming the first step at which it
        happened (found like non-finite values, at the checks). Default: only non-finite
        values stop a run.
    checkpoint, checkpoint_every:
        Write a checkpoint file (see :mod:`splitsde.runtime.checkpoint`) every ``checkpoint_every``
        steps and at the end, atomically, keeping the previous one as ``<name>.prev``. The
        location is checked before step 1 (its directory is created if missing); an existing
        checkpoint is refused unless ``resume`` or ``overwrite``. If a write fails during the
        run, the run stops and :class:`~splitsde.runtime.checkpoint.CheckpointError` carries the
        result so far as ``err.result``.
    resume:
        ``True``: if the checkpoint exists, continue from the newest usable file (bit for bit
        the run that wrote it, on the same device and dtype); a checkpoint of another run or
        damaged files are refused with :class:`~splitsde.runtime.checkpoint.CheckpointError`.
        Without
        a file the run starts from ``y0``, so the same call both starts and restarts a job.
        ``"trust"``: the same, also accepting fields whose callables cannot be identified
        (see :mod:`splitsde.runtime.fingerprint`), which ``True`` refuses.
    overwrite:
        Start a new run over an existing checkpoint (it and its previous version are deleted
        before step 1).
    trajectory, chunk:
        Stream the saved states to this directory in chunks of ``chunk`` frames instead of
        keeping them in memory (see :class:`~splitsde.runtime.trajectory.Trajectory`); a crash loses
        at most one chunk.
    """
    _check_integrator(integrator)
    initial = integrator.check_state(y0)
    for name, x in zip(integrator.block_names, initial):
        if not bool(torch.isfinite(x).all()):
            raise StateError(f"the initial state has non-finite values in block {name}")
    state = tuple(x.detach().clone() for x in initial)
    tgrid = time_grid(t0, h=h, steps=steps, t1=t1, grid=grid)
    check_every = _check_options(
        integrator,
        initial,
        check_every,
        checkpoint,
        checkpoint_every,
        resume,
        overwrite,
        trajectory,
        save_every,
        max_abs,
        noise,
        seed,
        generator,
    )
    names = integrator.block_names
    save_names = tuple(save) if save is not None else names
    bad = set(save_names) - set(names)
    if bad:
        raise ValueError(f"cannot save unknown block(s) {sorted(bad)}")
    program = integrator.program
    watchers = ObserverSet(observers, names, [*program.substeps, *program.groups])
    ckpt = (
        Checkpointer(
            checkpoint, checkpoint_every, resume=resume, overwrite=overwrite, device=state[0].device
        )
        if checkpoint is not None
        else None
    )
    noise, used_seed = _noise_source(noise, seed, generator, ckpt, state[0].device)
    if ckpt is not None:  # the fingerprint digests program and fields: only when checkpointing
        ckpt.identify(
            run_fingerprint(
                integrator,
                initial,
                tgrid,
                noise=noise,
                observers=watchers.observers,
                save_every=save_every,
                save=save_names,
                chunk=chunk if trajectory is not None else None,
            )
        )
    on_substep = watchers.on_substep if watchers.wants_substeps else None
    run = integrator.prepare(state, tgrid, noise, on_substep=on_substep)
    saver = Saver(save_every, save_names, [names.index(s) for s in save_names], trajectory, chunk)
    loop = _TimeLoop(run, noise, tgrid, watchers, saver, ckpt, used_seed)
    return loop.run_from(state, check_every=check_every, max_abs=max_abs, progress=progress)


def _check_options(
    integrator: Integrator,
    initial: Sequence[torch.Tensor],
    check_every: Any,
    checkpoint: Any,
    checkpoint_every: int | None,
    resume: Any,
    overwrite: bool,
    trajectory: Any,
    save_every: int | None,
    max_abs: Any,
    noise: Any,
    seed: int | None,
    generator: Any,
) -> int:
    """Refuse inconsistent options of :func:`integrate` (in a fixed order); returns
    ``check_every`` as an int."""
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
        for name, x in zip(integrator.block_names, initial):
            if float(x.abs().max()) > max_abs:
                raise StateError(f"the initial state exceeds max_abs = {max_abs:g} in block {name}")
    if noise is not None and (seed is not None or generator is not None):
        raise ValueError("give noise= or seed=/generator=, not both")
    if generator is not None and seed is not None:
        raise ValueError("give seed= or generator=, not both")
    return check_every


def _noise_source(
    noise: NoiseSource | None,
    seed: int | None,
    generator: torch.Generator | None,
    ckpt: Checkpointer | None,
    device: torch.device,
) -> tuple[NoiseSource, int | None]:
    """The run's noise source and the seed to record: a given source or generator as it is;
    otherwise Gaussian noise from the resumed run's seed, ``seed``, or a fresh random seed."""
    if noise is not None:
        return noise, None
    used_seed = None
    if generator is None:
        stored = ckpt.stored_seed(seed) if ckpt is not None else None
        if stored is not None:
            used_seed = stored
        else:
            used_seed = secrets.randbits(62) if seed is None else int(seed)
        generator = torch.Generator(device=device)
        generator.manual_seed(used_seed)
    return GaussianNoise(generator), used_seed


class _TimeLoop:
    """The loop of one run over the steps of its grid, calling the objects that do the rest:
    the observers (:class:`~splitsde.runtime.observers.ObserverSet`), the saver
    (:class:`~splitsde.runtime.trajectory.Saver`), the checkpointer
    (:class:`~splitsde.runtime.checkpoint.Checkpointer`), the finiteness checker
    (:class:`~splitsde.runtime.divergence.FinitenessCheck`) and the progress bar.

    Between events (a save, a check, a checkpoint, an observer call, a bar update) the steps
    run back to back with nothing but the step in the loop. The state, the carried field
    values and the first step's evaluation count are the loop's own; counters live on the
    prepared run.
    """

    def __init__(
        self,
        run: PreparedRun,
        noise: NoiseSource,
        grid: TimeGrid,
        observers: ObserverSet,
        saver: Saver,
        checkpointer: Checkpointer | None,
        seed: int | None,
    ) -> None:
        self.run = run
        self.integrator = run.integrator
        self.noise = noise
        self.grid = grid
        self.observers = observers
        self.saver = saver
        self.checkpointer = checkpointer
        self.seed = seed
        self.nfe_first = 0
        self.elapsed = 0.0  # wall time of the runs before a resume
        self.started = _time.perf_counter()

    def as_map(self, state: tuple[torch.Tensor, ...]) -> dict[str, torch.Tensor]:
        return dict(zip(self.integrator.block_names, state))

    def run_from(
        self,
        state: tuple[torch.Tensor, ...],
        *,
        check_every: int,
        max_abs: float | None,
        progress: bool | None,
    ) -> Result:
        run, ckpt, saver, watchers = self.run, self.checkpointer, self.saver, self.observers
        n_steps = self.grid.steps
        if ckpt is not None:
            ckpt.begin()
        with torch.no_grad():
            watchers.start(self.grid[0], self.as_map(state), self.integrator, run.accepted)
            first, state, carry = self.restore(state)
            check = FinitenessCheck(run, self.noise, check_every, max_abs, first, state, carry)
            bar = Progress(n_steps, f"{self.integrator.word}", progress, done=first)
            try:
                k = first
                while k < n_steps:
                    win = run.window(k)
                    stop = min(self.next_event(k, check, bar), win.stop)
                    state, carry = self.steps(k, stop, state, carry, check)
                    k = stop
                    t_k = float(win.times[k - win.start])
                    if watchers:
                        watchers.after_step(k, t_k, self.as_map(state))
                    saver.after_step(k, t_k, state, n_steps)
                    due = ckpt is not None and ckpt.due(k)
                    # checked before every checkpoint: a bad state is never written
                    if k % check_every == 0 or k == n_steps or due:
                        check.check(k, state, carry)
                    if due and k < n_steps:
                        self.write(k, state, carry)
                    bar.update(k)
                saver.flush()
                if ckpt is not None:
                    self.write(n_steps, state, carry)
                finals = watchers.finish()
            finally:
                bar.close()
        return self.result(n_steps, state, finals)

    def restore(self, state: tuple[torch.Tensor, ...]) -> tuple[int, tuple[torch.Tensor, ...], Any]:
        """Start a new run (step 0), or continue the one in the checkpoint."""
        stored = self.checkpointer.stored if self.checkpointer is not None else None
        if stored is None:
            self.saver.start(self.grid[0], state)
            return 0, state, None
        run = self.run
        state = tuple(x.to(state[0].device) for x in stored["state"])
        self.noise.load_state_dict(stored["noise"])
        run.nfe[:] = list(stored["nfe"])
        self.nfe_first = int(stored["nfe_first"])
        for acc, a in zip(run.accepted, stored["accepted"]):
            acc.copy_(a)
        self.observers.load_state_dict(stored)
        self.saver.load_state_dict(stored)
        self.elapsed = float(stored["wall_time"])
        return int(stored["step"]), state, stored["carry"]

    def next_event(self, k: int, check: FinitenessCheck, bar: Progress) -> int:
        """Index after the next step that needs attention (saving, checks, ...)."""
        if self.observers or k == 0:
            return k + 1
        events = [
            self.grid.steps,
            check.next_check(k),
            self.saver.next_save(k),
            self.checkpointer.next_write(k) if self.checkpointer is not None else None,
            bar.next_update(k),
        ]
        return max(min(e for e in events if e is not None), k + 1)

    def steps(
        self,
        k: int,
        stop: int,
        state: tuple[torch.Tensor, ...],
        carry: Any,
        check: FinitenessCheck,
    ) -> tuple[tuple[torch.Tensor, ...], Any]:
        """Steps ``k, ..., stop - 1`` (all in one window of the coefficient schedule); the
        first step of a run is checked (its field outputs are validated once)."""
        run = self.run
        j = k
        try:
            if k == 0:
                self.observers.step = 0
                state, carry = run.call(0, state, carry, checked=True)
                self.nfe_first = run.nfe_total
                return state, carry
            win = run.window(k)
            const, rows, base, tl, hl = win.constant, win.rows, win.start, win.times, win.h
            hooked = self.observers.wants_substeps
            step_fn = run.lowered.hooked if hooked else run.lowered.fast
            watchers = self.observers
            for j in range(k, stop):  # the hot loop: nothing but the step
                if hooked:
                    watchers.step = j
                c = const if const is not None else rows[j - base]
                state, carry = step_fn(state, c, carry, tl[j - base], hl[j - base])
        except Exception as exc:
            check.step_failed(exc, j)
            raise
        return state, carry

    def wall_time(self) -> float:
        return self.elapsed + _time.perf_counter() - self.started

    def write(self, k: int, state: tuple[torch.Tensor, ...], carry: Any) -> None:
        """A checkpoint after step ``k``: everything needed to continue bit for bit."""
        assert self.checkpointer is not None
        run = self.run
        payload = {
            "seed": self.seed,
            "state": state,
            "carry": carry,
            "noise": self.noise.state_dict(),
            "nfe": list(run.nfe),
            "nfe_first": self.nfe_first,
            "accepted": list(run.accepted),
            **self.observers.state_dict(),
            **self.saver.state_dict(),
            "wall_time": self.wall_time(),
        }
        self.checkpointer.write(k, payload, lambda: self.partial(k, state))

    def partial(self, k: int, state: tuple[torch.Tensor, ...]) -> Result:
        """The result of the steps run so far (observers that cannot finish are left out)."""
        finals = self.observers.finish_partial()
        self.saver.flush(quiet=True)
        return self.result(k, state, finals)

    def result(self, k_done: int, state: tuple[torch.Tensor, ...], finals: dict) -> Result:
        run = self.run
        return Result(
            final=self.as_map(state),
            times=np.asarray(self.saver.times),
            states=self.saver.states(),
            observables=self.observers.observables(),
            observable_times=self.observers.observable_times(),
            finals={k: v for k, v in finals.items() if v is not None},
            nfe=run.nfe_total,
            nfe_by_field=run.nfe_by_field(),
            nfe_first_step=self.nfe_first,
            steps=k_done,
            seed=self.seed,
            wall_time=self.wall_time(),
            time_grid=self.grid,
            acceptance=[
                Acceptance(g.letter, acc.clone(), k_done)
                for g, acc in zip(self.integrator.program.groups, run.accepted)
            ],
            trajectory=self.saver.trajectory(),
        )
