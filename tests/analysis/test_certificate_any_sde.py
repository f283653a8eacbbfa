"""Certificates of user SDEs: user letters (U = A + O), force groups, fields given only as
callables, nonlinear SDEs by Monte Carlo, and the stated cost of the exact analysis."""

from __future__ import annotations

import re

import numpy as np
import pytest
import sympy as sp
import torch

import splitsde as sd
import splitsde.analysis.certify as certify
from splitsde import problems
from splitsde.analysis import (
    MonteCarloOptions,
    affine_step,
    certificate,
    integrator_stability_bound,
    stability_bound,
)
from splitsde.analysis.certify import CertificateError
from splitsde.runtime.integrator import Integrator

OMEGA = 1.5


def langevin_with_combined_letter(force_definition: bool = True):
    """Underdamped Langevin with the drift and the friction-noise in one letter U (= A + O),
    solved exactly as one linear flow, and the kick B."""
    q, p = sd.blocks("q p")
    M, g, kT, om = sd.parameters("M gamma kT omega", positive=True)
    F = sd.Field("F", [q], definition=-(om**2) * q if force_definition else None)
    sde = sd.SDE(
        [q, p],
        {
            "U": sd.Flow({q: p / M, p: -g * p}, {p: sp.sqrt(2 * g * kT * M)}),
            "B": sd.Flow({p: F()}),
        },
        name="Langevin (U = A + O)",
    )
    params = {"M": 1.0, "gamma": 1.0, "kT": 1.0}
    if force_definition:
        params["omega"] = OMEGA
    return sde, params


@pytest.mark.parametrize(("word", "order"), [("UBU", 2), ("UB", 1), ("BUB", 2)])
def test_user_letters_certify_their_exact_order(word, order):
    sde, params = langevin_with_combined_letter()
    cert = certificate((sde, word, params), h=0.2)
    assert cert.certified and cert.weak_order == order == cert.declared_weak_order
    assert cert.linear and "U" in " ".join(cert.substeps)
    # the SDE's own stationary law: q ~ N(0, kT / omega^2), p ~ N(0, M kT)
    assert np.allclose(np.diag(cert.stationary_exact["cov"]), [1 / OMEGA**2, 1.0], rtol=1e-12)
    # U B U is BAOAB with A and O merged: Verlet's bound h < 2/omega for the kick-drift part
    if word == "UBU":
        assert cert.stability_bound > 2 / OMEGA


def test_fields_given_only_as_callables_use_the_numeric_path():
    sde, params = langevin_with_combined_letter(force_definition=False)
    fields = {"F": lambda q: -(OMEGA**2) * q}
    cert = certificate((sde, "UBU", params, fields), h=0.2)
    assert cert.certified and cert.weak_order == 2
    assert "ladder" in cert.weak_order_method
    with pytest.raises(CertificateError, match="symbolic definitions"):
        certificate((sde, "UBU", params, fields), symbolic=True)


def test_force_group_words():
    """Multiple time stepping: the fast force in the inner steps (B1), the slow one outside
    (B0); symmetric => order 2, the Lie version => order 1."""
    system = sd.langevin.underdamped(
        [sd.potentials.Harmonic(0.5), sd.potentials.Harmonic(2.0)], force_groups=True
    )
    sym = certificate(system.integrator("B0 B1 A O A B1 B0"), h=0.1)
    assert sym.certified and sym.weak_order == 2
    lie = certificate((system, "B0 B1 A O"), h=0.1)
    assert lie.certified and lie.weak_order == 1
    # the symbolic series and the numeric ladder agree
    num = certificate(system.integrator("B0 B1 A O A B1 B0"), h=0.1, symbolic=False)
    assert num.weak_order == 2 and "ladder" in num.weak_order_method


def test_nonlinear_user_sde_needs_and_gets_monte_carlo():
    system = sd.langevin.underdamped(sd.potentials.DoubleWell(), gamma=1.0, kT=1.0)
    integ = system.integrator("OBA")
    with pytest.raises(CertificateError, match=r"not linear.*Monte Carlo"):
        certificate(integ)
    walkers = 20_000
    options = MonteCarloOptions(
        hs=(0.025, 0.05, 0.1, 0.2, 0.4),
        y0={
            "q": torch.full((walkers, 1), 0.5, dtype=torch.float64),
            "p": torch.zeros(walkers, 1, dtype=torch.float64),
        },
        observable=lambda s: s["q"] ** 2,
        observable_name="q^2",
        T=2.0,
        seed=3,
    )
    cert = certificate(integ, monte_carlo=options)
    assert not cert.linear and cert.certified and cert.weak_order == 1
    assert cert.monte_carlo is not None and cert.monte_carlo.unstable  # h = 0.4 diverges
    text = cert.format()
    assert "verdict: certified: weak order 1" in text and "unstable" in text
    assert cert.to_json()["monte_carlo"]["certified_order"] == 1


def test_bad_targets_are_refused():
    with pytest.raises(CertificateError, match="takes a word"):
        certificate(42)
    with pytest.raises(CertificateError, match="unknown system"):
        certificate("BAOAB", "lorenz")


def test_the_stated_cost_is_the_cost_paid(monkeypatch, capsys):
    """``--system linear``: the cost statement names the number of lowerings of the step
    program, which is exactly how many the analysis then performs; a progress bar follows."""
    said: list[str] = []
    calls = {"n": 0}
    original = Integrator.prepare

    def counting(self, *args, **kwargs):
        calls["n"] += 1
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Integrator, "prepare", counting)
    ticks: list[tuple[int, int]] = []
    close = certify._Cost.close

    def recording(self):
        ticks.append((self.done, self.total))
        close(self)

    monkeypatch.setattr(certify._Cost, "close", recording)
    cert = certificate("BAOAB", "linear", dim=6, progress=True, say=said.append)
    stated = int(re.search(r"at most (\d+) lowerings of the step program", said[0]).group(1))
    rounds = int(re.search(r"up to (\d+) for the stability bound", said[0]).group(1))
    assert stated - rounds + 1 <= calls["n"] <= stated  # the scan, then only needed rounds
    assert ticks == [(calls["n"], stated)]  # the bar counts the lowerings, nothing else
    assert "moment system of 28 unknowns" in said[1]  # 1 + 6 + 21, not computed at dim 6
    assert cert.certified and cert.weak_order == 2
    assert "certificate BAOAB" in capsys.readouterr().err  # the bar, on stderr


def test_batched_stability_bound_matches_the_scalar_bisection():
    prob = problems.random_linear(3, 4)
    integ = prob.integrator("BAOAB")
    scalar = stability_bound(lambda x: affine_step(integ, 0.0, x).Phi, 1e-3, 50.0, points=80)
    batched = integrator_stability_bound(integ, 1e-3, 50.0)
    assert batched == pytest.approx(scalar, rel=1e-10)
    harmonic = problems.harmonic(OMEGA, 1.0, 1.0, 1.0).integrator("BAOAB")
    assert integrator_stability_bound(harmonic, 1e-3, 50.0) == pytest.approx(2 / OMEGA, rel=1e-11)


def test_the_compilation_of_a_large_linear_system_states_its_cost_and_shows_a_bar(
    monkeypatch, capsys
):
    """Large ``--system linear``: the symbolic compilation (most of the run at dim 200) is
    announced with its estimated duration and runs under a timed progress bar; small systems
    stay silent."""
    said: list[str] = []
    certificate("OBA", "linear", dim=6, progress=True, say=said.append)
    assert not any("symbolic work" in s for s in said)
    assert "compiling" not in capsys.readouterr().err
    # as if dim 6 were slow to compile: 1.2 s per dim^2 unit -> 43 s
    monkeypatch.setattr(certify, "COMPILE_SECONDS_PER_DIM2", 1.2)
    said.clear()
    cert = certificate("OBA", "linear", dim=6, progress=True, say=said.append)
    assert said[0] == (
        "cost: building the random stable linear SDE (dim 6) and compiling OBA is symbolic "
        "work that grows like dim^2 (roughly 43 s of one core before the analysis starts)"
    )
    err = capsys.readouterr().err
    assert "compiling OBA:" in err and "of about 43 s" in err
    assert cert.certified and cert.weak_order == 1
