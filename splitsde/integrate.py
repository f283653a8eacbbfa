"""The one time loop (architecture rule 2).

:func:`integrate` runs any :class:`~splitsde.compose.integrator.Integrator` over a uniform or
given time grid with a seeded generator, calls observers, saves states, shows a progress bar
(only on a terminal), checks for non-finite values and reports the measured number of field
evaluations.

Non-finite values are checked every ``check_every`` steps; when one is found the run is
replayed deterministically from the last good snapshot with per-sub-step checks, so the error
names the exact step, sub-step and block at no per-step cost.

Long runs write checkpoints (``checkpoint=``, ``checkpoint_every=``; see
:mod:`splitsde.checkpoint`) and resume from them bit for bit (``resume=True``); saved states can
stream to disk in chunks (``trajectory=``; see :mod:`splitsde.trajectory`).
"""

from __future__ import annotations

import math
import os
import secrets
import time as _time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from splitsde.checkpoint import (
    CheckpointError,
    check_fingerprint,
    read_checkpoint,
    run_fingerprint,
    write_checkpoint,
)
from splitsde.compose.integrator import FieldError, Integrator, NonFiniteError
from splitsde.noise import GaussianNoise, NoiseSource
from splitsde.observers import Observer
from splitsde.progress import progress_bar
from splitsde.trajectory import Trajectory, TrajectoryWriter

__all__ = ["Acceptance", "Result", "integrate", "make_grid"]


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
    acceptance:
        Metropolis statistics, one :class:`Acceptance` per ``{ }`` group of the word.
    trajectory:
        The streamed :class:`~splitsde.trajectory.Trajectory` when ``trajectory=`` was given
        (``states`` is then empty).
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
    grid: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0))
    acceptance: list[Acceptance] = field(default_factory=list)
    trajectory: Trajectory | None = None

    @property
    def acceptance_rate(self) -> float | None:
        """Fraction of accepted Metropolis proposals over all groups, walkers and steps."""
        if not self.acceptance:
            return None
        acc = sum(int(a.accepted.sum()) for a in self.acceptance)
        return acc / sum(a.accepted.numel() * a.trials for a in self.acceptance)

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
    ``steps``; ``t1`` and ``h`` (when ``(t1 - t0)/h`` is an integer)."""
    if grid is not None:
        if h is not None or steps is not None or t1 is not None:
            raise ValueError("give either grid= or h/steps/t1, not both")
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
        return g
    if steps is not None:
        if int(steps) != steps or steps < 1:
            raise ValueError(f"steps must be a positive integer, got {steps}")
        steps = int(steps)
    if h is not None and steps is not None and t1 is None:
        if not (h > 0 and math.isfinite(h)):
            raise ValueError(f"h must be positive and finite, got {h}")
        return t0 + h * np.arange(steps + 1, dtype=np.float64)
    if t1 is not None and steps is not None and h is None:
        if not t1 > t0:
            raise ValueError(f"t1 = {t1} must exceed t0 = {t0}")
        return np.linspace(t0, t1, steps + 1, dtype=np.float64)
    if t1 is not None and h is not None and steps is None:
        n = (t1 - t0) / h
        if not (n > 0 and abs(n - round(n)) < 1e-9 * max(1.0, n)):
            raise ValueError(f"(t1 - t0)/h = {n} is not a positive integer; give steps= instead")
        return t0 + h * np.arange(round(n) + 1, dtype=np.float64)
    raise ValueError("give grid=, or two of h=, steps=, t1=")


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
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: int | None = None,
    resume: bool = False,
    trajectory: str | os.PathLike | None = None,
    chunk: int = 100,
) -> Result:
    """Run ``integrator`` from ``y0`` over a time grid.

    Parameters
    ----------
    y0:
        Initial state, block name -> tensor ``(batch, ...)``; it is copied, never modified.
    t0, h, steps, t1, grid:
        The time grid (see :func:`make_grid`).
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
    checkpoint, checkpoint_every:
        Write a checkpoint file (see :mod:`splitsde.checkpoint`) every ``checkpoint_every``
        steps and at the end, atomically.
    resume:
        If the ``checkpoint`` file exists, continue from it (bit for bit the run that wrote
        it, on the same device and dtype); a checkpoint of another run or a damaged file is
        refused with :class:`~splitsde.checkpoint.CheckpointError`. Without a file the run
        starts from ``y0``, so the same call both starts and restarts a job.
    trajectory, chunk:
        Stream the saved states to this directory in chunks of ``chunk`` frames instead of
        keeping them in memory (see :class:`~splitsde.trajectory.Trajectory`); a crash loses
        at most one chunk.
    """
    initial = integrator.check_state(y0)
    state = tuple(x.detach().clone() for x in initial)
    times = make_grid(t0, h=h, steps=steps, t1=t1, grid=grid)
    n_steps = len(times) - 1
    if check_every < 1:
        raise ValueError("check_every must be at least 1")
    if checkpoint_every is not None and (checkpoint is None or checkpoint_every < 1):
        raise ValueError("checkpoint_every needs checkpoint= and must be at least 1")
    if resume and checkpoint is None:
        raise ValueError("resume=True needs checkpoint= (the file to resume from)")
    if trajectory is not None and not save_every:
        raise ValueError("trajectory= streams the saved states: give save_every= as well")
    ckpt = Path(checkpoint) if checkpoint is not None else None
    stored = read_checkpoint(ckpt, state[0].device) if resume and ckpt.exists() else None
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
        elif seed is not None:
            raise ValueError("give seed= or generator=, not both")
        noise = GaussianNoise(generator)
    elif seed is not None or generator is not None:
        raise ValueError("give noise= or seed=/generator=, not both")

    names = integrator.blocks
    save_names = tuple(save) if save is not None else names
    bad = set(save_names) - set(names)
    if bad:
        raise ValueError(f"cannot save unknown block(s) {sorted(bad)}")
    save_idx = [names.index(s) for s in save_names]
    observers = list(observers)
    # the fingerprint prints the program: only pay for it when checkpointing
    fingerprint = (
        run_fingerprint(
            integrator,
            initial,
            times,
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
        check_fingerprint(ckpt, stored["fingerprint"], fingerprint)

    counts = integrator.nfe_counts
    counts[:] = [0] * len(counts)
    run = integrator.prepare(state, times, noise)
    sub_obs = [o for o in observers if o.substeps]
    records: dict[str, list[Any]] = {o.name: [] for o in observers}
    record_t: dict[str, list[float]] = {o.name: [] for o in observers}
    if len(records) != len(observers):
        raise ValueError("observer names must be distinct")
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
    with torch.no_grad():
        for o in observers:
            if hasattr(o, "watch_acceptance"):  # live Metropolis counters, for reporters
                o.watch_acceptance(run.accepted)
            o.start(float(times[0]), as_map(state), integrator)
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
                keep(float(times[0]), state)

        def write(k_done: int) -> None:
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

        bar = progress_bar(n_steps, f"{integrator.word}", progress)
        if bar is not None and first:
            bar.update(first)
        stride = max(1, n_steps // 200)
        snapshot = _Snapshot(
            first, _clone(state), _clone(carry), _clone(noise.state_dict()), list(counts)
        )
        hooked = bool(sub_obs)
        step_fn = run.lowered.hooked if hooked else run.lowered.fast
        const, per_step, tl, hl = run.constant, run.per_step, run.t, run.h

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
            stop = next_event(k)
            j = k
            try:
                if k == 0:
                    step_ctx["k"] = 0
                    state, carry = run.call(0, state, carry, checked=True)
                    nfe_first = sum(counts)
                else:
                    for j in range(k, stop):  # the hot loop: nothing but the step
                        if hooked:
                            step_ctx["k"] = j
                        c = const if const is not None else per_step[j]
                        state, carry = step_fn(state, c, carry, tl[j], hl[j])
            except NonFiniteError as err:
                raise NonFiniteError(
                    f"step {j} (t = {times[j]:.6g}): {err}",
                    step=j,
                    substep=err.substep,
                    block=err.block,
                ) from None
            except FieldError as err:
                raise FieldError(f"step {j} (t = {times[j]:.6g}): {err}") from None
            k = stop
            last = k - 1  # the step just completed
            if observers:
                m = as_map(state)
                for o in observers:
                    v = o.on_step(last, float(times[k]), m)
                    if v is not None and k % o.every == 0:
                        records[o.name].append(
                            v.detach().clone() if isinstance(v, torch.Tensor) else v
                        )
                        record_t[o.name].append(float(times[k]))
            if save_every and (k % save_every == 0 or k == n_steps):
                keep(float(times[k]), state)
            if k % check_every == 0 or k == n_steps:
                if not all(bool(torch.isfinite(x).all()) for x in state):
                    _replay(run, integrator, snapshot, noise, times, k)
                snapshot = _Snapshot(
                    k, _clone(state), _clone(carry), _clone(noise.state_dict()), list(counts)
                )
            due = checkpoint_every and k % checkpoint_every == 0 and k < n_steps
            if ckpt is not None and due:
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
    wall = elapsed + _time.perf_counter() - started
    observables = {name: _stack(v) for name, v in records.items() if v}
    obs_times = {name: np.asarray(v) for name, v in record_t.items() if v}
    states = (
        {n: torch.stack([s[j] for s in saved]) for j, n in enumerate(save_names)} if saved else {}
    )
    acceptance = [
        Acceptance(g.letter, acc.clone(), n_steps)
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
        steps=n_steps,
        seed=used_seed,
        wall_time=wall,
        grid=times,
        acceptance=acceptance,
        trajectory=Trajectory(trajectory) if trajectory is not None else None,
    )


def _stack(values: list[Any]) -> Any:
    if all(isinstance(v, torch.Tensor) for v in values):
        return torch.stack(values)
    return np.asarray(values)


def _replay(
    run: Any, integ: Integrator, snap: _Snapshot, noise: NoiseSource, times: np.ndarray, upto: int
) -> None:
    """Re-run from the last good snapshot with per-sub-step checks to name the culprit."""
    state = _clone(snap.state)
    carry = _clone(snap.carry)
    noise.load_state_dict(_clone(snap.noise))
    for k in range(snap.step, upto):
        try:
            state, carry = run.call(k, state, carry, checked=True)
        except NonFiniteError as err:
            raise NonFiniteError(
                f"step {k} (t = {times[k]:.6g}, h = {times[k + 1] - times[k]:.6g}): {err}; "
                "the step size may exceed the scheme's stability bound",
                step=k,
                substep=err.substep,
                block=err.block,
            ) from None
        except FieldError as err:
            raise FieldError(f"step {k} (t = {times[k]:.6g}): {err}") from None
    raise NonFiniteError(f"non-finite values appeared between steps {snap.step} and {upto}")
