"""``splitsde verify``: the certificate from the command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from splitsde.apps.cli import main

ROOT = Path(__file__).resolve().parents[2]


def test_verify_baoab_json_as_a_module_matches_closed_forms():
    """``python -m splitsde verify ... --json`` prints one JSON object whose numbers are the
    closed forms of BAOAB on the harmonic oscillator (its speed is measured by
    ``benchmarks/analysis.py``, not here)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
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


# -- user SDEs: --sde MODULE:ATTR / FILE.py:ATTR -------------------------------------------------
USER_MODULE = """
import sympy as sp
import splitsde as sd

q, p = sd.blocks("q p")
M, g, kT, om = sd.parameters("M gamma kT omega", positive=True)
F = sd.Field("F", [q], definition=-om**2 * q)
sde = sd.SDE(
    [q, p],
    {"U": sd.Flow({q: p / M, p: -g * p}, {p: sp.sqrt(2 * g * kT * M)}), "B": sd.Flow({p: F()})},
)
system = sd.System(sde, {"M": 1.0, "gamma": 1.0, "kT": 1.0, "omega": 1.5})


def build():
    return system.integrator("UBU")


# two force groups (omega^2 = 0.25 and 4): letters A, B0, B1, O
groups = sd.langevin.underdamped(
    [sd.potentials.Harmonic(0.5), sd.potentials.Harmonic(2.0)], force_groups=True
)
"""


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    path = tmp_path / "my_langevin.py"
    path.write_text(USER_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    return path


def test_verify_a_user_sde_from_a_file_or_a_module(user_module, capsys):
    assert main(["verify", "UBU", "--sde", f"{user_module}:system", "--json"]) == 0
    cert = json.loads(capsys.readouterr().out)
    assert cert["weak_order"] == 2 and cert["certified"] and cert["declared_weak_order"] == 2
    assert cert["system"].startswith("user SDE")
    # a function returning an integrator: no WORD needed
    assert main(["verify", "--sde", "my_langevin:build", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["word"] == "UBU"
    # the Lie word is first order: certified, so exit 0, with the order in the text
    assert main(["verify", "UB", "--sde", "my_langevin:system"]) == 0
    assert "verdict: certified: weak order 1" in capsys.readouterr().out


def test_verify_force_group_words_of_a_user_system(user_module, capsys):
    """B0/B1 words of a user's force-group System from the command line: the palindrome is
    certified second order, the Lie word first order, with the closed forms of the scheme's
    stationary law (velocity-Verlet kick-drift with O in the middle: q exact, p scaled by
    1 - h^2 omega^2 / 4, omega^2 = 0.25 + 4) and Verlet's bound h < 2 / omega."""
    w2 = 0.25 + 4.0
    argv = ["--sde", "my_langevin:groups", "--h", "0.1", "--json"]
    assert main(["verify", "B0 B1 A O A B1 B0", *argv]) == 0
    cert = json.loads(capsys.readouterr().out)
    assert cert["certified"] and cert["weak_order"] == cert["declared_weak_order"] == 2
    cov = np.array(cert["stationary"]["cov"])
    assert np.allclose(np.diag(cov), [1 / w2, 1 - 0.1**2 * w2 / 4], rtol=1e-12)
    assert cert["stability_bound"] == pytest.approx(2 / w2**0.5, rel=1e-9)
    assert main(["verify", "B0 B1 A O", *argv]) == 0
    cert = json.loads(capsys.readouterr().out)
    assert cert["certified"] and cert["weak_order"] == cert["declared_weak_order"] == 1


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("{file}:nothing", "has no attribute 'nothing'"),
        ("no_such_module_xyz:sde", "cannot import 'no_such_module_xyz'"),
        ("{dir}/missing.py:sde", "no file"),
        ("{file}", "MODULE:ATTRIBUTE"),
        ("{broken}:sde", "raised ZeroDivisionError"),
    ],
)
def test_verify_user_sde_errors_are_one_line(user_module, capsys, spec, message):
    broken = user_module.parent / "broken_module.py"
    broken.write_text("x = 1 / 0\n")
    spec = spec.format(file=user_module, dir=user_module.parent, broken=broken)
    assert main(["verify", "UBU", "--sde", spec]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and err.count("\n") == 1


# -- nonlinear systems: Monte Carlo with a verdict ---------------------------------------------
def test_verify_double_well_prints_the_verdict_and_plots_the_fit(tmp_path, capsys):
    fig = tmp_path / "fit.png"
    code = main(
        [
            "verify", "OBA", "--system", "double-well", "--walkers", "20000", "--mc-seed", "3",
            "--plot", str(fig),
        ]
    )  # fmt: skip
    out = capsys.readouterr()
    assert code == 0
    assert "verdict: certified: weak order 1" in out.out
    assert "unstable" in out.out and "common random numbers" in out.out
    assert "cost: Monte Carlo" in out.err  # stated before the run
    assert fig.stat().st_size > 5000


def test_verify_not_certified_exits_one_with_the_reason(capsys):
    code = main(["verify", "BAOAB", "--system", "double-well", "--walkers", "2000", "--json"])
    cert = json.loads(capsys.readouterr().out)
    assert code == 1 and not cert["certified"] and cert["weak_order"] is None
    mc = cert["monte_carlo"]
    assert mc["verdict"].startswith("NOT CERTIFIED") and mc["suggestions"]


def test_verify_plot_path_is_checked_before_computing(tmp_path, capsys):
    """A figure that cannot be written is refused when the options are parsed (status 2)."""
    bad = tmp_path / "no" / "such" / "dir" / "fit.png"
    for argv, message in [
        (["--system", "double-well", "--plot", str(bad)], f"folder {bad.parent} does not exist"),
        (["--plot", str(tmp_path / "fit.txt")], "cannot write a figure as .txt"),
    ]:
        with pytest.raises(SystemExit) as exc:
            main(["verify", "BAOAB", *argv])
        assert exc.value.code == 2
        assert message in capsys.readouterr().err


def test_verify_monte_carlo_next_to_the_exact_analysis(capsys):
    """On the harmonic oscillator the Monte Carlo estimate (exact-law reference) certifies
    the order the exact analysis finds."""
    args = ["verify", "OBA", "--monte-carlo", "--walkers", "20000", "--h", "0.2", "--json"]
    assert main(args) == 0
    cert = json.loads(capsys.readouterr().out)
    assert cert["weak_order"] == 1
    mc = cert["monte_carlo"]
    assert mc["reference_kind"] == "exact" and mc["certified_order"] == 1
