"""Divergence: a run beyond the stability bound fails with the step and the exact bound,
non-finite or exploding values stop a run, and a field fault is not blamed on the step size.

Reference: BAOAB on the harmonic oscillator q'' = -omega^2 q is stable iff h omega < 2 (the
velocity-Verlet bound; the O step only contracts), for every friction. The one-step matrix below
is written out by hand from the sub-steps B A O A B."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch

import splitsde as sd
from splitsde.apps.cli import main
from splitsde.base.stats import z_score
from splitsde.runtime.divergence import DivergenceError, linear_stability


def baoab_matrix(h: float, omega: float, gamma: float) -> np.ndarray:
    """The noise-free BAOAB map of (q, p), unit mass, as a product of its five sub-steps."""
    B = np.array([[1.0, 0.0], [-(omega**2) * h / 2, 1.0]])
    A = np.array([[1.0, h / 2], [0.0, 1.0]])
    O = np.array([[1.0, 0.0], [0.0, math.exp(-gamma * h)]])
    return B @ A @ O @ A @ B


def rho(M: np.ndarray) -> float:
    return float(np.max(np.abs(np.linalg.eigvals(M))))


@pytest.mark.parametrize("omega", [1.0, 2.0])
def test_sample_beyond_the_bound_fails_before_the_run_with_the_exact_bound(capsys, omega):
    h = 2.5 / omega
    code = main(["sample", "--h", str(h), "--omega", str(omega), "--steps", "2000"])
    err = capsys.readouterr().err
    assert code != 0
    bound = float(re.search(r"stability bound h < ([0-9.e+-]+)", err).group(1))
    assert abs(bound - 2 / omega) < 1e-5 * (2 / omega)
    radius = float(re.search(r"spectral radius ([0-9.e+-]+)", err).group(1))
    assert abs(radius - rho(baoab_matrix(h, omega, 1.0))) < 1e-5
    assert "bias/se" not in capsys.readouterr().out


def test_sample_just_inside_the_bound_runs(capsys):
    assert main(["sample", "--h", "1.9", "--steps", "200", "--walkers", "64", "--json"]) == 0


def test_exploding_state_names_the_first_step_beyond_max_abs():
    """h = 2.5 on the harmonic oscillator: a finite state grows like rho^k (the 1e162 variance
    of the report); with max_abs = 1e6 the error names the first step that crossed it."""
    h, omega, gamma = 2.5, 1.0, 1.0
    system = sd.langevin.underdamped(sd.potentials.Harmonic(omega), gamma=gamma)
    y0 = {"q": torch.ones(2, 1, dtype=torch.float64), "p": torch.zeros(2, 1, dtype=torch.float64)}
    M, y, expected = baoab_matrix(h, omega, gamma), np.array([1.0, 0.0]), None
    for k in range(200):
        y = M @ y
        if np.max(np.abs(y)) > 1e6:
            expected = k
            break
    with pytest.raises(DivergenceError) as err:
        sd.integrate(
            system.integrator("BAOAB"), y0, h=h, steps=2000, noise=sd.ZeroNoise(),
            check_every=1000, max_abs=1e6,
        )  # fmt: skip
    assert err.value.step == expected
    assert isinstance(err.value, sd.NonFiniteError)
    msg = str(err.value)
    assert f"step {expected} " in msg and "max_abs = 1e+06" in msg
    bound = float(re.search(r"stability bound h < ([0-9.e+-]+)", msg).group(1))
    assert abs(bound - 2.0) < 1e-5


def test_float32_overflow_names_the_exact_bound():
    system = sd.langevin.underdamped(sd.potentials.Harmonic(1.0))
    y0 = system.initial_state(4, dtype=torch.float32)
    with pytest.raises(sd.NonFiniteError, match=r"exceeds the scheme's stability bound h < 2 "):
        sd.integrate(system.integrator("BAOAB"), y0, h=2.5, steps=5000, seed=0)


def test_nonlinear_divergence_says_may_exceed():
    system = sd.langevin.underdamped(sd.potentials.DoubleWell(1.0))
    y0 = system.initial_state(4)
    with pytest.raises(sd.NonFiniteError, match=r"h = 1\.5 may exceed the scheme's stability"):
        sd.integrate(system.integrator("BAOAB"), y0, h=1.5, steps=500, seed=0)


def test_sample_of_a_diverging_nonlinear_system_exits_nonzero_with_the_step(capsys):
    code = main(["sample", "--system", "double-well", "--h", "1.5", "--steps", "300"])
    err = capsys.readouterr().err
    assert code != 0 and re.search(r"diverged: step \d+ ", err)


def test_a_field_fault_within_the_bound_is_blamed_on_the_field():
    """F(q) = -q, except NaN below q = -50 (a bug in the force). The system is linear where
    probed, h = 0.1 is far inside its bound h < 2, so the message blames the field."""
    q, p = sd.blocks("q p")
    F = sd.Field("F", [q])
    sde = sd.SDE(
        [q, p], {"A": sd.Flow({q: p}), "B": sd.Flow({p: F()}), "O": sd.Flow({p: -p}, {p: 1.0})}
    )

    def force(x):
        return torch.where(x < -50, torch.full_like(x, float("nan")), -x)

    integ = sd.System(sde, fields={"F": force}).integrator("BAOAB")
    y0 = {"q": torch.full((2, 1), -45.0, dtype=torch.float64)}
    y0["p"] = torch.full((2, 1), -30.0, dtype=torch.float64)  # crosses q = -50 in step 1
    with pytest.raises(sd.NonFiniteError) as err:
        sd.integrate(integ, y0, h=0.1, steps=100, noise=sd.ZeroNoise())
    msg = str(err.value)
    assert err.value.field == "F" and err.value.step > 0
    assert "h = 0.1 is within the scheme's stability bound" in msg
    assert "the field itself is not finite there" in msg and "may exceed" not in msg


def test_linear_stability_matches_the_hand_written_matrix():
    for h in (0.5, 1.9, 2.1, 3.0):
        system = sd.langevin.underdamped(sd.potentials.Harmonic(1.0), gamma=0.7)
        stab = linear_stability(system.integrator("BAOAB"), h)
        assert abs(stab.spectral_radius - rho(baoab_matrix(h, 1.0, 0.7))) < 1e-10
        assert stab.stable == (h < 2)
        if h > 2:
            assert abs(stab.bound - 2.0) < 1e-9
    double_well = sd.langevin.underdamped(sd.potentials.DoubleWell(1.0))
    assert linear_stability(double_well.integrator("BAOAB"), 0.1) is None


def test_no_z_score_over_a_zero_or_infinite_standard_error():
    assert z_score(1.2, 1.0, 0.1) == pytest.approx(2.0)
    for se in (0.0, -1.0, math.inf, math.nan):
        assert z_score(1.2, 1.0, se) is None
    assert z_score(math.inf, 1.0, 0.1) is None and z_score(1.0, math.nan, 0.1) is None


def test_sample_json_z_scores(capsys):
    import json

    assert main(["sample", "--steps", "300", "--walkers", "64", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    for name in ("q", "p"):
        b, ex = out["blocks"][name], out["exact"][name]
        for v, e, se, z in zip(b["var"], ex["var"], b["var_se"], b["var_z"]):
            assert z == pytest.approx((v - e) / se)


def test_sample_refuses_non_finite_statistics(capsys, monkeypatch):
    """The last line of defence (the checks above stop diverging runs first): statistics that
    are not finite are never printed."""
    import splitsde.base.stats

    real = splitsde.base.stats.walker_batch_means

    def overflowed(mean, mean_sq, batches=64):
        out = real(mean, mean_sq, batches)
        out["var"] = out["var"] * math.inf
        return out

    monkeypatch.setattr(splitsde.base.stats, "walker_batch_means", overflowed)
    assert main(["sample", "--steps", "50", "--walkers", "8"]) != 0
    captured = capsys.readouterr()
    assert "the statistics are not finite (var of q = [inf])" in captured.err
    assert "bias/se" not in captured.out
