"""The ``splitsde`` command line: sample and demo."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from splitsde.cli import main


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "splitsde", *args], capture_output=True, text=True, timeout=300
    )


def test_sample_json_has_statistics_with_error_bars(capsys):
    code = main(
        [
            "sample",
            "--system",
            "harmonic",
            "--word",
            "BAOAB",
            "--h",
            "0.5",
            "--steps",
            "400",
            "--walkers",
            "2000",
            "--seed",
            "3",
            "--json",
        ]
    )
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["word"] == "BAOAB" and out["h"] == 0.5 and out["nfe_per_step"] == 1
    for block in ("q", "p"):
        for key in ("mean", "var", "mean_se", "var_se"):
            assert len(out["blocks"][block][key]) == 1
    q = out["blocks"]["q"]
    assert abs(q["var"][0] - 1.0) < 4 * q["var_se"][0]  # BAOAB: exact positions


def test_sample_float32_double_well_and_muller_brown(capsys):
    assert (
        main(
            [
                "sample",
                "--system",
                "double-well",
                "--word",
                "OBABO",
                "--h",
                "0.1",
                "--steps",
                "50",
                "--walkers",
                "16",
                "--dtype",
                "float32",
                "--json",
            ]
        )
        == 0
    )
    out = json.loads(capsys.readouterr().out)
    assert out["dtype"] == "float32" and out["exact"]["q"]["var"][0] == pytest.approx(0.8327, 1e-3)
    assert (
        main(
            ["sample", "--system", "muller-brown", "--steps", "20", "--walkers", "4", "--h", "0.01"]
        )
        == 0
    )
    assert "q[1]" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--word", "BAXAB"], "unknown letter 'X'"),
        (["--word", "B[1/3] A O A B"], "some occurrences only"),
        (["--h", "-1"], "must be positive"),
        (["--walkers", "1"], "at least 2"),
        (["--system", "nope"], "invalid choice"),
    ],
)
def test_bad_options_exit_non_zero_with_message(args, message):
    proc = run_cli("sample", "--steps", "5", "--walkers", "4", *args)
    assert proc.returncode != 0
    assert message in proc.stderr


def test_demo_quick_writes_its_figures(tmp_path):
    proc = run_cli("demo", "--quick", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "double_well_histogram.png").stat().st_size > 1000
    assert "Boltzmann" in proc.stdout or "<q^2>" in proc.stdout
