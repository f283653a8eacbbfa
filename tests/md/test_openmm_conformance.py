"""The compiled integrator behaves like OpenMM's thermostated integrators: openmmtools
(ThermodynamicState, MCMC moves, replica exchange) sets its temperature and samples at it;
copies and pickles keep the word and the program; reduction strings work; systems are checked
when the library makes the Context, and a plain ``app.Simulation`` warns after its first step;
words that cannot sample the canonical distribution warn; ``sd.integrate`` refuses OpenMM
integrators."""

from __future__ import annotations

import copy
import math
import pickle
import warnings

import numpy as np
import openmm
import pytest
from md_helpers import harmonic_openmm_system, within
from openmm import app, unit
from openmmtools import cache, mcmc, multistate, states

import splitsde as sd
from splitsde.backends.openmm import (
    BOLTZMANN,
    LangevinSplittingIntegrator,
    OpenMMError,
    SplittingWarning,
    make_context,
)

N, MASS, K = 300, 12.0, 100.0  # harmonic particles (amu, kJ/mol/nm^2): <x^2> = kT/K per DOF


def _reference() -> cache.ContextCache:
    return cache.ContextCache(platform=openmm.Platform.getPlatformByName("Reference"))


class WordMove(mcmc.BaseIntegratorMove):
    """An openmmtools MCMC move that propagates with a splitsde word at the temperature of the
    thermodynamic state."""

    def __init__(self, word="BAOAB", timestep=0.002, friction=5.0, n_steps=500, **kwargs):
        super().__init__(n_steps, **kwargs)
        self.word, self.timestep, self.friction = word, timestep * unit.picosecond, friction

    def _get_integrator(self, thermodynamic_state):
        return LangevinSplittingIntegrator(
            self.word, self.timestep, thermodynamic_state.temperature, self.friction
        )

    def __getstate__(self):
        return {**super().__getstate__(), "word": self.word, "timestep": self.timestep,
                "friction": self.friction}  # fmt: skip

    def __setstate__(self, state):
        super().__setstate__(state)
        self.word, self.timestep, self.friction = (
            state["word"],
            state["timestep"],
            state["friction"],
        )


def _position_variance(positions) -> tuple[float, float]:
    """Variance of the position components about 0 and its standard error (independent DOF)."""
    x2 = np.asarray(positions.value_in_unit(unit.nanometer)) ** 2
    return float(x2.mean()), float(x2.std(ddof=1) / math.sqrt(x2.size))


def test_thermostated_interface():
    integ = LangevinSplittingIntegrator("BAOAB", 2 * unit.femtoseconds, 300 * unit.kelvin, 2.0)
    assert integ.getTemperature().value_in_unit(unit.kelvin) == pytest.approx(300)
    assert integ.getFriction().value_in_unit(unit.picosecond**-1) == 2.0
    assert integ.getStepSize().value_in_unit(unit.picosecond) == pytest.approx(0.002)
    integ.setTemperature(350 * unit.kelvin)
    assert integ.kT == pytest.approx(350 * BOLTZMANN, rel=1e-15)
    integ.setFriction(4.0)
    assert integ.getGlobalVariableByName("gamma") == 4.0
    with pytest.raises(OpenMMError, match="temperature must be positive"):
        integ.setTemperature(-1.0)


def test_thermodynamic_state_recognises_the_heat_bath():
    system = harmonic_openmm_system(np.full(N, MASS), K)
    state = states.ThermodynamicState(system, 300 * unit.kelvin)
    ctx = state.create_context(
        LangevinSplittingIntegrator("BAOAB", 0.002, 300, 1.0),
        openmm.Platform.getPlatformByName("Reference"),
    )
    # a thermostated integrator: openmmtools leaves out its AndersenThermostat ...
    assert not any(isinstance(f, openmm.AndersenThermostat) for f in ctx.getSystem().getForces())
    assert state.is_context_compatible(ctx)
    # ... and sets the temperature of another state through setTemperature
    states.ThermodynamicState(system, 450 * unit.kelvin).apply_to_context(ctx)
    assert ctx.getIntegrator().getTemperature().value_in_unit(unit.kelvin) == pytest.approx(450)
    with pytest.raises(states.ThermodynamicsError):  # it reads our temperature
        state.create_context(LangevinSplittingIntegrator("BAOAB", 0.002, 310, 1.0))
    # a word without O is not coupled to a heat bath: the system keeps its thermostat
    with pytest.warns(SplittingWarning, match="NVE"):
        nve = LangevinSplittingIntegrator("BAB", 0.002, 300, 1.0)
    with pytest.raises(AttributeError, match="no O letter"):
        nve.getTemperature()
    ctx = state.create_context(nve, openmm.Platform.getPlatformByName("Reference"))
    assert any(isinstance(f, openmm.AndersenThermostat) for f in ctx.getSystem().getForces())
    nve.check_system(ctx.getSystem())  # an AndersenThermostat is fine for an NVE word


def test_mcmc_move_samples_at_the_state_temperature():
    """BAOAB samples a harmonic potential exactly at any stable step, so <x^2> = kT/K: the
    move reaches the temperature of each ThermodynamicState (300 K, then 600 K in the same
    cached Context) within 4 SE, and the two differ by far more."""
    system = harmonic_openmm_system(np.full(N, MASS), K)
    sampler_state = states.SamplerState(np.zeros((N, 3)) * unit.nanometer)
    context_cache = _reference()
    move = WordMove(n_steps=500, reassign_velocities=True)
    for T in (300.0, 600.0):
        state = states.ThermodynamicState(system, T * unit.kelvin)
        for _ in range(3):
            move.apply(state, sampler_state, context_cache=context_cache)
        var, se = _position_variance(sampler_state.positions)
        assert within(var, se, BOLTZMANN * T / K), (T, var, se)
        assert not within(var, se, BOLTZMANN * (900.0 - T) / K)
    assert len(context_cache) == 1  # one Context served both temperatures
    _, integ = context_cache.get_context(state)
    assert isinstance(integ, LangevinSplittingIntegrator) and str(integ.word) == "BAOAB"


def test_replica_exchange_with_a_word(tmp_path):
    """openmmtools' ReplicaExchangeSampler with two temperatures and a GHMC word: it runs, and
    each replica's <x^2> matches the temperature of its state (exchanges between 300 and 600 K
    are never accepted for 900 DOF, so replicas stay at their state)."""
    system = harmonic_openmm_system(np.full(N, MASS), K)
    temps = [300.0, 600.0]
    thermo = [states.ThermodynamicState(system, T * unit.kelvin) for T in temps]
    rng = np.random.default_rng(0)
    samplers = [
        states.SamplerState(rng.normal(size=(N, 3)) * math.sqrt(BOLTZMANN * T / K) * unit.nanometer)
        for T in temps
    ]
    sampler = multistate.ReplicaExchangeSampler(
        mcmc_moves=WordMove("GHMC", timestep=0.004, n_steps=300), number_of_iterations=4
    )
    sampler.energy_context_cache = _reference()
    sampler.sampler_context_cache = _reference()
    reporter = multistate.MultiStateReporter(str(tmp_path / "rex.nc"), checkpoint_interval=1)
    sampler.create(thermodynamic_states=thermo, sampler_states=samplers, storage=reporter)
    sampler.run()
    assert sampler.iteration == 4
    for replica, state_index in enumerate(sampler._replica_thermodynamic_states):
        var, se = _position_variance(sampler.sampler_states[replica].positions)
        assert within(var, se, BOLTZMANN * temps[state_index] / K), (state_index, var, se)
    for state in thermo:
        _, integ = sampler.sampler_context_cache.get_context(state)
        assert str(integ.word) == "O{BAB}O" and 0.5 < integ.acceptance_rate <= 1.0
    reporter.close()


def _trajectory(integ, seed=3, steps=30):
    system = harmonic_openmm_system(np.full(50, MASS), K)
    rng = np.random.default_rng(1)
    ctx = make_context(
        system, integ, rng.normal(size=(50, 3)) * 0.2, platform="Reference", seed=seed
    )
    ctx.setVelocitiesToTemperature(300, 2)
    integ.step(steps)
    return ctx.getState(getPositions=True).getPositions(asNumpy=True)._value


@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
def test_copies_keep_word_program_and_state(how):
    integ = LangevinSplittingIntegrator(
        "GHMC", 0.004, 310, 3.0, reduction="none", measure_heat=True
    )
    integ.setTemperature(320)  # state beyond the constructor's
    dup = copy.deepcopy(integ) if how == "deepcopy" else pickle.loads(pickle.dumps(integ))
    assert type(dup) is LangevinSplittingIntegrator
    assert str(dup.word) == str(integ.word) == "O{BAB}O"
    assert dup.reduction == integ.reduction == sd.Reduction("none")
    assert dup.program.listing() == integ.program.listing()
    assert dup.listing() == integ.listing()
    assert dup.measure_heat
    assert dup.getTemperature().value_in_unit(unit.kelvin) == pytest.approx(320)
    assert openmm.XmlSerializer.serialize(dup) == openmm.XmlSerializer.serialize(integ)
    assert np.array_equal(_trajectory(dup), _trajectory(integ))


def test_pickle_of_another_program_is_refused():
    state = LangevinSplittingIntegrator("GHMC").__getstate__()
    state["config"] = {**state["config"], "word": "BAOAB"}
    obj = LangevinSplittingIntegrator.__new__(LangevinSplittingIntegrator)
    with pytest.raises(OpenMMError, match="different OpenMM program"):
        obj.__setstate__(state)


def test_reduction_strings():
    exact = LangevinSplittingIntegrator("OBABO", reduction="exact")
    none = LangevinSplittingIntegrator("OBABO", reduction="none")
    assert exact.reduction == sd.Reduction("exact") and none.reduction == sd.Reduction("none")
    # OpenMM evaluates forces when positions change either way: the same computations
    assert exact.listing() == none.listing()
    assert np.array_equal(_trajectory(exact), _trajectory(none))
    with pytest.raises(sd.WordError, match="reduction must be 'exact', 'none'"):
        LangevinSplittingIntegrator("OBABO", reduction="fast")
    with pytest.raises(sd.WordError, match="cannot express"):
        LangevinSplittingIntegrator("OBABO", reduction="per_step")


def test_words_that_cannot_sample_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        LangevinSplittingIntegrator("BAOAB")
        LangevinSplittingIntegrator("GHMC")
    with pytest.warns(SplittingWarning, match="no O letter.*temperature and friction are ignored"):
        LangevinSplittingIntegrator("BAB")
    with pytest.warns(SplittingWarning, match="no O letter.*only the Metropolis test"):
        LangevinSplittingIntegrator("{BAB}")
    with pytest.warns(SplittingWarning, match="no A letter: the atoms never move"):
        LangevinSplittingIntegrator("BOB")


def _topology(n: int) -> app.Topology:
    top = app.Topology()
    chain = top.addChain()
    for _ in range(n):
        top.addAtom("C", app.Element.getBySymbol("C"), top.addResidue("C", chain))
    return top


def _simulation(system, integ) -> app.Simulation:
    sim = app.Simulation(
        _topology(system.getNumParticles()),
        system,
        integ,
        openmm.Platform.getPlatformByName("Reference"),
    )
    sim.context.setPositions(np.random.default_rng(0).normal(size=(system.getNumParticles(), 3)))
    return sim


@pytest.mark.parametrize(
    ("groups", "word", "message"),
    [
        ([0, 1], "B0 A O A B0", r"forces outside its kicked groups \[0\] are ignored"),
        ([0, 0], "B0 B1 A O A B1 B0", r"kicks force group\(s\) \[1\], which had no energy"),
    ],
)
def test_plain_simulation_warns_after_the_first_step(groups, word, message):
    system = harmonic_openmm_system(np.full(20, MASS), [K, 2 * K], groups=groups)
    sim = _simulation(system, LangevinSplittingIntegrator(word, 0.002, 300, 1.0))
    with pytest.warns(SplittingWarning, match=message):
        sim.step(3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sim.step(3)  # once only
    with pytest.raises(OpenMMError, match=r"force group"):  # the library's Context: an error
        make_context(system, LangevinSplittingIntegrator(word), np.zeros((20, 3)))


def test_plain_simulation_with_matching_groups_is_silent():
    system = harmonic_openmm_system(np.full(20, MASS), [K, 2 * K], groups=[0, 1])
    integ = LangevinSplittingIntegrator("B0 B1 A O A B1 B0", 0.002, 300, 1.0)
    sim = _simulation(system, integ)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sim.step(5)
    assert integ.getGlobalVariableByName("groups_checked") == 1.0
    assert integ.getGlobalVariableByName("unkicked_force") < 1e-20
    assert integ.getGlobalVariableByName("group_force_1") > 0


def test_make_context_checks_the_system():
    system = harmonic_openmm_system(np.full(20, MASS), K)
    system.addForce(openmm.AndersenThermostat(300, 1.0))
    with pytest.raises(OpenMMError, match="AndersenThermostat"):
        make_context(system, LangevinSplittingIntegrator("BAOAB"), np.zeros((20, 3)))


def test_integrate_refuses_an_openmm_integrator():
    """``sd.integrate`` is the torch backend's loop; an OpenMM integrator is sent to OpenMM."""
    system = sd.langevin.underdamped(sd.potentials.Harmonic(1.0))
    integ = LangevinSplittingIntegrator("BAOAB", 0.002, 300, 1.0)
    with pytest.raises(sd.SplitsdeError) as err:
        sd.integrate(integ, system.initial_state(2), h=0.1, steps=2)
    assert isinstance(err.value, TypeError)
    assert str(err.value) == (
        "integrate runs a splitsde Integrator; got a "
        "splitsde.backends.openmm.LangevinSplittingIntegrator, which is an OpenMM integrator: "
        "run it with an OpenMM Simulation or Context (openmm.app.Simulation(topology, system, "
        "integrator).step(n)), or use system.integrator(word) for the torch backend"
    )
    with pytest.raises(sd.SplitsdeError, match="which is an OpenMM integrator"):
        sd.integrate(openmm.LangevinMiddleIntegrator(300, 1, 0.002), system.initial_state(2),
                     h=0.1, steps=2)  # fmt: skip
