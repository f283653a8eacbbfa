"""Our OpenMM programs against OpenMM's and openmmtools' integrators on alanine dipeptide in
vacuum (HBonds constraints): mean potential energy and kinetic temperature agree within
block-averaging error bars; constraints hold at OpenMM's tolerance; the kinetic temperature
counts the removed degrees of freedom."""

from __future__ import annotations

import numpy as np
import openmm
import pytest
from md_helpers import block_mean, within
from openmm import unit
from openmmtools import integrators as tools
from openmmtools import testsystems

from splitsde.backends.openmm import BOLTZMANN, LangevinSplittingIntegrator

T, STEP, FRICTION = 300.0, 0.002, 1.0
STEPS, EVERY = 60_000, 30


@pytest.fixture(scope="module")
def alanine():
    return testsystems.AlanineDipeptideVacuum()  # HBonds constraints, CM motion removed


def _dof(system: openmm.System) -> int:
    cm = any(isinstance(f, openmm.CMMotionRemover) for f in system.getForces())
    return 3 * system.getNumParticles() - system.getNumConstraints() - (3 if cm else 0)


def _sample(ala, integ, seed):
    """Potential energy and kinetic energy (from the velocities, the same estimator for every
    integrator) every EVERY steps after a burn-in, on the Reference platform."""
    integ.setRandomNumberSeed(seed)
    ctx = openmm.Context(ala.system, integ, openmm.Platform.getPlatformByName("Reference"))
    ctx.setPositions(ala.positions)
    ctx.setVelocitiesToTemperature(T, seed)
    integ.step(3000)
    masses = np.array(
        [
            ala.system.getParticleMass(i).value_in_unit(unit.dalton)
            for i in range(ala.system.getNumParticles())
        ]
    )
    pot, kin, last = [], [], None
    for _ in range(STEPS // EVERY):
        integ.step(EVERY)
        st = ctx.getState(getEnergy=True, getVelocities=True, getPositions=True)
        pot.append(st.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole))
        v = st.getVelocities(asNumpy=True).value_in_unit(unit.nanometer / unit.picosecond)
        kin.append(0.5 * float((masses[:, None] * v * v).sum()))
        last = st
    return np.array(pot), np.array(kin), last


def _compare(ala, ours, theirs):
    pa, ka, _ = _sample(ala, ours, seed=1)
    pb, kb, _ = _sample(ala, theirs, seed=2)
    ndof = _dof(ala.system)
    (ea, sea), (eb, seb) = block_mean(pa), block_mean(pb)
    (ta, sta), (tb, stb) = (
        block_mean(2 * ka / (ndof * BOLTZMANN)),
        block_mean(2 * kb / (ndof * BOLTZMANN)),
    )
    assert within(ea, sea, eb, seb), (ea, sea, eb, seb)
    assert within(ta, sta, tb, stb), (ta, sta, tb, stb)
    assert sea < 1.5 and sta < 6.0  # error bars small enough to mean something (kJ/mol, K)


def test_baoab_matches_openmmtools_vrorv(alanine):
    ours = LangevinSplittingIntegrator("BAOAB", STEP, T, FRICTION)
    theirs = tools.LangevinIntegrator(
        T * unit.kelvin, FRICTION / unit.picosecond, STEP * unit.picoseconds, splitting="V R O R V"
    )
    _compare(alanine, ours, theirs)


def test_baoa_matches_langevin_middle(alanine):
    ours = LangevinSplittingIntegrator("BAOA", STEP, T, FRICTION)
    theirs = openmm.LangevinMiddleIntegrator(T, FRICTION, STEP)
    _compare(alanine, ours, theirs)


def test_constraints_hold_and_kinetic_temperature_counts_removed_dof(alanine):
    ours = LangevinSplittingIntegrator("BAOAB", 0.001, T, FRICTION)
    tol = ours.getConstraintTolerance()
    _, kin, last = _sample(alanine, ours, seed=3)
    x = last.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    v = last.getVelocities(asNumpy=True).value_in_unit(unit.nanometer / unit.picosecond)
    system = alanine.system
    assert system.getNumConstraints() == 12
    rel, vrel = [], []
    for c in range(system.getNumConstraints()):
        i, j, d = system.getConstraintParameters(c)
        r = x[i] - x[j]
        d = d.value_in_unit(unit.nanometer)
        rel.append(abs(np.linalg.norm(r) - d) / d)
        vrel.append(abs(np.dot(v[i] - v[j], r)) / (np.linalg.norm(v[i] - v[j]) * d))
    assert max(rel) <= tol, max(rel)
    assert max(vrel) <= 10 * tol, max(vrel)  # velocities have no component along the bonds
    ndof = _dof(system)
    t, se = block_mean(2 * kin / (ndof * BOLTZMANN))
    assert within(t, se, T), (t, se)
    naive, nse = block_mean(2 * kin / (3 * system.getNumParticles() * BOLTZMANN))
    assert not within(naive, nse, T)  # counting all 3N DOF would be detectably wrong
