"""Checksummed OpenMM checkpoints: exact continuation, damaged files and checkpoints of another
run refused. (A plain ``Context.loadCheckpoint`` of a checkpoint truncated to half its length
loads without an error and leaves the integrator's kT at 6.9e-310.)"""

from __future__ import annotations

import numpy as np
import openmm
import pytest
from md_helpers import harmonic_openmm_system
from openmm import app

import splitsde as sd
from splitsde.backends.openmm import (
    ChecksummedCheckpointReporter,
    LangevinSplittingIntegrator,
    load_checkpoint,
    make_context,
    save_checkpoint,
)
from splitsde.runtime.checkpoint import CheckpointWarning

N = 20


def _system(k: float = 100.0) -> openmm.System:
    return harmonic_openmm_system(np.full(N, 12.0), k)


def _context(integ=None, system=None, seed=1):
    integ = integ or LangevinSplittingIntegrator("GHMC", 0.004, 300, 1.0)
    rng = np.random.default_rng(0)
    ctx = make_context(
        system or _system(), integ, rng.normal(size=(N, 3)) * 0.1, platform="Reference", seed=seed
    )
    ctx.setVelocitiesToTemperature(300, 3)
    return ctx, integ


def _positions(ctx) -> np.ndarray:
    return ctx.getState(getPositions=True).getPositions(asNumpy=True)._value


def test_save_and_load_continue_bit_for_bit(tmp_path):
    ctx, integ = _context()
    integ.step(10)
    save_checkpoint(ctx, tmp_path / "run.chk")
    integ.step(20)
    reference, accepted = _positions(ctx), integ.getGlobalVariableByName("naccept0")
    other, other_integ = _context(seed=99)  # another random stream and state
    load_checkpoint(other, tmp_path / "run.chk")
    other_integ.step(20)
    assert np.array_equal(_positions(other), reference)
    assert other_integ.getGlobalVariableByName("naccept0") == accepted


def test_reporter_writes_loadable_checkpoints(tmp_path):
    top = app.Topology()
    chain = top.addChain()
    for _ in range(N):
        top.addAtom("C", app.Element.getBySymbol("C"), top.addResidue("C", chain))

    def simulation():
        integ = LangevinSplittingIntegrator("BAOAB", 0.002, 300, 1.0)
        sim = app.Simulation(top, _system(), integ, openmm.Platform.getPlatformByName("Reference"))
        sim.context.setPositions(np.zeros((N, 3)))
        return sim

    sim = simulation()
    sim.reporters.append(ChecksummedCheckpointReporter(tmp_path / "sim.chk", 5))
    sim.step(12)
    resumed = simulation()
    load_checkpoint(resumed, tmp_path / "sim.chk")
    assert resumed.currentStep == 10


@pytest.mark.parametrize(
    "damage",
    ["truncate half", "truncate last byte", "flip header", "flip middle", "flip last"],
)
def test_damaged_checkpoint_is_refused(tmp_path, damage):
    ctx, integ = _context()
    integ.step(5)
    path = tmp_path / "run.chk"
    save_checkpoint(ctx, path)
    raw = bytearray(path.read_bytes())
    if damage == "truncate half":
        raw = raw[: len(raw) // 2]
    elif damage == "truncate last byte":
        raw = raw[:-1]
    else:
        at = {"flip header": 30, "flip middle": len(raw) // 2, "flip last": len(raw) - 1}[damage]
        raw[at] ^= 0x10
    path.write_bytes(bytes(raw))
    kT = integ.kT
    with pytest.raises(sd.CheckpointError, match=r"corrupted|not a splitsde checkpoint"):
        load_checkpoint(ctx, path)
    assert integ.kT == kT  # nothing was loaded


def test_damaged_newest_checkpoint_falls_back_to_the_previous_one(tmp_path):
    ctx, integ = _context()
    path = tmp_path / "run.chk"
    integ.step(5)
    save_checkpoint(ctx, path)
    at_five = _positions(ctx)
    integ.step(5)
    save_checkpoint(ctx, path)  # the step-5 checkpoint is kept as run.chk.prev
    raw = bytearray(path.read_bytes())
    path.write_bytes(bytes(raw[: len(raw) // 2]))
    other, _ = _context(seed=7)
    with pytest.warns(CheckpointWarning, match=r"corrupted(.|\n)*previous checkpoint"):
        load_checkpoint(other, path)
    assert other.getStepCount() == 5
    assert np.array_equal(_positions(other), at_five)


def test_a_diverged_state_is_not_written(tmp_path):
    ctx, integ = _context()
    path = tmp_path / "run.chk"
    integ.step(5)
    save_checkpoint(ctx, path)
    good = path.read_bytes()
    positions = _positions(ctx)
    positions[3, 1] = np.nan
    ctx.setPositions(positions)
    with pytest.raises(sd.CheckpointError, match=r"positions are not finite at step 5"):
        save_checkpoint(ctx, path)
    assert path.read_bytes() == good and not (tmp_path / "run.chk.prev").exists()


def test_a_missing_checkpoint_is_named(tmp_path):
    ctx, _ = _context()
    with pytest.raises(sd.CheckpointError, match=r"run.chk does not exist"):
        load_checkpoint(ctx, tmp_path / "run.chk")


@pytest.mark.parametrize(
    ("other", "what"),
    [
        (lambda: LangevinSplittingIntegrator("BAOAB", 0.004, 300, 1.0), "word"),
        (lambda: LangevinSplittingIntegrator("GHMC", 0.004, 310, 1.0), "temperature"),
        (lambda: LangevinSplittingIntegrator("GHMC", 0.004, 300, 2.0), "friction"),
        (lambda: LangevinSplittingIntegrator("GHMC", 0.002, 300, 1.0), "step size"),
        (lambda: openmm.LangevinMiddleIntegrator(300, 1.0, 0.004), "integrator"),
    ],
)
def test_checkpoint_of_another_run_is_refused(tmp_path, other, what):
    ctx, integ = _context()
    integ.step(5)
    save_checkpoint(ctx, tmp_path / "run.chk")
    target = openmm.Context(_system(), other(), openmm.Platform.getPlatformByName("Reference"))
    with pytest.raises(sd.CheckpointError, match=f"different run(.|\n)*{what}: checkpoint has"):
        load_checkpoint(target, tmp_path / "run.chk")


def test_checkpoint_of_another_system_is_refused(tmp_path):
    ctx, _ = _context()
    save_checkpoint(ctx, tmp_path / "run.chk")
    other, _ = _context(system=_system(k=200.0))
    with pytest.raises(sd.CheckpointError, match="system: checkpoint has"):
        load_checkpoint(other, tmp_path / "run.chk")


def test_temperature_changes_after_loading(tmp_path):
    ctx, integ = _context()
    integ.setTemperature(350)  # an annealing run saved at 350 K
    integ.step(5)
    save_checkpoint(ctx, tmp_path / "run.chk")
    other, other_integ = _context()  # constructed at 300 K
    with pytest.raises(sd.CheckpointError, match="temperature: checkpoint has 350 K"):
        load_checkpoint(other, tmp_path / "run.chk")
    other_integ.setTemperature(350)
    load_checkpoint(other, tmp_path / "run.chk")
    other_integ.setTemperature(300)  # continue at another temperature
    other_integ.step(2)


def test_an_integrate_checkpoint_is_not_an_openmm_checkpoint(tmp_path):
    system = sd.langevin.underdamped(sd.potentials.Harmonic(1.0))
    sd.integrate(
        system.integrator("BAOAB"),
        system.initial_state(2),
        h=0.1,
        steps=4,
        seed=0,
        checkpoint=tmp_path / "t.ckpt",
        checkpoint_every=2,
    )
    ctx, _ = _context()
    with pytest.raises(sd.CheckpointError, match="not of an OpenMM context"):
        load_checkpoint(ctx, tmp_path / "t.ckpt")
