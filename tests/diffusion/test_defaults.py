"""Recommended grids and noise scales (splitsde.diffusion.defaults) and the low-NFE targets of
the conjugate samplers on PSLD.

References: the exact KL of the sampler's output law on Gaussian data (the exact analysis,
recomputed here and compared with the committed benchmark rows); the selection rule re-run on
the committed rows; the finite-sample floor of the sliced W2 distance (data against data) with
the standard error of the sampler's distance.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest

import splitsde.diffusion as dm
from splitsde.diffusion import defaults as dd
from splitsde.diffusion.grids import time_grid

RESULTS = Path(__file__).resolve().parents[2] / "benchmarks/results/diffusion_defaults.json"


@pytest.fixture(scope="module")
def committed() -> dict:
    return json.loads(RESULTS.read_text())


def test_recommendations_are_the_winners_of_the_committed_selection(committed):
    sel = dd.select(committed["rows"])
    assert committed["selection_cases"] == json.loads(json.dumps(dd.SELECTION))
    assert {k: v["grids"] for k, v in sel.items()} == dd.RECOMMENDED_GRIDS
    assert {k: v["lam"] for k, v in sel.items() if v["lam"] is not None} == dd.RECOMMENDED_LAM
    optimized = {
        k: tuple(p for p, o in v["optimized"].items() if o["wins"])
        for k, v in sel.items()
        if any(o["wins"] for o in v.get("optimized", {}).values())
    }
    assert optimized == dd.RECOMMENDED_OPTIMIZED
    # the default never loses to the uniform grid on the selection's score, for any sampler
    for name, s in sel.items():
        for fam, scores in s["scores"].items():
            assert scores[s["grids"][fam]] <= scores["uniform"], (name, fam)


@pytest.mark.parametrize(
    "name, proc_name", [("em", "vp"), ("ddim", "vp"), ("sps", "psld-cifar10"),
                        ("cdeis2", "psld-cifar10"), ("csps", "cld")],
)  # fmt: skip
def test_committed_rows_are_the_exact_kl_and_the_default_beats_uniform(committed, name, proc_name):
    """Recompute the rows of the default and the uniform grid exactly; the default's mean
    log10 KL is no worse than the uniform grid's, NFE by NFE summed."""
    proc = dm.process(proc_name)
    grid = dd.recommended_grid(name, proc)
    lam = dd.RECOMMENDED_LAM.get(name)
    tname = dd.SELECTION["targets"][0]
    nfes = dd.SELECTION["nfes"]
    rows = {
        (r["grid"], r["nfe_budget"]): r["kl"]
        for r in committed["rows"]
        if r["sampler"] == name and r["process"] == proc_name and r["target"] == tname
        and (r["lam"] is None or dd._lam_key(r["lam"]) == dd._lam_key(lam))
    }  # fmt: skip
    logs = {}
    for g in dict.fromkeys([grid, "uniform"]):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", dm.StabilityWarning)
            comp = dm.compare(proc, dm.target(tname, seed=0), [name], nfes, grid=g, exact=True,
                              progress=False)  # fmt: skip
        for r in comp.rows:
            ref = rows[(g, r["nfe_budget"])]
            if ref is None or not math.isfinite(ref) or ref > dd.SELECTION["diverged_kl"]:
                assert r.get("kl") is None or not r["kl"] < dd.SELECTION["diverged_kl"]
            else:
                assert r["kl"] == pytest.approx(ref, rel=1e-6)
        logs[g] = dd._score([r.get("kl") for r in comp.rows], dd.SELECTION["diverged_kl"])
    assert logs[grid] <= logs["uniform"]


def test_plan_and_sample_use_the_recommended_grid():
    proc = dm.process("psld-cifar10")
    tgt = dm.GaussianData.random(2, seed=0)
    score = tgt.score(proc)
    for name in ("cdeis3", "em", "sps"):
        g = dd.recommended_grid(name, proc, steps=8)
        assert g in dd.CANDIDATE_GRIDS or g == "optimized"
        p = dm.plan(name, proc, score, steps=8, check_stability=False)
        assert np.array_equal(p.grid, time_grid(proc, g, 8, sampler=name))
    assert dd.recommended_grid("cdeis3", proc) != "uniform"
    res = dm.sample("cdeis3", proc, score, 4, shape=2, nfe=10)
    g = dd.recommended_grid("cdeis3", proc, steps=res.steps)
    assert np.array_equal(res.grid, time_grid(proc, g, res.steps, sampler="cdeis3"))
    assert not np.array_equal(res.grid, time_grid(proc, "uniform", res.steps))
    # sps carries its recommended noise scale
    assert dm.sampler("sps").lam == dd.RECOMMENDED_LAM["sps"]
    assert dm.sampler("csps").lam == dd.RECOMMENDED_LAM["csps"]


def test_psld_gaussian64_conjugate_at_nfe10_beats_em_at_nfe50():
    """Issue target: exact KL of cdeis3 at NFE 10 on its recommended grid (its optimized
    schedule, searched on other Gaussian data) below EM's at NFE 50, on EM's default grid and
    on the uniform grid."""
    proc = dm.process("psld-cifar10")
    tgt = dm.target("gaussian-64", seed=0)
    assert dd.recommended_grid("cdeis3", proc) == "optimized"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dm.StabilityWarning)
        (c,) = dm.compare(proc, tgt, ["cdeis3"], [10], exact=True, progress=False).rows
        em = dm.compare(proc, tgt, ["em"], [50], exact=True, progress=False).rows[0]
        em_u = dm.compare(proc, tgt, ["em"], [50], grid="uniform", exact=True,
                          progress=False).rows[0]  # fmt: skip
    assert c["nfe"] == 10 and em["nfe"] == 50
    assert c["kl"] < em["kl"] < em_u["kl"]


@pytest.mark.parametrize("name", ["cdeis3", "csps"])
def test_psld_ring_at_the_floor_by_nfe20(name):
    """Issue target: sliced W2 of 10^4 samples at NFE 20 within 4 standard errors of the
    finite-sample floor (data vs data)."""
    (r,) = dm.compare("psld-cifar10", "ring-8", [name], [20], n=10_000, progress=False).rows
    assert not r["diverged"] and not r.get("unstable")
    assert r["sliced_w2"] - r["sliced_w2_floor"] < 4 * r["sliced_w2_se"], r


def test_benchmark_quick(tmp_path):
    """The benchmark's smoke mode runs and writes its sections (selection rows with exact KL,
    bounds, ring distances)."""
    import importlib.util

    path = RESULTS.parents[1] / "diffusion_defaults.py"
    spec = importlib.util.spec_from_file_location("diffusion_defaults_bench", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = tmp_path / "quick.json"
    assert mod.main(["--quick", "--out", str(out), "--no-progress"]) == 0
    data = json.loads(out.read_text())
    assert data["quick"] and data["rows"] and data["selection"]
    assert all(r["kl"] is None or r["kl"] > 0 for r in data["rows"])
    assert {b["sampler"] for b in data["stability"]} == {"em"}
    assert data["ring"][0]["sliced_w2"] > 0
