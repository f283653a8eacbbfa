"""``splitsde verify``: the certificate from the command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from splitsde.cli import main

ROOT = Path(__file__).resolve().parents[2]


def test_verify_baoab_json_under_ten_seconds():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    started = time.perf_counter()
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "splitsde",
            "verify",
            "BAOAB",
            "--system",
            "harmonic",
            "--json",
            "--h",
            "0.2",
            "--omega",
            "1.5",
            "--kT",
            "0.7",
            "--mass",
            "2.0",
        ],
        capture_output=True,
        text=True,
        env=env,
        check=True,
        timeout=60,
    )
    elapsed = time.perf_counter() - started
    assert elapsed < 10.0, f"verify took {elapsed:.1f} s"
    cert = json.loads(out.stdout)
    assert cert["word"] == "BAOAB"
    assert cert["weak_order"] == 2 and cert["declared_weak_order"] == 2
    assert cert["nfe_per_step"] == 1.0
    assert set(cert["stationary"]) == {"q2", "p2", "qp"}
    # closed forms (Leimkuhler & Matthews): <q^2> exact, <p^2> = kT (M - omega^2 h^2 / 4)
    assert cert["stationary"]["q2"] == pytest.approx(0.7 / 1.5**2, rel=1e-12)
    assert cert["stationary"]["p2"] == pytest.approx(0.7 * (2.0 - 1.5**2 * 0.2**2 / 4), rel=1e-12)
    assert abs(cert["stationary"]["qp"]) < 1e-14
    assert cert["stationary_exact"] == pytest.approx({"q2": 0.7 / 1.5**2, "p2": 1.4, "qp": 0.0})
    assert cert["bias_orders"] == {"q2": None, "p2": 2, "qp": None}
    # Verlet's bound h < 2 sqrt(M) / omega
    assert cert["stability_bound"] == pytest.approx(2 * 2.0**0.5 / 1.5, rel=1e-9)


def test_verify_overdamped_euler_maruyama(capsys):
    assert (
        main(
            [
                "verify",
                "BO",
                "--system",
                "overdamped-harmonic",
                "--omega",
                "2",
                "--h",
                "0.2",
                "--json",
            ]
        )
        == 0
    )
    cert = json.loads(capsys.readouterr().out)
    assert set(cert["stationary"]) == {"q2"}
    assert cert["stationary"]["q2"] == pytest.approx(1 / (4 * (1 - 0.2 * 4 / 2)), rel=1e-12)
    assert cert["weak_order"] == 1 and cert["bias_orders"] == {"q2": 1}
    assert cert["stability_bound"] == pytest.approx(0.5, rel=1e-9)  # h < 2 / omega^2


def test_verify_linear_text_and_plot(tmp_path, capsys):
    fig = tmp_path / "cert.png"
    assert (
        main(
            ["verify", "OBA", "--system", "linear", "--dim", "3", "--seed", "2", "--plot", str(fig)]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert "finite-time weak order (quadratic observables): 1" in text
    assert "covariance (3x3)" in text
    assert fig.stat().st_size > 1000


def test_verify_unstable_step_and_bad_word(capsys):
    assert main(["verify", "BAOAB", "--h", "2.5", "--json"]) == 0
    cert = json.loads(capsys.readouterr().out)
    assert cert["stationary"] is None and cert["spectral_radius"] > 1
    assert main(["verify", "BAXAB"]) == 2
    assert "unknown letter 'X'" in capsys.readouterr().err
