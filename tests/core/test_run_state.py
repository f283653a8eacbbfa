"""Integrators are immutable: what a run changes (field-evaluation counters, Metropolis
acceptance counts, sub-step callbacks) lives on the run and comes back in the Result."""

from __future__ import annotations

import functools

import numpy as np
import torch

import splitsde as sd
from splitsde.runtime.noise import GaussianNoise

#: Memo caches of values derived from the integrator's fixed definition (coefficient rows of
#: grids already seen): allowed to grow, they never change what a run computes.
_MEMOS = {"_grid_cache", "_row_memo"}


def _snapshot(x, depth: int = 0):
    if isinstance(x, torch.Tensor):
        return ("tensor", x.detach().cpu().clone())
    if isinstance(x, list | tuple):
        return (type(x).__name__, [_snapshot(v, depth + 1) for v in x])
    if isinstance(x, dict):
        return ("dict", {k: _snapshot(v, depth + 1) for k, v in x.items()})
    if isinstance(x, int | float | str | bool | type(None)):
        return x
    return ("object", id(x))


def _state_of(integ) -> dict:
    cached = {k for k, v in vars(type(integ)).items() if isinstance(v, functools.cached_property)}
    return {k: _snapshot(v) for k, v in vars(integ).items() if k not in _MEMOS | cached}


def _same(a, b) -> bool:
    if isinstance(a, tuple) and a and a[0] == "tensor":
        return isinstance(b, tuple) and b[0] == "tensor" and torch.equal(a[1], b[1])
    if isinstance(a, tuple) and len(a) == 2 and isinstance(a[1], list | dict):
        if not (isinstance(b, tuple) and a[0] == b[0] and type(a[1]) is type(b[1])):
            return False
        if isinstance(a[1], dict):
            return a[1].keys() == b[1].keys() and all(_same(a[1][k], b[1][k]) for k in a[1])
        return len(a[1]) == len(b[1]) and all(_same(x, y) for x, y in zip(a[1], b[1]))
    return a == b


def _system():
    return sd.langevin.underdamped(sd.potentials.Harmonic(1.0), gamma=1.0, kT=1.0)


def test_runs_leave_the_integrator_unchanged_and_return_their_counts():
    system = _system()
    integ = system.integrator("GHMC")  # counters of both kinds: field evaluations, acceptance
    y0 = system.initial_state(4)
    before = _state_of(integ)
    a = sd.integrate(integ, y0, h=0.5, steps=10, seed=1, observers=[sd.WorkAndHeat()])
    b = sd.integrate(integ, y0, h=0.5, steps=20, seed=2)
    assert _same(_state_of(integ), before)
    # each result carries its own run's counts: GHMC evaluates force and energy once per step
    # after the first (first-same-as-last), so 2 per step plus the first step's 2
    assert (a.nfe, b.nfe) == (2 * 10 + 2, 2 * 20 + 2)
    assert a.nfe_per_step == b.nfe_per_step == integ.evaluations_per_step == 2
    assert [x.trials for x in a.acceptance] == [10] and [x.trials for x in b.acceptance] == [20]
    assert 0 < a.acceptance_rate <= 1


def test_interleaved_runs_of_one_integrator_count_separately():
    system = _system()
    integ = system.integrator("BAOAB")
    y0 = tuple(system.initial_state(3).values())
    grid = np.linspace(0.0, 1.0, 11)
    seen: list[int] = []
    r1 = integ.prepare(y0, grid, GaussianNoise(torch.Generator().manual_seed(0)))
    r2 = integ.prepare(
        y0,
        grid,
        GaussianNoise(torch.Generator().manual_seed(1)),
        on_substep=lambda i, s: seen.append(i),
    )
    s1 = s2 = tuple(x.clone() for x in y0)
    c1 = c2 = None
    for k in range(4):
        s1, c1 = r1.call(k, s1, c1)
        if k < 2:
            s2, c2 = r2.call(k, s2, c2, hooked=True)
    # BAOAB: one force at the first step, then one per step (first-same-as-last)
    assert r1.nfe_total == 4 + 1 and r2.nfe_total == 2 + 1
    assert seen == [0, 1, 2, 3, 4] * 2  # only the run prepared with the callback calls it
    assert not hasattr(integ, "nfe_counts")
