"""Our OpenMM programs against OpenMM's and openmmtools' integrators on alanine dipeptide in
vacuum (HBonds constraints): without noise, the trajectories coincide with the peer that runs
the same splitting to the precision of the double-precision Reference platform and differ
from the other splittings by orders of magnitude more; with noise, mean potential energy and
kinetic temperature agree within block-averaging error bars; constraints hold at OpenMM's
tolerance; the kinetic temperature counts the removed degrees of freedom.

Why there is no same-seed comparison of the stochastic trajectories: OpenMM's Reference
CustomIntegrator (8.6) draws a uniform and a Gaussian for every degree of freedom of every
per-DOF computation and for every global computation and condition, used or not, from one
stream. Which Gaussians an O step reads therefore depends on the whole program, and ours has
one more global computation per step than openmmtools' (the check whether kT, gamma or dt
changed) and a different first-step coefficient block, so the same seed gives the two O steps
shifted parts of the stream."""

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

# Deterministic comparisons: 50 steps from one constrained start, on the Reference platform
# (double precision). Two programs that run the same sub-steps with algebraically equal
# coefficients then differ by (i) rounding, ~1e-16 relative per operation, and (ii) the
# constraint solver's stopping point: each constraint holds to the relative tolerance
# CONSTRAINT_TOL, which we set on both integrators (at OpenMM's default 1e-5 the solvers stop at
# different iterates and the trajectories differ by ~3e-7 nm). (ii) dominates: at most
# CONSTRAINT_TOL x 0.11 nm (the longest constrained X-H bond) per position constraint, two per
# step, adding up over 50 steps (0.1 ps, well inside the Lyapunov time) to X_TOL; the velocity
# corrections divide a position change by dt/2, hence V_TOL. Measured differences of matching
# programs: ~2e-14 nm and ~1e-12 nm/ps. Different splittings differ by > 1e-5 nm.
DET_STEPS, CONSTRAINT_TOL = 50, 1e-12
X_TOL = DET_STEPS * 2 * CONSTRAINT_TOL * 0.11  # nm, 1.1e-11
V_TOL = X_TOL / (STEP / 2)  # nm/ps, 1.1e-8
COLD = 1e-30  # K: with friction, noise of ~1e-17 nm/ps per step, far below V_TOL


@pytest.fixture(scope="module")
def alanine():
    return testsystems.AlanineDipeptideVacuum()  # HBonds constraints, CM motion removed


def _dof(system: openmm.System) -> int:
    cm = any(isinstance(f, openmm.CMMotionRemover) for f in system.getForces())
    return 3 * system.getNumParticles() - system.getNumConstraints() - (3 if cm else 0)


def _start(system, positions):
    """Positions (nm) and velocities (nm/ps; 300 K, seed 7) satisfying the constraints to
    1e-12."""
    ctx = openmm.Context(
        system, openmm.VerletIntegrator(STEP), openmm.Platform.getPlatformByName("Reference")
    )
    ctx.setPositions(positions)
    ctx.applyConstraints(1e-12)
    ctx.setVelocitiesToTemperature(T, 7)
    ctx.applyVelocityConstraints(1e-12)
    return _state(ctx)


def _state(ctx):
    st = ctx.getState(getPositions=True, getVelocities=True)
    x = st.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    v = st.getVelocities(asNumpy=True).value_in_unit(unit.nanometer / unit.picosecond)
    return np.asarray(x), np.asarray(v)


def _trajectory(system, start, integ, steps=DET_STEPS):
    """Final positions and velocities after ``steps`` steps from ``start``."""
    integ.setConstraintTolerance(CONSTRAINT_TOL)
    ctx = openmm.Context(system, integ, openmm.Platform.getPlatformByName("Reference"))
    ctx.setPositions(start[0])
    ctx.setVelocities(start[1])
    integ.step(steps)
    return _state(ctx)


def _difference(a, b):
    return float(np.abs(a[0] - b[0]).max()), float(np.abs(a[1] - b[1]).max())


def _vrorv(splitting, temperature, friction, step=STEP):
    return tools.LangevinIntegrator(
        temperature * unit.kelvin,
        friction / unit.picosecond,
        step * unit.picoseconds,
        splitting=splitting,
    )


@pytest.fixture(scope="module")
def alanine_start(alanine):
    return _start(alanine.system, alanine.positions)


# (temperature, friction): Hamiltonian (O is the identity), then damped at T -> 0 (O is the
# deterministic damping exp(-gamma s) at its place in the word)
NOISELESS = [(T, 0.0), (COLD, 5.0)]


@pytest.mark.parametrize(("temperature", "friction"), NOISELESS)
@pytest.mark.parametrize(
    ("word", "splitting"),
    [("BAOAB", "V R O R V"), ("ABOBA", "R V O V R"), ("OBABO", "O V R V O"), ("BAOA", "V R O R")],
)
def test_noiseless_trajectory_equals_openmmtools_same_splitting(
    alanine, alanine_start, word, splitting, temperature, friction
):
    """Our compiled word and openmmtools' LangevinIntegrator with the same splitting (V = B,
    R = A, a letter's weight 1/count) give the same 50-step trajectory without noise."""
    ours = _trajectory(
        alanine.system,
        alanine_start,
        LangevinSplittingIntegrator(word, STEP, temperature, friction),
    )
    theirs = _trajectory(alanine.system, alanine_start, _vrorv(splitting, temperature, friction))
    dx, dv = _difference(ours, theirs)
    assert dx < X_TOL and dv < V_TOL, (dx, dv)
    moved = _difference(ours, alanine_start)
    assert moved[0] > 0.01 and moved[1] > 1.0, moved  # the molecule moved


@pytest.mark.parametrize(("temperature", "friction"), NOISELESS)
@pytest.mark.parametrize("word", ["ABOBA", "OBABO", "BAOA", "BOAAB"])
def test_noiseless_trajectory_of_other_words_differs_from_vrorv(
    alanine, alanine_start, word, temperature, friction
):
    """Negative control: other splittings differ from openmmtools' V R O R V by far more than
    the tolerance (ABOBA = ABA vs BAB velocity Verlet). BOAAB moves only the O step, so it
    equals V R O R V without friction and must differ with it."""
    theirs = _trajectory(alanine.system, alanine_start, _vrorv("V R O R V", temperature, friction))
    ours = _trajectory(
        alanine.system,
        alanine_start,
        LangevinSplittingIntegrator(word, STEP, temperature, friction),
    )
    dx, dv = _difference(ours, theirs)
    if word == "BOAAB" and friction == 0.0:
        assert dx < X_TOL and dv < V_TOL, (dx, dv)
    else:
        assert dx > 1e3 * X_TOL and dv > 1e3 * V_TOL, (dx, dv)


@pytest.mark.parametrize(("temperature", "friction"), NOISELESS)
def test_noiseless_baoa_equals_langevin_middle_without_constraints(temperature, friction):
    """BAOA against OpenMM's LangevinMiddleIntegrator (which accepts friction 0) on alanine
    dipeptide without constraints (flexible X-H bonds, 1 fs). With constraints the two differ by
    design: LangevinMiddle constrains the positions once per step, after both half drifts, and
    takes the velocity from the constrained full-step displacement; our A letters (like
    openmmtools' R, compared above with HBonds constraints) constrain after each half drift
    (measured: 3e-5 nm apart after 50 steps of 2 fs). Negative control: BAOAB."""
    ala = testsystems.AlanineDipeptideVacuum(constraints=None)
    assert ala.system.getNumConstraints() == 0
    step = 0.001
    start = _start(ala.system, ala.positions)
    theirs = _trajectory(
        ala.system, start, openmm.LangevinMiddleIntegrator(temperature, friction, step)
    )
    ours = _trajectory(
        ala.system, start, LangevinSplittingIntegrator("BAOA", step, temperature, friction)
    )
    dx, dv = _difference(ours, theirs)
    assert dx < X_TOL and dv < V_TOL, (dx, dv)
    other = _trajectory(
        ala.system, start, LangevinSplittingIntegrator("BAOAB", step, temperature, friction)
    )
    dx, dv = _difference(other, theirs)
    assert dx > 1e3 * X_TOL and dv > 1e3 * V_TOL, (dx, dv)


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
