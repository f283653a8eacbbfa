"""Multiple time-stepping with force groups (B0, B1, ...) in both backends."""

from __future__ import annotations

import itertools
import math

import numpy as np
import openmm
import pytest
import torch
from md_helpers import harmonic_openmm_system, harmonic_stationary, within

import splitsde as sd
from splitsde.backends.openmm import BOLTZMANN, LangevinSplittingIntegrator, make_context
from splitsde.base.stats import walker_batch_means

K_SLOW, K_FAST, M, GAMMA, H = 0.25, 4.0, 1.0, 1.0, 0.9
KS = {"B0": K_SLOW, "B1": K_FAST, "B": K_SLOW + K_FAST}


def _respa(n: int) -> str:
    """Slow kicks at the outer step, n inner velocity-Verlet steps of the fast group around O."""
    inner = " ".join(["B1 A B1"] * n)
    return f"B0 {inner} O {inner} B0"


def _two_groups():
    pots = [sd.potentials.Harmonic(math.sqrt(K_SLOW)), sd.potentials.Harmonic(math.sqrt(K_FAST))]
    return sd.langevin.underdamped(pots, gamma=GAMMA, kT=1.0, mass=M, force_groups=True)


def _single():
    return sd.langevin.underdamped(
        sd.potentials.Harmonic(math.sqrt(K_SLOW + K_FAST)), gamma=GAMMA, kT=1.0, mass=M
    )


@pytest.mark.parametrize(
    ("mts", "single"),
    [("B0 B1 A O A B1 B0", "BAOAB"), ("B0 B1 A A O A A B1 B0", "B A A O A A B")],
)
def test_same_rate_force_groups_equal_summed_forces(mts, single):
    """Kicks of different groups commute: a word that kicks both groups together is the
    single-force word, draw for draw."""
    y0 = _two_groups().initial_state(64, dim=3, generator=torch.Generator().manual_seed(1))
    a = sd.integrate(_two_groups().integrator(mts), y0, h=H, steps=50, seed=5)
    b = sd.integrate(_single().integrator(single), y0, h=H, steps=50, seed=5)
    torch.testing.assert_close(a.final["q"], b.final["q"], rtol=0, atol=1e-12)
    torch.testing.assert_close(a.final["p"], b.final["p"], rtol=0, atol=1e-12)
    assert a.nfe_by_field == {"F0": 51, "F1": 51}


def test_respa_approaches_the_single_rate_result_as_the_inner_step_shrinks():
    """Exact stationary position variance (hand-composed letter matrices) of the RESPA words:
    the single-rate BAOAB value kT/(k0 + k1) is approached monotonically as the inner step
    h/(2n) shrinks, down to the slow-group impulse floor; the torch backend reproduces the
    exact value of every word within 4 SE."""
    exact_single = harmonic_stationary("BAOAB", H / 16, k=KS, m=M, gamma=GAMMA)[0, 0]
    assert exact_single == pytest.approx(1 / (K_SLOW + K_FAST), rel=1e-12)
    errors = []
    for n in (1, 2, 4, 8):
        word = _respa(n)
        exact = harmonic_stationary(word, H, k=KS, m=M, gamma=GAMMA)[0, 0]
        errors.append(abs(exact - exact_single))
        if n in (1, 8):
            y0 = {
                "q": torch.randn(4000, 1, generator=torch.Generator().manual_seed(n)) * 0.5,
                "p": torch.randn(4000, 1, generator=torch.Generator().manual_seed(n + 9)),
            }
            res = sd.integrate(
                _two_groups().integrator(word),
                y0,
                h=H,
                steps=230,
                seed=n,
                observers=[sd.Running(lambda t, s: s["q"], "q", burn_in=30)],
            )
            st = walker_batch_means(res.finals["q"]["mean"], res.finals["q"]["mean_sq"])
            assert within(float(st["var"][0]), float(st["var_se"][0]), exact), (n, st["var"], exact)
    assert all(e2 < e1 for e1, e2 in itertools.pairwise(errors))
    assert errors[0] > 0.05 and errors[-1] < errors[0] / 10


def test_openmm_respa_matches_the_exact_analysis():
    n_particles, n = 600, 2
    word = _respa(n)
    system = harmonic_openmm_system(np.full(n_particles, M), [K_SLOW, K_FAST], groups=[0, 1])
    integ = LangevinSplittingIntegrator(word, H, 1.0 / BOLTZMANN, GAMMA)
    rng = np.random.default_rng(3)
    ctx = make_context(
        system,
        integ,
        0.5 * rng.normal(size=(n_particles, 3)),
        platform="Reference",
        seed=7,
        velocities=rng.normal(size=(n_particles, 3)),
    )
    integ.step(30)
    xs = []
    for _ in range(200):
        integ.step(2)
        xs.append(ctx.getState(getPositions=True).getPositions(asNumpy=True)._value)
    xs = np.array(xs)
    st = walker_batch_means(torch.tensor(xs.mean(0).ravel()), torch.tensor((xs**2).mean(0).ravel()))
    exact = harmonic_stationary(word, H, k=KS, m=M, gamma=GAMMA)[0, 0]
    assert within(float(st["var"]), float(st["var_se"]), exact)
    # the MTS bias is resolved (the single-rate value is many SE away)
    assert not within(float(st["var"]), float(st["var_se"]), 1 / (K_SLOW + K_FAST))


def test_openmm_same_rate_force_groups_equal_summed_forces():
    """Deterministic part (friction 0): OpenMM's random streams depend on the system's forces,
    so two programs are compared draw for draw in the torch backend only."""
    rng = np.random.default_rng(0)
    x0, v0 = rng.normal(size=(50, 3)), rng.normal(size=(50, 3))
    out = []
    for word, system in (
        (
            "B0 B1 A O A B1 B0",
            harmonic_openmm_system(np.full(50, M), [K_SLOW, K_FAST], groups=[0, 1]),
        ),
        ("BAOAB", harmonic_openmm_system(np.full(50, M), K_SLOW + K_FAST)),
    ):
        integ = LangevinSplittingIntegrator(word, H / 4, 1.0 / BOLTZMANN, 0.0)
        ctx = make_context(system, integ, x0, platform="Reference", seed=11, velocities=v0)
        integ.step(40)
        out.append(ctx.getState(getPositions=True).getPositions(asNumpy=True)._value)
    np.testing.assert_allclose(out[0], out[1], rtol=0, atol=1e-12)
    assert np.abs(out[0] - x0).max() > 0.1


# The standard multiple-time-step split of a PME system: reciprocal space in its own group,
# kicked once per step; bonded and direct-space forces kicked twice (two inner steps, each
# with its own O): OpenMM's MTSLangevinIntegrator with groups [(1, 1), (0, 2)].
MTS_WORD = "B1 B0 A O A B0 B0 A O A B0 B1"


@pytest.fixture(scope="module")
def flexible_water():
    """About 90 flexible TIP3P waters with PME, reciprocal space in force group 1."""
    from openmm import unit
    from openmmtools import testsystems

    wb = testsystems.WaterBox(
        box_edge=1.4 * unit.nanometers, cutoff=0.6 * unit.nanometers, constrained=False
    )
    (nb,) = [f for f in wb.system.getForces() if isinstance(f, openmm.NonbondedForce)]
    assert nb.getNonbondedMethod() == openmm.NonbondedForce.PME
    assert {f.getForceGroup() for f in wb.system.getForces()} == {0}
    nb.setReciprocalSpaceForceGroup(1)
    return wb


def test_reciprocal_space_group_counts_as_a_force_group(flexible_water):
    system = flexible_water.system
    LangevinSplittingIntegrator(MTS_WORD).check_system(system)  # accepted
    with pytest.raises(sd.SplitsdeError, match=r"force group\(s\) \[1\] hold forces"):
        LangevinSplittingIntegrator("B0 A O A B0").check_system(system)
    with pytest.raises(sd.SplitsdeError, match=r"kicks force group\(s\) \[2\]"):
        LangevinSplittingIntegrator("B2 B1 B0 A O A B0 B1 B2").check_system(system)


def _final(system, positions, integ, steps=20):
    integ.setConstraintTolerance(1e-12)
    ctx = openmm.Context(system, integ, openmm.Platform.getPlatformByName("Reference"))
    ctx.setPositions(positions)
    ctx.setVelocitiesToTemperature(300, 1)
    integ.step(steps)
    st = ctx.getState(getPositions=True, getVelocities=True)
    return st.getPositions(asNumpy=True)._value, st.getVelocities(asNumpy=True)._value


@pytest.mark.parametrize(("temperature", "friction"), [(300.0, 0.0), (1e-30, 5.0)])
def test_mts_word_equals_openmm_mts_langevin_without_noise(flexible_water, temperature, friction):
    """With the noise off (friction 0, or friction at T -> 0: O is the deterministic damping
    at its place in the word) our word and OpenMM's MTSLangevinIntegrator give the same
    trajectory to rounding (no constraints, double precision): measured 7e-16 nm after 20
    steps of 1 fs. Negative control: one inner step (B1 B0 A A O A A B0 B1) differs by 3e-3 nm."""
    system, positions = flexible_water.system, flexible_water.positions
    theirs = _final(
        system,
        positions,
        openmm.MTSLangevinIntegrator(temperature, friction, 0.001, [(1, 1), (0, 2)]),
    )
    ours = _final(
        system, positions, LangevinSplittingIntegrator(MTS_WORD, 0.001, temperature, friction)
    )
    assert np.abs(ours[0] - theirs[0]).max() < 1e-13
    assert np.abs(ours[1] - theirs[1]).max() < 1e-10
    one_inner = _final(
        system,
        positions,
        LangevinSplittingIntegrator("B1 B0 A A O A A B0 B1", 0.001, temperature, friction),
    )
    assert np.abs(one_inner[0] - theirs[0]).max() > 1e-5
