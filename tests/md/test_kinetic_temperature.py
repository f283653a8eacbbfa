"""Kinetic degrees of freedom and temperature of OpenMM systems (splitsde.backends.openmm)
against a hand count and against OpenMM's own StateDataReporter."""

from __future__ import annotations

import io

import numpy as np
import pytest

openmm = pytest.importorskip("openmm")
from openmm import app, unit  # noqa: E402

from splitsde.backends.openmm import (  # noqa: E402
    LangevinSplittingIntegrator,
    degrees_of_freedom,
    kinetic_temperature,
)


def test_degrees_of_freedom_by_hand():
    """Masses 12, 1, 0, 16 amu: 9 integrated coordinates; the constraints 0-1 and 2-3 each
    remove one (2-3 ties a massive particle to a fixed one), a constraint between massless
    particles would remove none; the centre-of-mass remover removes 3."""
    system = openmm.System()
    for m in (12.0, 1.0, 0.0, 16.0, 0.0):
        system.addParticle(m)
    system.addConstraint(0, 1, 0.1)
    system.addConstraint(2, 3, 0.1)
    system.addConstraint(2, 4, 0.1)
    assert degrees_of_freedom(system) == 9 - 2
    system.addForce(openmm.CMMotionRemover())
    assert degrees_of_freedom(system) == 9 - 2 - 3
    ke = 1.234 * unit.kilojoule_per_mole
    r = unit.MOLAR_GAS_CONSTANT_R.value_in_unit(unit.kilojoule_per_mole / unit.kelvin)
    assert kinetic_temperature(ke, system) == pytest.approx(2 * 1.234 / (4 * r), rel=1e-15)
    assert kinetic_temperature(np.array([1.234, 2.468]), system) == pytest.approx(
        [2 * 1.234 / (4 * r), 4 * 1.234 / (4 * r)], rel=1e-15
    )
    empty = openmm.System()
    empty.addParticle(0.0)
    with pytest.raises(ValueError, match="no kinetic degrees of freedom"):
        degrees_of_freedom(empty)


def test_kinetic_temperature_equals_state_data_reporter():
    """Alanine dipeptide with bonds to hydrogen constrained: our temperature of each reported
    state equals the temperature OpenMM's StateDataReporter prints for it."""
    testsystems = pytest.importorskip("openmmtools.testsystems")
    ala = testsystems.AlanineDipeptideVacuum()
    assert ala.system.getNumConstraints() > 0
    integ = LangevinSplittingIntegrator(
        "BAOAB", 1 * unit.femtoseconds, 300 * unit.kelvin, 1 / unit.picosecond
    )
    sim = app.Simulation(
        ala.topology, ala.system, integ, openmm.Platform.getPlatformByName("Reference")
    )
    sim.context.setPositions(ala.positions)
    sim.context.setVelocitiesToTemperature(300 * unit.kelvin, 3)
    out = io.StringIO()
    sim.reporters.append(
        app.StateDataReporter(out, 5, step=True, kineticEnergy=True, temperature=True)
    )
    ours = []

    class Ours:
        def describeNextReport(self, simulation):
            steps = 5 - simulation.currentStep % 5
            return {"steps": steps, "periodic": None, "include": ["energy"]}

        def report(self, simulation, state):
            ours.append(kinetic_temperature(state.getKineticEnergy(), ala.system))

    sim.reporters.append(Ours())
    sim.step(20)
    lines = [line for line in out.getvalue().splitlines() if not line.startswith("#")]
    theirs = [float(line.split(",")[2]) for line in lines]
    assert len(theirs) == len(ours) == 4
    np.testing.assert_allclose(ours, theirs, rtol=1e-12)
