"""Metropolized groups (GHMC) in the torch backend: exact sampling, acceptance against an
independent quadrature, rejection semantics, carried values, refused groups."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from md_helpers import harmonic_stationary, harmonic_step, within

import splitsde as sd
from splitsde.base.stats import walker_batch_means


def _exact_acceptance(h: float, omega: float, m: float, kT: float = 1.0) -> float:
    r"""E_pi[min(1, exp(-dH/kT))] for one velocity-Verlet step of a harmonic oscillator.

    dH/kT = r^2 g(theta)/2 in whitened polar coordinates, and r^2 ~ Exp(1/2), so the
    expectation over r is 1 if g <= 0 and 1/(1 + g) otherwise; theta is integrated on a fine
    uniform grid (periodic integrand: the trapezoid rule converges geometrically)."""
    Phi, _ = harmonic_step("BAB", h, k={"B": omega**2}, m=m, gamma=0.0)
    D = np.diag([omega**2, 1.0 / m])
    S = np.diag([math.sqrt(kT) / omega, math.sqrt(m * kT)])
    G = S @ (Phi.T @ D @ Phi - D) @ S / kT
    th = np.linspace(0.0, 2 * math.pi, 20001)[:-1]
    u = np.stack([np.cos(th), np.sin(th)])
    g = np.einsum("in,ij,jn->n", u, G, u)
    return float(np.where(g <= 0, 1.0, 1.0 / (1.0 + np.maximum(g, 0))).mean())


def _system(m: float = 2.0, omega: float = 1.5, gamma: float = 1.0):
    return sd.langevin.underdamped(sd.potentials.Harmonic(omega), gamma=gamma, kT=1.0, mass=m)


def _equilibrium(walkers: int, m: float, omega: float, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "q": torch.randn(walkers, 1, generator=g) / omega,
        "p": torch.randn(walkers, 1, generator=g) * math.sqrt(m),
    }


def test_ghmc_program_listing_and_cost():
    integ = _system().integrator("GHMC")
    text = integ.program.listing()
    assert "Metropolized group {B A B}" in text and "U(0, 1) per walker" in text
    # first-same-as-last survives the Metropolis test: one force and one energy per step
    assert integ.evaluations_per_step == 2
    assert integ.weak_order == sd.preset("GHMC").weak_order == 1


@pytest.mark.parametrize("h", [0.4, 0.9, 1.25])
def test_ghmc_samples_exact_harmonic_distribution(h):
    m, omega = 2.0, 1.5  # stable range: omega h < 2
    system = _system(m, omega)
    y0 = _equilibrium(2000, m, omega)
    obs = [
        sd.Running(lambda t, s: s["q"], "q", burn_in=20),
        sd.Running(lambda t, s: s["p"], "p", burn_in=20),
    ]
    res = sd.integrate(system.integrator("GHMC"), y0, h=h, steps=420, seed=3, observers=obs)
    q = walker_batch_means(res.finals["q"]["mean"], res.finals["q"]["mean_sq"])
    p = walker_batch_means(res.finals["p"]["mean"], res.finals["p"]["mean_sq"])
    assert within(float(q["var"][0]), float(q["var_se"][0]), 1.0 / omega**2)
    assert within(float(p["var"][0]), float(p["var_se"][0]), m)
    # without the Metropolis test (OBABO) the position variance at this h is off by > 4 SE
    unadjusted = harmonic_stationary("OBABO", h, k={"B": omega**2}, m=m, gamma=1.0)
    assert not within(float(q["var"][0]), float(q["var_se"][0]), unadjusted[0, 0])
    acc = res.acceptance[0]
    assert within(acc.rate, acc.rate_se, _exact_acceptance(h, omega, m))


def test_acceptance_rises_as_h_falls():
    m, omega = 1.0, 1.0
    rates = []
    for h in (1.8, 1.2, 0.6, 0.3):
        res = sd.integrate(
            _system(m, omega).integrator("GHMC"),
            _equilibrium(1000, m, omega),
            h=h,
            steps=200,
            seed=1,
        )
        a = res.acceptance[0]
        assert within(a.rate, a.rate_se, _exact_acceptance(h, omega, m))
        rates.append((a.rate, a.rate_se))
    for (r1, s1), (r2, s2) in itertools.pairwise(rates):
        assert r2 - r1 > 4 * math.hypot(s1, s2)
    assert res.acceptance_rate == pytest.approx(rates[-1][0])


def test_rejection_restores_state_and_flips_momentum():
    m, omega, h, gamma = 1.0, 1.0, 1.7, 0.5
    integ = _system(m, omega, gamma).integrator("GHMC")
    q0, p0 = torch.tensor([[0.3], [-1.2]]), torch.tensor([[1.1], [0.4]])
    zero = [torch.zeros(2, 1), torch.zeros(2, 1)]
    c = math.exp(-gamma * h / 2)
    # hand-written velocity Verlet after the first half O step (noise switched off)
    p1 = c * p0
    ph = p1 - 0.5 * h * omega**2 * q0
    q2 = q0 + h * ph / m
    p2 = ph - 0.5 * h * omega**2 * q2
    dH = 0.5 * (omega**2 * q2**2 + p2**2 / m) - 0.5 * (omega**2 * q0**2 + p1**2 / m)
    assert dH[0] > 0 > dH[1]  # u = 1 rejects walker 0 and accepts walker 1 (downhill)
    out = integ.step({"q": q0, "p": p0}, 0.0, h, noise=sd.FixedNoise(zero, [torch.ones(2)]))
    assert torch.equal(out["q"][0], q0[0])
    torch.testing.assert_close(out["p"][0], -c * p1[0], rtol=0, atol=1e-15)
    torch.testing.assert_close(out["q"][1], q2[1], rtol=0, atol=1e-14)
    torch.testing.assert_close(out["p"][1], c * p2[1], rtol=0, atol=1e-14)
    accepted = integ.step({"q": q0, "p": p0}, 0.0, h, noise=sd.FixedNoise(zero, [torch.zeros(2)]))
    torch.testing.assert_close(accepted["q"], q2, rtol=0, atol=1e-14)
    torch.testing.assert_close(accepted["p"], c * p2, rtol=0, atol=1e-14)


def test_carried_values_stay_consistent_after_rejections():
    """First-same-as-last carries merged force/energy values across rejections: the run must
    equal bit for bit the run that re-evaluates everything (reuse='none')."""
    system = sd.langevin.underdamped(sd.potentials.DoubleWell(1.0), gamma=1.0, kT=1.0)
    y0 = system.initial_state(64, dim=2, generator=torch.Generator().manual_seed(2))
    fsal = sd.integrate(system.integrator("GHMC"), y0, h=0.5, steps=60, seed=4)
    fresh = sd.integrate(
        system.integrator("GHMC", reduction=sd.Reduction("none")), y0, h=0.5, steps=60, seed=4
    )
    assert 0.2 < fsal.acceptance_rate < 0.95  # rejections happen
    assert torch.equal(fsal.final["q"], fresh.final["q"])
    assert torch.equal(fsal.final["p"], fresh.final["p"])
    assert fsal.nfe_per_step < fresh.nfe_per_step


def test_ghmc_runs_are_bit_reproducible():
    system = _system()
    y0 = _equilibrium(16, 2.0, 1.5)
    a = sd.integrate(system.integrator("GHMC"), y0, h=1.0, steps=50, seed=9)
    b = sd.integrate(system.integrator("GHMC"), y0, h=1.0, steps=50, seed=9)
    assert torch.equal(a.final["p"], b.final["p"])
    assert torch.equal(a.acceptance[0].accepted, b.acceptance[0].accepted)


@pytest.mark.parametrize(
    ("word", "message"),
    [
        ("{BAOAB}", "stochastic letter"),
        ("O{BA}B", "not symmetric"),
        ("O{B[1/3] A B[2/3]}", "not symmetric"),
    ],
)
def test_bad_groups_are_refused(word, message):
    with pytest.raises(sd.WordError, match=message):
        _system().integrator(word)


def test_groups_need_an_energy_and_exact_values():
    q, p = sd.blocks("q p")
    F = sd.Field("F", [q], definition=-q)
    sde = sd.SDE([q, p], {"A": sd.Flow({q: p}), "B": sd.Flow({p: F()})})
    with pytest.raises(sd.WordError, match="needs the energy"):
        sd.System(sde).integrator("{BAB}")
    with pytest.raises(sd.WordError, match="per_step"):
        _system().integrator(sd.reduce("O{BAB}O", reuse="per_step"))


def test_uniforms_come_from_the_noise_source():
    class NormalsOnly(sd.NoiseSource):
        def bind(self, shapes, like):
            return [lambda s=s: torch.zeros(s) for s in shapes]

    system = _system()
    with pytest.raises(NotImplementedError, match="uniform draws"):
        sd.integrate(
            system.integrator("GHMC"),
            _equilibrium(4, 2.0, 1.5),
            h=0.5,
            steps=2,
            noise=NormalsOnly(),
        )


def test_out_of_place_lowering_equals_in_place():
    """inplace=False (autograd-friendly torch.where restore) gives the same run (to round-off:
    fused in-place updates round differently) with the same accept/reject decisions."""
    system = sd.langevin.underdamped(sd.potentials.DoubleWell(1.0), gamma=1.0, kT=1.0)
    y0 = system.initial_state(32, dim=2, generator=torch.Generator().manual_seed(3))
    a = sd.integrate(system.integrator("GHMC"), y0, h=0.3, steps=10, seed=2)
    b = sd.integrate(system.integrator("GHMC", inplace=False), y0, h=0.3, steps=10, seed=2)
    assert a.acceptance_rate < 0.95
    assert torch.equal(a.acceptance[0].accepted, b.acceptance[0].accepted)
    torch.testing.assert_close(a.final["q"], b.final["q"], rtol=0, atol=1e-12)
    torch.testing.assert_close(a.final["p"], b.final["p"], rtol=0, atol=1e-12)
