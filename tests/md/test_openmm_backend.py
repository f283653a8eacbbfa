"""Words compiled to OpenMM CustomIntegrators: program, errors, agreement with the torch
backend (deterministic and statistical), temperature changes, heat/shadow work, GHMC."""

from __future__ import annotations

import math
from contextlib import nullcontext

import numpy as np
import openmm
import pytest
import torch
from md_helpers import harmonic_openmm_system, harmonic_stationary, within
from openmm import unit
from openmmtools import testsystems

import splitsde as sd
from splitsde.backends.openmm import (
    BOLTZMANN,
    LangevinSplittingIntegrator,
    OpenMMPotential,
    SplittingWarning,
    make_context,
    openmm_langevin,
)
from splitsde.base.stats import walker_batch_means

KT1 = 1.0 / BOLTZMANN  # temperature (K) at which kT = 1 kJ/mol


def test_the_boltzmann_constant_is_openmms():
    """One value of k_B (splitsde.langevin.units), equal to OpenMM's own molar gas constant."""
    ref = unit.MOLAR_GAS_CONSTANT_R.value_in_unit(unit.kilojoule_per_mole / unit.kelvin)
    assert BOLTZMANN == pytest.approx(ref, rel=1e-15)
    assert BOLTZMANN == sd.langevin.units.OPENMM_UNITS.boltzmann


def test_listing_names_every_substep_and_the_constants_block():
    integ = LangevinSplittingIntegrator("BAOAB", 0.002, 300, 1.0)
    text = integ.listing()
    for k, letter in enumerate("BAOAB"):
        assert f"sub-step {k}: {letter}[" in text
    assert "if (stale > 0)" in text and "exp(-dt*gamma)" in text
    assert "v = v + cm0*f" in text and "constrain positions" in text
    # the velocity constraints between the A corrections and the following O and B are
    # skipped (a linear projection before an affine update that is projected again)
    assert text.count("constrain velocities") == 3 and text.count("constrain positions") == 2
    assert "v = c2*(v + (x - x1)*c1) + cm1*gaussian" in text  # correction fused into O
    mts = LangevinSplittingIntegrator("B0 B1 A A O A A B1 B0", 0.002, 300, 1.0)
    assert "f0" in mts.listing() and "f1" in mts.listing() and mts.kick_groups == [0, 1]


@pytest.mark.parametrize(
    ("word", "kw", "message"),
    [
        ("BAOCB", {}, "Langevin letters"),
        ("B B0 A O A B0 B", {}, "mixes B"),
        (sd.reduce("BAOAB", reuse="per_step"), {}, "cannot express"),
        ("O{BAOAB}O", {}, "stochastic letter"),
        ("BAOAB", {"timestep": -1.0}, "timestep"),
        ("BAOAB", {"temperature": 0.0}, "temperature"),
    ],
)
def test_words_the_backend_cannot_express_are_refused(word, kw, message):
    with pytest.raises((sd.WordError, ValueError), match=message):
        LangevinSplittingIntegrator(word, **{"timestep": 0.001, **kw})


def test_check_system_refuses_uncovered_or_empty_force_groups():
    system = harmonic_openmm_system(np.ones(3), [1.0, 2.0], groups=[0, 1])
    with pytest.raises(ValueError, match=r"force group\(s\) \[1\]"):
        LangevinSplittingIntegrator("B0 A O A B0").check_system(system)
    with pytest.raises(ValueError, match=r"kicks force group\(s\) \[2\]"):
        LangevinSplittingIntegrator("B0 B1 B2 A O A B2 B1 B0").check_system(system)
    system.addForce(openmm.AndersenThermostat(300, 1.0))
    with pytest.raises(ValueError, match="AndersenThermostat"):
        LangevinSplittingIntegrator("BAOAB").check_system(system)


@pytest.fixture(scope="module")
def alanine():
    """Alanine dipeptide in vacuum without constraints or CM-motion removal, two force groups
    (bonded terms fast in group 1, torsions and nonbonded slow in group 0)."""
    ala = testsystems.AlanineDipeptideVacuum(constraints=None)
    system = ala.system
    for i in reversed(range(system.getNumForces())):
        f = system.getForce(i)
        if isinstance(f, openmm.CMMotionRemover):
            system.removeForce(i)
        elif isinstance(f, openmm.HarmonicBondForce | openmm.HarmonicAngleForce):
            f.setForceGroup(1)
    return system, ala.positions


@pytest.mark.parametrize(
    ("word", "groups"),
    [("BAB", False), ("B A O A B", False), ("B0 B1 A B1 B1 A B1 B0", True)],
)
def test_openmm_program_equals_torch_backend_deterministically(alanine, word, groups):
    """With friction 0 the O letters are the identity: both backends run the same
    deterministic program and must agree to round-off on a real molecule."""
    system, positions = alanine
    lsys = openmm_langevin(system, positions, temperature=300, friction=0.0, force_groups=groups)
    y0 = lsys.initial_state(1, generator=torch.Generator().manual_seed(0))
    h, steps = 0.0005, 100
    res = sd.integrate(lsys.integrator(word, allow_missing=True), y0, h=h, steps=steps, seed=0)
    with pytest.warns(SplittingWarning, match="no O letter") if "O" not in word else nullcontext():
        integ = LangevinSplittingIntegrator(word, h, 300, 0.0)
    ctx = make_context(
        system, integ, positions, platform="Reference", velocities=(y0["p"][0] / lsys.mass).numpy()
    )
    integ.step(steps)
    st = ctx.getState(getPositions=True, getVelocities=True)
    x = st.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    v = st.getVelocities(asNumpy=True).value_in_unit(unit.nanometer / unit.picosecond)
    np.testing.assert_allclose(x, res.final["q"][0].numpy(), rtol=0, atol=1e-10)
    np.testing.assert_allclose(v, (res.final["p"][0] / lsys.mass).numpy(), rtol=0, atol=1e-8)
    assert np.abs(x - np.asarray(positions.value_in_unit(unit.nanometer))).max() > 1e-3


def test_openmm_potential_matches_openmm_forces(alanine):
    system, positions = alanine
    pot = OpenMMPotential(system, positions)
    q = pot.initial((2, 22, 3), torch.float64, "cpu")
    q[1] += 0.01
    f = pot.force(q)
    ctx = openmm.Context(
        system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference")
    )
    for i in range(2):
        ctx.setPositions(q[i].numpy())
        st = ctx.getState(getForces=True, getEnergy=True)
        np.testing.assert_allclose(f[i].numpy(), st.getForces(asNumpy=True)._value, rtol=1e-12)
        assert pot.energy(q)[i].item() == pytest.approx(st.getPotentialEnergy()._value, rel=1e-12)
    assert pot.evaluations == 2  # energy and forces at the same positions: one evaluation
    constrained = testsystems.AlanineDipeptideVacuum()
    with pytest.raises(ValueError, match="constraints"):
        OpenMMPotential(constrained.system, constrained.positions)


N_PARTICLES = 1000
MASSES = np.array([1.0, 4.0, 9.0])[np.arange(N_PARTICLES) % 3]


def _openmm_moments(integ, system, x0, v0, burn=40, samples=300, stride=4, seed=1):
    ctx = make_context(system, integ, x0, platform="Reference", seed=seed, velocities=v0)
    integ.step(burn)
    acc = np.zeros((N_PARTICLES, 3, 4))
    for _ in range(samples):
        integ.step(stride)
        st = ctx.getState(getPositions=True, getVelocities=True)
        x = st.getPositions(asNumpy=True)._value
        p = st.getVelocities(asNumpy=True)._value * MASSES[:, None]
        acc += np.stack([x, x * x, p, p * p], axis=-1)
    return acc / samples


@pytest.mark.parametrize("word", ["OBABO", "BAO"])
def test_harmonic_particles_both_backends_match_exact_analysis(word):
    """1,000 independent 3-D harmonic particles with masses 1, 4, 9 (omega h = 1, 1/2, 1/3):
    OpenMM and torch give the same stationary variances within 4 SE, and both match the exact
    stationary covariance of the word (hand-composed letter matrices)."""
    h, k, gamma = 1.0, 1.0, 1.0
    rng = np.random.default_rng(0)
    x0 = rng.normal(size=(N_PARTICLES, 3))
    v0 = rng.normal(size=(N_PARTICLES, 3)) / np.sqrt(MASSES)[:, None]
    om = _openmm_moments(
        LangevinSplittingIntegrator(word, h, KT1, gamma), harmonic_openmm_system(MASSES, k), x0, v0
    )
    mass = torch.tensor(MASSES)[:, None]
    system = sd.langevin.underdamped(
        sd.potentials.Harmonic(math.sqrt(k)), gamma=gamma, kT=1.0, mass=mass
    )
    y0 = {"q": torch.tensor(x0), "p": torch.tensor(v0) * mass}
    obs = [
        sd.Running(lambda t, s: s["q"], "q", burn_in=40, every=4),
        sd.Running(lambda t, s: s["p"], "p", burn_in=40, every=4),
    ]
    res = sd.integrate(system.integrator(word), y0, h=h, steps=40 + 4 * 300, seed=3, observers=obs)
    # the library's exact analysis (probing the compiled step, per-particle masses) agrees
    # with the hand-composed reference to rounding
    from splitsde.analysis import affine_step, stationary

    three = sd.langevin.underdamped(
        sd.potentials.Harmonic(math.sqrt(k)),
        gamma=gamma,
        kT=1.0,
        mass=torch.tensor([[1.0], [4.0], [9.0]]),
    )
    _, cov = stationary(affine_step(three.integrator(word), 0.0, h, {"q": (3, 3), "p": (3, 3)}))
    for m in (1.0, 4.0, 9.0):
        sel = MASSES == m
        exact = harmonic_stationary(word, h, k={"B": k}, m=m, gamma=gamma)
        i = int(np.flatnonzero(np.array([1.0, 4.0, 9.0]) == m)[0]) * 3
        np.testing.assert_allclose(cov[i, i], exact[0, 0], rtol=1e-10)
        np.testing.assert_allclose(cov[9 + i, 9 + i], exact[1, 1], rtol=1e-10)
        np.testing.assert_allclose(cov[i, 9 + i], exact[0, 1], rtol=1e-10, atol=1e-14)
        for j, block in enumerate("qp"):
            a = walker_batch_means(
                torch.tensor(om[sel][..., 2 * j].ravel()),
                torch.tensor(om[sel][..., 2 * j + 1].ravel()),
            )
            b = walker_batch_means(
                res.finals[block]["mean"][torch.tensor(sel)].ravel(),
                res.finals[block]["mean_sq"][torch.tensor(sel)].ravel(),
            )
            va, sa, vb, sb = (
                float(a["var"]),
                float(a["var_se"]),
                float(b["var"]),
                float(b["var_se"]),
            )
            assert within(va, sa, vb, sb), (m, block, va, vb)
            assert within(va, sa, exact[j, j]), (m, block, va, exact[j, j])
            assert within(vb, sb, exact[j, j]), (m, block, vb, exact[j, j])
    # the test resolves the word's h-dependent bias: the light particles' position variance
    # differs from the Boltzmann value kT/k by far more than 4 SE (about 0.01)
    assert abs(harmonic_stationary(word, h, k={"B": k}, m=1.0, gamma=gamma)[0, 0] - 1.0 / k) > 0.05


def test_temperature_change_recomputes_constants():
    system = harmonic_openmm_system(np.full(2000, 2.0), 1.0)
    with pytest.warns(SplittingWarning, match="atoms never move"):
        integ = LangevinSplittingIntegrator("O", 0.5, KT1, 5.0)  # exact OU: v ~ N(0, kT/m)
    ctx = make_context(system, integ, np.zeros((2000, 3)), platform="Reference", seed=3)
    integ.step(2)
    sigma1 = np.array(integ.getPerDofVariableByName("cm0"))
    integ.setTemperature(4 * KT1)
    assert integ.getTemperature().value_in_unit(unit.kelvin) == pytest.approx(4 * KT1)
    integ.step(3)
    sigma4 = np.array(integ.getPerDofVariableByName("cm0"))
    np.testing.assert_allclose(sigma4, 2 * sigma1, rtol=1e-12)
    v = ctx.getState(getVelocities=True).getVelocities(asNumpy=True)._value
    var, se = (v**2).mean(), (v**2).std() / math.sqrt(v.size)
    assert within(var, se, 4.0 / 2.0)
    integ.setFriction(0.0 / unit.picosecond)
    assert integ.getFriction() == 0.0 / unit.picosecond
    integ.step(1)
    v2 = ctx.getState(getVelocities=True).getVelocities(asNumpy=True)._value
    np.testing.assert_array_equal(v2, v)  # friction 0: O is the identity


def _total_energy(ctx) -> float:
    st = ctx.getState(getEnergy=True)
    return (st.getPotentialEnergy() + st.getKineticEnergy()).value_in_unit(unit.kilojoule_per_mole)


def test_openmm_shadow_work_and_heat(alanine):
    system, positions = alanine
    with pytest.warns(SplittingWarning, match="NVE"):
        integ = LangevinSplittingIntegrator("BAB", 0.001, 300, 1.0, measure_shadow_work=True)
    ctx = make_context(system, integ, positions, platform="Reference", seed=1)
    ctx.setVelocitiesToTemperature(300, 1)
    e0 = _total_energy(ctx)
    integ.step(50)
    dE = _total_energy(ctx) - e0
    assert integ.get_shadow_work() == pytest.approx(dE, rel=1e-9, abs=1e-9)
    assert integ.get_heat() == 0.0 and abs(dE) > 1e-4
    integ = LangevinSplittingIntegrator(
        "OBABO", 0.001, 300, 5.0, measure_heat=True, measure_shadow_work=True
    )
    ctx = make_context(system, integ, positions, platform="Reference", seed=2)
    ctx.setVelocitiesToTemperature(300, 2)
    e0 = _total_energy(ctx)
    integ.step(50)
    dE = _total_energy(ctx) - e0
    assert integ.get_heat() + integ.get_shadow_work() == pytest.approx(dE, rel=1e-9, abs=1e-8)
    assert abs(integ.get_heat()) > 10 * abs(integ.get_shadow_work())
    assert integ.get_heat(dimensionless=True) == pytest.approx(integ.get_heat() / integ.kT)
    with pytest.raises(RuntimeError, match="measure_shadow_work"):
        LangevinSplittingIntegrator("BAOAB").get_shadow_work()


def test_openmm_ghmc_is_exact_and_accepts_like_the_torch_backend():
    """GHMC on 40 harmonic particles (120 DOF, one Metropolis test per system): exact
    variances in OpenMM, and the same acceptance rate as torch walkers that are each a copy of
    the system."""
    n, m, k = 40, 2.0, 1.0
    system = harmonic_openmm_system(np.full(n, m), k)
    rates = []
    for h in (1.2, 0.6):
        integ = LangevinSplittingIntegrator("GHMC", h, KT1, 1.0)
        rng = np.random.default_rng(1)
        ctx = make_context(
            system,
            integ,
            rng.normal(size=(n, 3)),
            platform="Reference",
            seed=4,
            velocities=rng.normal(size=(n, 3)) / math.sqrt(m),
        )
        integ.step(20)
        integ.reset_statistics()
        xs, ps, accepted = [], [], []
        for _ in range(1500):
            integ.step(2)
            st = ctx.getState(getPositions=True, getVelocities=True)
            xs.append(st.getPositions(asNumpy=True)._value)
            ps.append(st.getVelocities(asNumpy=True)._value * m)
            accepted.append(integ.getGlobalVariableByName("naccept0"))
        xs, ps = np.array(xs), np.array(ps)
        for arr, target in ((xs, 1.0 / k), (ps, m)):
            # per-DOF time averages are independent estimates (walker batch means)
            st = walker_batch_means(
                torch.tensor(arr.mean(0).ravel()), torch.tensor((arr**2).mean(0).ravel())
            )
            assert within(float(st["var"]), float(st["var_se"]), target)
        rate_mm = integ.acceptance_rate
        assert integ.getGlobalVariableByName("ntrials0") == 3000
        # standard error by batch means over time: 30 blocks of 100 steps (the partial
        # momentum refresh decorrelates the Metropolis outcomes within a few steps)
        per_block = np.diff(np.concatenate([[0.0], np.array(accepted)[49::50]])) / 100
        assert per_block.mean() == pytest.approx(rate_mm, rel=1e-12)
        se_mm = per_block.std(ddof=1) / math.sqrt(len(per_block))
        lsys = sd.langevin.underdamped(
            sd.potentials.Harmonic(math.sqrt(k)), gamma=1.0, kT=1.0, mass=m
        )
        g = torch.Generator().manual_seed(0)
        y0 = {
            "q": torch.randn(2000, n, 3, generator=g),
            "p": torch.randn(2000, n, 3, generator=g) * math.sqrt(m),
        }
        res = sd.integrate(lsys.integrator("GHMC"), y0, h=h, steps=60, seed=1)
        acc = res.acceptance[0]
        assert within(rate_mm, se_mm, acc.rate, acc.rate_se), (h, rate_mm, acc.rate)
        rates.append((rate_mm, se_mm))
    assert rates[1][0] - rates[0][0] > 4 * math.hypot(rates[0][1], rates[1][1])
    # the Metropolis test matters here: unadjusted OBABO has a 22 % position-variance bias
    assert harmonic_stationary("OBABO", 1.2, k={"B": k}, m=m, gamma=1.0)[0, 0] > 1.2 / k
