"""Resources: memory before step 1 does not grow with the number of steps, chunked grids and
coefficients give bit for bit the results of one chunk, and overlong words are refused."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch

import splitsde as sd
import splitsde.runtime.schedule as schedule
from splitsde.symbolic.expint import ExponentialMultistep

ROOT = Path(__file__).resolve().parents[2]


class _Stop(Exception):
    pass


class _StopAfterFirstStep(sd.Observer):
    name = "stop"

    def on_step(self, k, t, state):
        raise _Stop


def _setup_peak(integ, y0, steps: int) -> int:
    """Peak of Python-tracked allocations (numpy arrays, lists, floats) from the call of
    integrate to the end of step 1."""
    tracemalloc.start()
    try:
        with pytest.raises(_Stop):
            sd.integrate(integ, y0, h=1e-3, steps=steps, seed=0, observers=[_StopAfterFirstStep()])
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("word", ["BAOAB", "GHMC"])
def test_memory_before_step_1_does_not_grow_with_steps(word):
    system = sd.langevin.underdamped(sd.potentials.Harmonic(1.0))
    integ = system.integrator(word)
    y0 = system.initial_state(4)
    _setup_peak(integ, y0, 10)  # warm caches (lowering, lambdified coefficients)
    small = _setup_peak(integ, y0, 10**5)
    huge = _setup_peak(integ, y0, 2 * 10**9)  # ~110 B/step before: 220 GB, never started
    assert huge < small + 64 * 1024, (small, huge)
    assert huge < 8 * 2**20, huge


def test_time_dependent_coefficients_do_not_grow_with_steps():
    """An Ornstein--Uhlenbeck flow with rate 1/(1 + t): its coefficients depend on time and
    are evaluated a chunk at a time (one pass over the grid before step 1 checks them all)."""
    integ = _time_dependent()
    y0 = {"x": torch.ones(4, 1, dtype=torch.float64)}
    _setup_peak(integ, y0, 10)
    small = _setup_peak(integ, y0, 10**5)
    large = _setup_peak(integ, y0, 10**6)
    assert large < small + 64 * 1024, (small, large)


def _multistep():
    z = sd.Block("z")
    a = sd.Parameter("a", positive=True)
    field = sd.Field("F", [z])
    sde = sd.SDE([z], {"N": sd.Flow({z: -a * z + field()})})
    return sd.Integrator(
        sde,
        "N",
        {"a": 1.7},
        {"F": lambda v: torch.sin(3 * v) + v**2 / 4},
        solvers={"N": ExponentialMultistep(2, "t")},
    )


def _time_dependent():
    x = sd.Block("x")
    sde = sd.SDE([x], {"O": sd.Flow({x: -x / (1 + sd.t)}, {x: 1.0})})
    return sd.Integrator(sde, "O")


@pytest.mark.parametrize("case", ["autonomous", "time-dependent", "multistep history"])
def test_chunked_runs_equal_one_chunk_bit_for_bit(monkeypatch, case):
    """Chunks of 7 steps (and a cache of 3 step lengths) against one chunk: the same numbers,
    on a non-uniform grid whose steps all differ, through a resume in mid-chunk."""
    rng = np.random.default_rng(0)
    grid = np.concatenate([[0.0], np.cumsum(rng.uniform(0.01, 0.03, 60))])
    if case == "autonomous":
        system = sd.langevin.underdamped(sd.potentials.DoubleWell(1.0))
        integ, y0 = system.integrator("BAOAB"), system.initial_state(3, dim=2)
    elif case == "time-dependent":
        integ, y0 = _time_dependent(), {"x": torch.ones(3, 1, dtype=torch.float64)}
    else:
        integ, y0 = _multistep(), {"z": torch.linspace(-1, 1, 3, dtype=torch.float64)[:, None]}
    whole = sd.integrate(integ, y0, grid=grid, seed=1, save_every=1)
    monkeypatch.setattr(schedule, "CHUNK", 7)
    monkeypatch.setattr(schedule, "CACHE", 3)
    chunked = sd.integrate(integ, y0, grid=grid, seed=1, save_every=1)
    for k in whole.states:
        assert torch.equal(whole.states[k], chunked.states[k])
    np.testing.assert_array_equal(whole.times, grid)
    np.testing.assert_array_equal(chunked.times, grid)


def test_resume_in_mid_chunk_is_bit_identical(tmp_path, monkeypatch):
    monkeypatch.setattr(schedule, "CHUNK", 7)
    integ = _multistep()
    y0 = {"z": torch.linspace(-1, 1, 3, dtype=torch.float64)[:, None]}
    grid = np.concatenate([[0.0], np.cumsum(np.linspace(0.01, 0.03, 40))])
    full = sd.integrate(integ, y0, grid=grid, seed=1)
    path = tmp_path / "run.ckpt"

    class Stop(sd.Observer):
        name = "stop"

        def __init__(self, at):
            self.at = at

        def on_step(self, k, t, state):
            if k + 1 == self.at:
                raise KeyboardInterrupt

    def run(at, **kw):
        return sd.integrate(
            integ, y0, grid=grid, seed=1, observers=[Stop(at)], checkpoint=path, **kw
        )

    with pytest.raises(KeyboardInterrupt):
        run(24, checkpoint_every=10)  # killed at step 24, checkpoint at 20 (chunk 14..20)
    resumed = run(None, resume=True)
    assert torch.equal(resumed.final["z"], full.final["z"])


def test_uniform_grid_times_are_those_of_the_full_array():
    res = sd.integrate(
        _time_dependent(), {"x": torch.ones(2, 1)}, t0=0.7, h=0.013, steps=40, seed=0,
        save_every=3,
    )  # fmt: skip
    full = 0.7 + 0.013 * np.arange(41, dtype=np.float64)
    np.testing.assert_array_equal(res.grid, full)
    np.testing.assert_array_equal(res.times, full[[*range(0, 41, 3), 40]])
    np.testing.assert_array_equal(sd.make_grid(0.7, h=0.013, steps=40), full)
    lin = sd.make_grid(0.5, t1=2.0, steps=30)
    np.testing.assert_array_equal(lin, np.linspace(0.5, 2.0, 31))


def test_an_overlong_word_is_refused_quickly():
    """1e5 letters took minutes and gigabytes; the text is refused before parsing, and a word
    of more than 1000 occurrences before any compilation."""
    system = sd.langevin.underdamped(sd.potentials.Harmonic(1.0))
    started = time.perf_counter()
    with pytest.raises(sd.WordError, match=r"100000 characters long; at most 20000"):
        system.integrator("BAOAB" * 20_000)
    with pytest.raises(sd.WordError, match=r"1500 letter occurrences; at most 1000"):
        system.integrator("BAOAB" * 300)
    assert time.perf_counter() - started < 10.0


def test_memory_benchmark_quick(tmp_path):
    """The benchmark script end to end (three fresh processes, about 15 s on an idle machine)."""
    out = tmp_path / "memory.json"
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "memory.py"), "--quick", "--out", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads(out.read_text())["rows"]
    assert len(rows) >= 2 and all(r["peak_rss_mb"] > 0 for r in rows)
