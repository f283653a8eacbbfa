"""One name, one meaning: kinetic temperature with explicit units, one default reduction, one
flat state layout, ``.blocks`` as Block symbols with names in ``.block_names``."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import splitsde as sd
from splitsde.compose.reduce import Reduction
from splitsde.langevin.units import OPENMM_UNITS, REDUCED_UNITS, Units
from splitsde.problems.harmonic import harmonic
from splitsde.runtime.layout import StateLayout
from splitsde.symbolic.symbols import Block


def test_kinetic_temperature_units_are_explicit():
    """2K/N_dof by hand: kT in energy units by default, kelvin with a Boltzmann constant."""
    p = torch.tensor([[1.0, 2.0, 2.0], [0.0, 3.0, 0.0]])
    mass = torch.tensor([1.0, 2.0, 4.0])
    K = 0.5 * (p * p / mass).sum(-1)  # [0.5 + 1 + 0.5, 2.25] = [2.0, 2.25]
    kT = sd.langevin.kinetic_temperature({"p": p}, mass)
    torch.testing.assert_close(kT, 2 * K / 3, rtol=0, atol=0)
    torch.testing.assert_close(kT, torch.tensor([4 / 3, 1.5]), rtol=1e-15, atol=0)
    kelvin = sd.langevin.kinetic_temperature({"p": p}, mass, 1, units=OPENMM_UNITS)
    torch.testing.assert_close(kelvin, 2 * K / (2 * 8.31446261815324e-3), rtol=1e-15, atol=0)
    assert REDUCED_UNITS.temperature == "kT, reduced units" and OPENMM_UNITS.temperature == "K"
    assert sd.langevin.temperature_from_kinetic_energy(3.0, 2, Units(boltzmann=0.5)) == 6.0
    with pytest.raises(ValueError, match="no kinetic degrees of freedom left"):
        sd.langevin.kinetic_temperature({"p": p}, mass, removed_dof=3)


def test_openmm_kinetic_temperature_uses_the_same_formula():
    openmm = pytest.importorskip("openmm")
    from splitsde.backends.openmm import kinetic_temperature

    system = openmm.System()
    for _ in range(3):
        system.addParticle(1.0)
    ke = np.array([1.0, 2.5])
    np.testing.assert_array_equal(
        kinetic_temperature(ke, system),
        sd.langevin.temperature_from_kinetic_energy(ke, 9, OPENMM_UNITS),
    )


def test_reduce_and_reduction_share_their_default():
    assert sd.reduce("BAOAB").reduction == Reduction()
    system = sd.langevin.underdamped(sd.potentials.Harmonic(1.0))
    a, b = system.integrator(sd.reduce("OBABO")), system.integrator("OBABO")
    assert a.evaluations_per_step == b.evaluations_per_step == 1


def test_blocks_are_symbols_and_names_are_block_names():
    system = sd.langevin.underdamped(sd.potentials.Harmonic(1.0))
    assert all(isinstance(b, Block) for b in system.sde.blocks)
    assert system.sde.block_names == ("q", "p")
    integ = system.integrator("BAOAB")
    assert integ.block_names == ("q", "p")
    prob = harmonic()
    assert all(isinstance(b, Block) for b in prob.blocks)
    assert prob.block_names == ("q", "p") and prob.dim == 2
    y0 = prob.initial_state(3, 0.0, 1.0, torch.Generator().manual_seed(0))
    assert tuple(y0) == prob.block_names


def test_one_state_layout_for_torch_and_numpy():
    lay = StateLayout.of(sd.blocks("q p"), {"q": (2, 3), "p": ()})
    assert lay.block_names == ("q", "p") and lay.dim == 7 and lay.index("p") == slice(6, 7)
    q = torch.arange(12.0).reshape(2, 2, 3)
    p = torch.tensor([-1.0, -2.0])
    y = lay.flatten({"q": q, "p": p})
    assert y.tolist() == [[0, 1, 2, 3, 4, 5, -1], [6, 7, 8, 9, 10, 11, -2]]
    back = lay.unflatten(y)
    assert torch.equal(back["q"], q) and torch.equal(back["p"], p)
    yn = lay.flatten({"q": q.numpy(), "p": p.numpy()})
    assert isinstance(yn, np.ndarray) and yn.tolist() == y.tolist()
    with pytest.raises(ValueError, match="block q has event shape"):
        lay.flatten({"q": q[:, 0], "p": p})
    from splitsde.interop import StateLayout as interop_layout

    assert interop_layout is StateLayout
