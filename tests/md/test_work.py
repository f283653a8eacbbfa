"""Shadow work and heat (torch backend) against hand-written sub-steps and the first law."""

from __future__ import annotations

import math

import pytest
import torch

import splitsde as sd


def _energy(q: torch.Tensor, p: torch.Tensor, m: torch.Tensor, barrier: float) -> torch.Tensor:
    """Double-well energy written out independently: sum a (q^2 - 1)^2 + p^2 / 2m."""
    u = (barrier * (q * q - 1) ** 2).reshape(q.shape[0], -1).sum(-1)
    return u + (p * p / (2 * m)).reshape(p.shape[0], -1).sum(-1)


def _force(q: torch.Tensor, barrier: float) -> torch.Tensor:
    return -4 * barrier * q * (q * q - 1)


@pytest.fixture
def setup():
    m = torch.tensor([1.0, 3.0])
    system = sd.langevin.underdamped(sd.potentials.DoubleWell(1.5), gamma=0.7, kT=1.0, mass=m)
    y0 = system.initial_state(32, dim=2, generator=torch.Generator().manual_seed(5))
    y0["q"] = y0["q"] + 0.3 * torch.randn(y0["q"].shape, generator=torch.Generator().manual_seed(6))
    return system, m, y0


def test_shadow_work_of_deterministic_bab_is_its_energy_error(setup):
    system, m, y0 = setup
    h, steps = 0.2, 25
    res = sd.integrate(
        system.integrator("BAB", allow_missing=True),
        y0,
        h=h,
        steps=steps,
        seed=0,
        observers=[sd.WorkAndHeat()],
    )
    # hand-written velocity Verlet
    q, p = y0["q"].clone(), y0["p"].clone()
    for _ in range(steps):
        p = p + 0.5 * h * _force(q, 1.5)
        q = q + h * p / m
        p = p + 0.5 * h * _force(q, 1.5)
    torch.testing.assert_close(res.final["q"], q, rtol=0, atol=1e-12)
    w = res.finals["work"]
    expected = _energy(q, p, m, 1.5) - _energy(y0["q"], y0["p"], m, 1.5)
    torch.testing.assert_close(w["shadow_work"], expected, rtol=1e-10, atol=1e-12)
    assert torch.equal(w["heat"], torch.zeros_like(w["heat"]))
    assert expected.abs().max() > 1e-4  # a real energy error, not a vacuous zero
    assert w["energy_evaluations"] == steps + 1  # U once per step (and at the start)


def test_heat_is_the_kinetic_energy_change_of_the_o_steps(setup):
    system, m, y0 = setup
    h, gamma, c = 0.3, 0.7, math.exp(-0.7 * 0.3)
    xi = torch.randn(y0["p"].shape, generator=torch.Generator().manual_seed(8))
    # one BAOAB step with given noise, observed through integrate with FixedNoise
    res = sd.integrate(
        system.integrator("BAOAB"),
        y0,
        h=h,
        steps=1,
        noise=sd.FixedNoise([xi]),
        observers=[sd.WorkAndHeat()],
    )
    q, p = y0["q"], y0["p"]
    p1 = p + 0.5 * h * _force(q, 1.5)
    q1 = q + 0.5 * h * p1 / m
    p2 = c * p1 + torch.sqrt((1 - c * c) * m) * xi
    kin = lambda x: (x * x / (2 * m)).reshape(x.shape[0], -1).sum(-1)  # noqa: E731
    w = res.finals["work"]
    torch.testing.assert_close(w["heat"], kin(p2) - kin(p1), rtol=1e-12, atol=1e-12)
    total = _energy(res.final["q"], res.final["p"], m, 1.5) - _energy(q, p, m, 1.5)
    torch.testing.assert_close(w["shadow_work"] + w["heat"], total, rtol=1e-10, atol=1e-12)
    assert gamma > 0 and q1.shape == q.shape


@pytest.mark.parametrize("word", ["OBABO", "GHMC", "B A O A B"])
def test_first_law_for_any_word(setup, word):
    system, m, y0 = setup
    res = sd.integrate(
        system.integrator(word),
        y0,
        h=0.2,
        steps=40,
        seed=1,
        observers=[sd.WorkAndHeat(record=True, every=10)],
    )
    w = res.finals["work"]
    total = _energy(res.final["q"], res.final["p"], m, 1.5) - _energy(y0["q"], y0["p"], m, 1.5)
    torch.testing.assert_close(w["shadow_work"] + w["heat"], total, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(w["energy_change"], total, rtol=1e-10, atol=1e-10)
    assert res.observables["work"].shape == (4, 32)
    assert w["heat"].abs().max() > 0 and w["shadow_work"].abs().max() > 0


def test_work_needs_an_energy():
    (q,) = sd.blocks("q")
    F = sd.Field("F", [q], definition=-q)
    sde = sd.SDE([q], {"B": sd.Flow({q: F()}), "O": sd.Flow(noise={q: 1})})
    with pytest.raises(ValueError, match="energy"):
        sd.integrate(
            sd.System(sde).integrator("BO"),
            {"q": torch.zeros(2, 1)},
            h=0.1,
            steps=1,
            seed=0,
            observers=[sd.WorkAndHeat()],
        )


def test_substep_observers_see_every_step_including_the_first():
    """Regression: the first (checked) step used to skip the sub-step hooks."""

    class Count(sd.Observer):
        name, substeps = "count", True

        def __init__(self):
            self.calls = []

        def on_substep(self, step, substep, state):
            self.calls.append((step, substep.letter))

    system = sd.langevin.underdamped(sd.potentials.Harmonic(1.0))
    obs = Count()
    sd.integrate(
        system.integrator("GHMC"), system.initial_state(3), h=0.5, steps=3, seed=0, observers=[obs]
    )
    # five sub-steps and one Metropolis test per step
    per_step = ["O", "B", "A", "B", "{B A B}", "O"]
    assert obs.calls == [(k, x) for k in range(3) for x in per_step]
