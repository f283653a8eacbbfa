"""The ``splitsde`` command line: sample and demo."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import integrate

from splitsde.apps.cli import main


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


# (label, file) of every figure `splitsde demo` announces, in order (splitsde/apps/demo.py and
# splitsde/diffusion/demo.py)
DEMO_FIGURES = [
    ("histogram", "double_well_histogram.png"),  # double-well section
    ("figure", "certificates_stationary_bias.png"),  # certificates section
    ("samples", "diffusion_mixture.png"),  # diffusion section, PSLD
    ("samples", "diffusion_exponential.png"),  # diffusion section, VP
]


def _double_well_boltzmann_q2(kT: float) -> float:
    """<q^2> under exp(-(q^2 - 1)^2 / kT) by quadrature (independent of the library)."""
    w = lambda q: math.exp(-((q * q - 1) ** 2) / kT)  # noqa: E731
    z = integrate.quad(w, -np.inf, np.inf, epsabs=0, epsrel=1e-12)[0]
    return integrate.quad(lambda q: q * q * w(q), -np.inf, np.inf, epsabs=0, epsrel=1e-12)[0] / z


def test_demo_quick_writes_its_figures(tmp_path):
    """``splitsde demo --quick``: every figure the three sections announce is written (a PNG
    file, and no other file), and the double-well table is right: the printed exact values
    are the Boltzmann moments (<q> = 0 by symmetry, <q^2> by quadrature, to the 5 printed
    decimals) and the sampled BAOAB values agree with them within 4 printed standard errors
    (the run is seeded; BAOAB's bias of <q^2> at h = 0.1, -4e-4 +- 3e-4 from 4000 walkers x
    4000 steps, is a tenth of the quick run's standard error). The printed standard errors
    must be small enough to mean something: 4 se of <q> below 0.1 (a run stuck in one well has
    |<q>| ~ 0.9) and 4 se of <q^2> below 6% of it. The printed se of <q^2> is the demo's
    batch-means se of the variance (64 batches of ~3 walkers), measured ~1.4x the
    walker-to-walker se of <q^2> in the quick run, so this check is conservative."""
    proc = run_cli("demo", "--quick", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout

    announced = re.findall(r"^\s+(histogram|figure|samples): (\S+)$", out, flags=re.M)
    assert [(kind, Path(path).name) for kind, path in announced] == DEMO_FIGURES, announced
    for _, path in announced:
        assert Path(path).resolve().parent == tmp_path.resolve()
    written = sorted(p.name for p in tmp_path.iterdir())
    assert written == sorted(name for _, name in DEMO_FIGURES), written
    for name in written:
        data = (tmp_path / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000, (name, len(data))

    kT = float(re.search(r"U = \(q\^2 - 1\)\^2, kT = ([0-9.]+),", out).group(1))
    number = r"\s+([-+0-9.eE]+)"
    rows = {
        m.group(1): tuple(float(m.group(i)) for i in (2, 3, 4))
        for m in re.finditer(r"^\s+(<q>|<q\^2>)" + 3 * number + r"\s*$", out, flags=re.M)
    }
    assert set(rows) == {"<q>", "<q^2>"}, out
    mean, mean_se, mean_exact = rows["<q>"]
    q2, q2_se, q2_exact = rows["<q^2>"]
    assert mean_exact == 0.0
    assert q2_exact == pytest.approx(_double_well_boltzmann_q2(kT), abs=6e-6)
    assert 0 < mean_se < 0.025 and 0 < q2_se < 0.015 * q2_exact, (mean_se, q2_se)
    assert abs(mean - mean_exact) < 4 * mean_se, (mean, mean_se)
    assert abs(q2 - q2_exact) < 4 * q2_se, (q2, q2_se, q2_exact)
