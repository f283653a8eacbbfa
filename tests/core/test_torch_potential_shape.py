"""TorchPotential's event shape: a potential of fixed dimension without ``event_shape`` is
refused at construction with a message asking for it (not an IndexError inside the user's
function later); given, it shapes the initial state and is checked on every call."""

from __future__ import annotations

import math

import pytest
import torch

import splitsde as sd
from splitsde.langevin.potentials import PotentialError

A = torch.tensor([[2.0, 0.6], [0.6, 1.0]], dtype=torch.float64)  # U = q^T A q / 2


def planar(q: torch.Tensor) -> torch.Tensor:
    x, y = q[:, 0], q[:, 1]
    return 0.5 * (A[0, 0] * x * x + 2 * A[0, 1] * x * y + A[1, 1] * y * y)


def test_a_planar_potential_without_event_shape_is_refused_with_a_clear_message():
    with pytest.raises(PotentialError) as info:
        sd.potentials.TorchPotential(planar, name="planar")
    assert str(info.value) == (
        "TorchPotential 'planar': the energy fails on configurations of one coordinate "
        "(IndexError: index 1 is out of bounds for dimension 1 with size 1); give the shape "
        "of one configuration, e.g. TorchPotential(energy, event_shape=(2,))"
    )
    assert isinstance(info.value, sd.SplitsdeError) and isinstance(info.value, ValueError)


def test_the_energy_must_return_one_value_per_walker():
    with pytest.raises(PotentialError, match=r"one value per walker.*returned \(\)"):
        sd.potentials.TorchPotential(lambda q: (q * q).sum(), name="total")
    with pytest.raises(PotentialError, match=r"on 2 walkers of shape \(2,\) it returned \(2, 2\)"):
        sd.potentials.TorchPotential(lambda q: q * q, name="elementwise", event_shape=(2,))
    with pytest.raises(PotentialError, match=r"fails on configurations of shape \(3,\)"):
        sd.potentials.TorchPotential(lambda q: q[:, 5], event_shape=3)
    with pytest.raises(PotentialError, match="event_shape must be a tuple of positive integers"):
        sd.potentials.TorchPotential(planar, event_shape=(2, 0))


def test_a_generic_energy_keeps_any_shape():
    pot = sd.potentials.TorchPotential(lambda q: 0.5 * (q * q).reshape(q.shape[0], -1).sum(-1))
    assert pot.event_shape is None
    system = sd.langevin.underdamped(pot)
    assert system.initial_state(5)["q"].shape == (5, 1)
    assert system.initial_state(5, dim=(2, 3))["q"].shape == (5, 2, 3)


def test_event_shape_shapes_the_state_and_is_checked_on_every_call():
    pot = sd.potentials.TorchPotential(planar, name="planar", event_shape=(2,))
    system = sd.langevin.underdamped(pot, gamma=1.0, kT=1.0)
    y0 = system.initial_state(7)
    assert y0["q"].shape == (7, 2) and y0["p"].shape == (7, 2)
    q = torch.randn(7, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    torch.testing.assert_close(pot.force(q), -q @ A)  # -grad U = -A q
    torch.testing.assert_close(pot.laplacian(q), torch.full((7,), float(A.trace())))
    with pytest.raises(PotentialError) as info:
        pot.energy(torch.zeros(7, 3))
    assert str(info.value) == (
        "TorchPotential 'planar' acts on configurations of shape (2,); got positions of "
        "shape (7, 3) (walkers first)"
    )
    with pytest.raises(PotentialError, match=r"acts on configurations of shape \(2,\), not dim=3"):
        system.initial_state(7, dim=3)


def test_a_planar_harmonic_potential_samples_its_exact_covariance():
    # BAOAB samples the positions of a harmonic potential exactly: Cov(q) = kT A^{-1}
    kT = 0.8
    pot = sd.potentials.TorchPotential(planar, name="planar", event_shape=(2,))
    system = sd.langevin.underdamped(pot, gamma=1.5, kT=kT)
    y0 = system.initial_state(3000, generator=torch.Generator().manual_seed(1))
    cov = sd.Running(lambda t, s: s["q"][:, :, None] * s["q"][:, None, :], "qq", burn_in=150)
    res = sd.integrate(system.integrator("BAOAB"), y0, h=0.5, steps=300, seed=2, observers=[cov])
    per_walker = res.finals["qq"]["mean"]  # (walkers, 2, 2) time averages, independent walkers
    mean = per_walker.mean(0)
    se = per_walker.std(0) / math.sqrt(per_walker.shape[0])
    exact = kT * torch.linalg.inv(A)
    assert ((mean - exact).abs() < 4 * se).all(), (mean, exact, se)
