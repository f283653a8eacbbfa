"""A multi-rate word written with a repeated group runs as OpenMM's own MTS integrator.

``B1 (B0 A O A B0)^2 B1`` kicks the slow group 1 once per outer step (half a kick at each end)
and runs two inner BAOAB-like steps of the fast group 0, each with its own O: the splitting of
:class:`openmm.MTSLangevinIntegrator` with groups ``[(1, 1), (0, 2)]``. With the noise off the
two integrators must produce the same trajectory to rounding.
"""

from __future__ import annotations

import numpy as np
import openmm
import pytest
from openmm import unit

from splitsde.backends.openmm import LangevinSplittingIntegrator

WORD = "B1 (B0 A O A B0)^2 B1"


@pytest.fixture(scope="module")
def flexible_water():
    """About 90 flexible TIP3P waters with PME; reciprocal space in force group 1 (slow)."""
    from openmmtools import testsystems

    wb = testsystems.WaterBox(
        box_edge=1.4 * unit.nanometers, cutoff=0.6 * unit.nanometers, constrained=False
    )
    (nb,) = [f for f in wb.system.getForces() if isinstance(f, openmm.NonbondedForce)]
    assert nb.getNonbondedMethod() == openmm.NonbondedForce.PME
    nb.setReciprocalSpaceForceGroup(1)
    return wb


def _final(system, positions, integ, steps=20):
    ctx = openmm.Context(system, integ, openmm.Platform.getPlatformByName("Reference"))
    ctx.setPositions(positions)
    ctx.setVelocitiesToTemperature(300, 1)
    integ.step(steps)
    st = ctx.getState(getPositions=True, getVelocities=True)
    return st.getPositions(asNumpy=True)._value, st.getVelocities(asNumpy=True)._value


@pytest.mark.parametrize(("temperature", "friction"), [(300.0, 0.0), (1e-30, 5.0)])
def test_grouped_mts_word_equals_mts_langevin_integrator(flexible_water, temperature, friction):
    """Noise off: friction 0, or friction at T -> 0 (O is then the deterministic damping at
    its place in the word). Negative control: the same word with one inner step."""
    system, positions = flexible_water.system, flexible_water.positions
    ours_integ = LangevinSplittingIntegrator(WORD, 0.001, temperature, friction)
    assert str(ours_integ.word) == WORD
    theirs = _final(
        system,
        positions,
        openmm.MTSLangevinIntegrator(temperature, friction, 0.001, [(1, 1), (0, 2)]),
    )
    ours = _final(system, positions, ours_integ)
    dx, dv = np.abs(ours[0] - theirs[0]).max(), np.abs(ours[1] - theirs[1]).max()
    assert dx < 1e-13 and dv < 1e-10, (dx, dv)
    one_inner = _final(
        system,
        positions,
        LangevinSplittingIntegrator("B1 (B0 A O A B0)^1 B1", 0.001, temperature, friction),
    )
    assert np.abs(one_inner[0] - theirs[0]).max() > 1e-5
