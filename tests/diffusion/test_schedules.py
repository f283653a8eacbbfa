"""Optimized schedules (splitsde.diffusion.schedules, splitsde.diffusion.schedule_search).

References: the exact KL of the sampler's output law on Gaussian data (the exact analysis),
recomputed here on the stored grids and compared with the committed benchmark JSON; log-linear
interpolation checked against a geometric grid (whose log-times are linear in the step index).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

import splitsde.diffusion as dm
from splitsde.diffusion import defaults as dd
from splitsde.diffusion.grids import GridError, optimized_schedule, time_grid
from splitsde.diffusion.schedule_search import (
    TRAINING_DATA,
    optimize_schedule,
    schedule_kl,
    training_data,
)
from splitsde.diffusion.schedules import OPTIMIZED_SCHEDULES, interpolate_schedule

RESULTS = Path(__file__).resolve().parents[2] / "benchmarks/results/optimized_schedules.json"


@pytest.fixture(scope="module")
def committed() -> dict:
    return json.loads(RESULTS.read_text())


def test_stored_schedules_are_the_committed_searches(committed):
    assert committed["training_data"] == TRAINING_DATA
    stored = {
        (name, proc, steps): grid
        for name, by_proc in OPTIMIZED_SCHEDULES.items()
        for proc, by_steps in by_proc.items()
        for steps, grid in by_steps.items()
    }
    searched = {(s["sampler"], s["process"], s["steps"]): tuple(s["grid"])
                for s in committed["searches"]}  # fmt: skip
    assert stored == searched
    for s in committed["searches"]:
        assert s["kl"] < s["kl_start"]  # the search improved on its start grid


def test_stored_schedule_reproduces_its_committed_kl(committed):
    """The exact KL of cdeis3 on PSLD over the stored 9-step schedule, on the training data
    and on the 64-D evaluation Gaussian, equals the committed values."""
    proc = dm.process("psld-cifar10")
    (s,) = [
        r
        for r in committed["searches"]
        if r["sampler"] == "cdeis3" and r["process"] == proc.name and r["steps"] == 9
    ]
    grid = time_grid(proc, "optimized", 9, sampler="cdeis3")
    assert np.array_equal(grid, np.array(s["grid"]))
    assert schedule_kl("cdeis3", proc, grid, training_data()) == pytest.approx(s["kl"], rel=1e-6)
    (row,) = [r for r in committed["evaluation"] if r["sampler"] == "cdeis3"
              and r["process"] == proc.name and r["data"] == "gaussian-64" and r["nfe"] == 10
              and r["grid"] == "optimized"]  # fmt: skip
    kl = schedule_kl("cdeis3", proc, grid, dm.target("gaussian-64", seed=0))
    assert kl == pytest.approx(row["kl"], rel=1e-6)


def test_optimized_schedules_beat_the_named_grids_on_unseen_data(committed):
    """At the stored step counts, on every evaluation Gaussian (none of them the training
    data), the optimized schedule's KL is below every named grid's."""
    stored_nfes = {(s["sampler"], s["process"], s["steps"] + 1) for s in committed["searches"]}
    rows = committed["evaluation"]
    cases = {(r["sampler"], r["process"], r["data"], r["nfe"]) for r in rows}
    checked = 0
    for name, proc, data, nfe in cases:
        if (name, proc, nfe) not in stored_nfes:
            continue
        kl = {
            r["grid"]: r["kl"]
            for r in rows
            if (r["sampler"], r["process"], r["data"], r["nfe"]) == (name, proc, data, nfe)
        }
        named = min(v for g, v in kl.items() if g != "optimized")
        assert kl["optimized"] < named, (name, proc, data, nfe, kl)
        checked += 1
    assert checked >= 16


def test_interpolation_is_log_linear_and_keeps_stored_grids():
    geo = np.geomspace(1.0, 1e-3, 10)
    assert np.array_equal(interpolate_schedule(geo, 9), geo)
    out = interpolate_schedule(geo, 18)
    np.testing.assert_allclose(out, np.geomspace(1.0, 1e-3, 19), rtol=1e-13)
    assert out[0] == 1.0 and out[-1] == 1e-3
    coarse = interpolate_schedule(geo, 3)
    np.testing.assert_allclose(coarse, [1.0, 0.1, 0.01, 0.001], rtol=1e-13)


def test_interpolated_steps_use_the_nearest_stored_schedule():
    proc = dm.process("psld-cifar10")
    stored = OPTIMIZED_SCHEDULES["cdeis3"][proc.name]
    g = optimized_schedule("cdeis3", proc, 14)
    near = min(stored, key=lambda k: (abs(k - 14), -k))
    np.testing.assert_allclose(g, interpolate_schedule(np.array(stored[near]), 14))
    assert len(g) == 15 and np.all(np.diff(g) < 0)


def test_optimized_grid_errors():
    proc = dm.process("psld-cifar10")
    with pytest.raises(GridError, match="give sampler="):
        time_grid(proc, "optimized", 9)
    with pytest.raises(GridError, match="no optimized schedule of em on psld-cifar10"):
        time_grid(proc, "optimized", 9, sampler="em")
    with pytest.raises(GridError, match="eps"):
        time_grid(proc, "optimized", 9, eps=2e-3, sampler="cdeis3")
    with pytest.raises(GridError, match="no optimized schedule"):
        dm.plan("em", proc, dm.GaussianData.random(2, seed=0).score(proc), nfe=10,
                grid="optimized")  # fmt: skip


def test_search_lowers_the_exact_kl_of_a_short_run():
    """A small search (8-D training data, 4 steps, 40 evaluations) returns a valid grid whose
    recomputed exact KL is the reported one and below the start grid's."""
    proc = dm.process("psld-cifar10")
    data = training_data(8)
    res = optimize_schedule("cdeis2", proc, 4, data=data, start="cubic", max_evaluations=40)
    assert res.grid[0] == proc.T and res.grid[-1] == proc.eps and np.all(np.diff(res.grid) < 0)
    assert res.kl_start == pytest.approx(
        schedule_kl("cdeis2", proc, time_grid(proc, "cubic", 4), data), rel=1e-12
    )
    assert res.kl == pytest.approx(schedule_kl("cdeis2", proc, res.grid, data), rel=1e-12)
    assert res.kl < 0.9 * res.kl_start
    assert math.isfinite(res.kl) and 40 <= res.evaluations <= 45


def test_psld_recommends_the_optimized_schedule_for_cdeis3():
    proc = dm.process("psld-cifar10")
    assert dd.recommended_grid("cdeis3", proc) == "optimized"
    score = dm.GaussianData.random(2, seed=0).score(proc)
    p = dm.plan("cdeis3", proc, score, nfe=10, check_stability=False)
    assert np.array_equal(p.grid, optimized_schedule("cdeis3", proc, p.steps))
    # at a number of steps without a stored schedule the recommendation is the named grid
    named = dd.RECOMMENDED_GRIDS["cdeis3"]["augmented"]
    p = dm.plan("cdeis3", proc, score, nfe=12, check_stability=False)
    assert np.array_equal(p.grid, time_grid(proc, named, p.steps))
    # asked for by name, the nearest stored schedule is interpolated
    p = dm.plan("cdeis3", proc, score, nfe=12, grid="optimized", check_stability=False)
    assert np.array_equal(p.grid, optimized_schedule("cdeis3", proc, p.steps))


def test_compare_on_the_optimized_grid_marks_samplers_without_a_schedule():
    comp = dm.compare("psld-cifar10", "gaussian-4", ["cdeis3", "em"], [10], grid="optimized",
                      exact=True, progress=False)  # fmt: skip
    c, e = comp.rows
    assert c["grid"] == "optimized" and c["kl"] > 0 and "error" not in c
    assert e["error_short"] == "no schedule" and "no optimized schedule of em" in e["error"]
    with pytest.raises(GridError, match="unknown grid"):
        dm.compare("psld-cifar10", "gaussian-4", ["em"], [10], grid="bogus", progress=False)


def test_another_eps_falls_back_to_the_named_grid():
    """A plan with its own smallest time keeps working on the recommended grid: the stored
    schedule (computed for the process's eps) gives way to the family's named grid."""
    proc = dm.process("psld-cifar10")
    score = dm.GaussianData.random(2, seed=0).score(proc)
    p = dm.plan("cdeis3", proc, score, nfe=10, eps=2e-3, check_stability=False)
    named = dd.RECOMMENDED_GRIDS["cdeis3"]["augmented"]
    assert np.array_equal(p.grid, time_grid(proc, named, p.steps, 2e-3))
