"""The benchmark scripts run end to end at tiny sizes and write the JSON their docs describe
(the full-size numbers are recorded in docs/benchmarks.md; timings are not asserted here).

The diffusion benchmark runs its --quick mode (all sections, including the exponential
integrators of benchmarks/diffusion_exponential.py), about a minute on one core."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run(script: str, *args: str) -> None:
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_overhead_benchmark(tmp_path):
    out = tmp_path / "overhead.json"
    run("overhead.py", "--repeats", "1", "--sizes", "100", "--out", str(out))
    res = json.loads(out.read_text())["results"]["100"]
    # the compiled step and the hand-written loop use the same draws and operations
    assert res["max_abs_diff_vs_hand"] < 1e-5
    assert all(math.isfinite(v) and v > 0 for v in res["median_seconds"].values())


def test_analysis_benchmark(tmp_path):
    out = tmp_path / "analysis.json"
    run("analysis.py", "--quick", "--out", str(out))
    res = json.loads(out.read_text())
    cert = {c["word"]: c for c in res["certificates"]}
    assert cert["BAOAB"]["weak_order"] == 2 and cert["BAOAB"]["q2_bias"] == "0 (exact)"
    assert cert["OBA"]["weak_order"] == 1


def test_md_peers_benchmark(tmp_path):
    pytest.importorskip("openmmtools")
    out = tmp_path / "md_peers.json"
    run(
        "md_peers.py", "--particles", "50", "--steps", "20", "--alanine-steps", "20",
        "--water-edge", "1.6", "--water-steps", "5", "--rounds", "1", "--water-rounds", "1",
        "--out", str(out),
    )  # fmt: skip
    rows = json.loads(out.read_text())["rows"]
    methods = {(r["benchmark"], r["method"]) for r in rows}
    assert any(b == "harmonic" and "splitsde" in m for b, m in methods)
    assert any("openmmtools" in m for _, m in methods)
    water = [r for r in rows if r["benchmark"].startswith("water box")]
    assert {r["dt_fs"] for r in water} == {2.0, 4.0} and len(water) == 8
    assert all(r["seconds"] > 0 for r in rows)


def test_ghmc_constraints_benchmark(tmp_path):
    pytest.importorskip("openmmtools")
    out = tmp_path / "ghmc_constraints.json"
    run("ghmc_constraints.py", "--steps", "400", "--reference-steps", "400", "--burn", "100",
        "--out", str(out))  # fmt: skip
    res = json.loads(out.read_text())
    ghmc = [r for r in res["rows"] if "GHMC" in r["method"]]
    assert len(ghmc) == 8 and {r["step_fs"] for r in ghmc} == {1.0, 2.0, 3.0, 4.0}
    assert all(math.isfinite(r["mean"]) and 0 < r["acceptance"] <= 1 for r in ghmc)
    assert set(res["slopes"]) == {"splitsde GHMC (O{BAB}O)", "openmmtools GHMCIntegrator"}

@pytest.mark.slow
def test_diffusion_quality_benchmark_quick(tmp_path):
    run(
        "diffusion_quality.py", "--quick", "--out", str(tmp_path), "--no-progress", "--repeats", "1"
    )
    res = json.loads((tmp_path / "diffusion_quality_quick.json").read_text())
    assert res["quick"] and len(res["quality"]) == 6  # VP and PSLD x three targets
    claims = {c["target"]: c for c in res["claims"]}
    # exact Gaussian data: the naive words are worse than EM at low NFE in every comparison
    assert claims["gaussian-8"]["(i) naive worse than EM at NFE<=50"] == "6/6"
    assert res["overhead"][0]["hand_written_seconds"] > 0
    exp = json.loads((tmp_path / "diffusion_exponential_quick.json").read_text())
    verdict = {c["target"]: c for c in exp["claims"]}["gaussian-8"]
    assert verdict["(c) target: tAB3@10 better than DDIM@20"] == "holds"
    assert len(list(tmp_path.glob("diffusion_*.png"))) == 6


def test_verify_montecarlo_benchmark(tmp_path):
    out = tmp_path / "verify_montecarlo.json"
    run("verify_montecarlo.py", "--quick", "--walkers", "2000", "--out", str(out))
    res = json.loads(out.read_text())
    methods = [r["method"] for r in res["rows"]]
    assert "estimator, common noise, 2 processes" in methods
    assert all(r["walker_steps_per_second"] > 0 for r in res["rows"])
    assert res["variance_reduction"] > 1


def test_verify_transfer_bias_benchmark(tmp_path):
    out = tmp_path / "verify_transfer_bias.json"
    run("verify_transfer_bias.py", "--quick", "--out", str(out))
    rows = {r["word"]: r for r in json.loads(out.read_text())["rows"]}
    assert abs(rows["BAOAB"]["local_order"]["q2"] - 2.0) < 0.05
    assert abs(rows["OBA"]["local_order"]["qp"] - 1.0) < 0.05


def test_verify_bias_tables_benchmark(tmp_path):
    out = tmp_path / "verify_bias_tables.json"
    run("verify_bias_tables.py", "--quick", "--walkers", "500", "--out", str(out))
    rows = json.loads(out.read_text())["rows"]
    assert {r["problem"] for r in rows} == {"quartic", "double well", "Müller-Brown"}
    assert all(len(r["points"]) == 4 for r in rows)
