"""Checkpoints: a changed force is refused, a bad state never replaces a good checkpoint, an
unwritable location fails before step 1, a failed write keeps the result, an existing
checkpoint is not overwritten silently, and temporaries of killed writers are cleaned up."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import splitsde as sd
from splitsde.runtime.checkpoint import CheckpointWarning, read_checkpoint
from splitsde.runtime.fingerprint import Unidentifiable, callable_digest

# -- a force whose strength comes from a closure, a global, a module or an object -------------
K = 1.0


def global_force(q):
    return -K * q


def closure_force(k):
    return lambda q: -k * q


class Spring:
    def __init__(self, k):
        self.k = k

    def __call__(self, q):
        return -self.k * q


def linear_module(k):
    m = torch.nn.Linear(1, 1, bias=False).double()
    with torch.no_grad():
        m.weight.fill_(-k)
    return m


def _system(force):
    q, p = sd.blocks("q p")
    F = sd.Field("F", [q])
    sde = sd.SDE(
        [q, p],
        {
            "A": sd.Flow({q: p}),
            "B": sd.Flow({p: F()}),
            "O": sd.Flow({p: -p}, {p: 2**0.5}),
        },
    )
    return sd.System(sde, fields={"F": force})


def _run(force, path, **kw):
    y0 = {"q": torch.ones(4, 1, dtype=torch.float64), "p": torch.zeros(4, 1, dtype=torch.float64)}
    args = {"h": 0.1, "steps": 30, "seed": 5, "checkpoint": path, "checkpoint_every": 10}
    args.update(kw)
    return sd.integrate(_system(force).integrator("BAOAB"), y0, **args)


class _StopAt(sd.Observer):
    name = "stop"

    def __init__(self, at):
        self.at = at

    def on_step(self, step, t, state):
        if step + 1 == self.at:
            raise KeyboardInterrupt


@pytest.mark.parametrize(
    "how",
    ["closure constant", "global constant", "module weights", "object attribute", "potential"],
)
def test_resume_after_the_force_doubled_is_refused_naming_the_field(tmp_path, how):
    global K
    path = tmp_path / "run.ckpt"
    if how == "closure constant":
        one, two = closure_force(1.0), closure_force(2.0)
    elif how == "module weights":
        one, two = linear_module(1.0), linear_module(2.0)
    elif how == "object attribute":
        one, two = Spring(1.0), Spring(2.0)
    elif how == "potential":
        one, two = sd.potentials.Harmonic(1.0).force, sd.potentials.Harmonic(2**0.5).force
    else:
        one = two = global_force
    with pytest.raises(KeyboardInterrupt):
        _run(one, path, observers=[_StopAt(15)])
    if how == "global constant":
        K = 2.0
    try:
        with pytest.raises(sd.CheckpointError, match=r"different run(.|\n)*field F: checkpoint"):
            _run(two, path, resume=True, observers=[_StopAt(None)])
    finally:
        K = 1.0


def test_resume_with_an_equal_force_is_bit_identical(tmp_path):
    """A fresh closure with the same code and constant is the same force."""
    reference = _run(closure_force(1.0), None, checkpoint_every=None)
    path = tmp_path / "run.ckpt"
    with pytest.raises(KeyboardInterrupt):
        _run(closure_force(1.0), path, observers=[_StopAt(15)])
    assert read_checkpoint(path)["step"] == 10
    resumed = _run(closure_force(1.0), path, resume=True, observers=[_StopAt(None)])
    assert torch.equal(resumed.final["q"], reference.final["q"])
    assert torch.equal(resumed.final["p"], reference.final["p"])


def _opaque_force():
    """A force using a C-extension object with no inspectable state (a k-d tree)."""
    from scipy.spatial import cKDTree

    tree = cKDTree(np.zeros((1, 1)))

    def force(q):
        tree.query(np.zeros((1, 1)))  # stands for: neighbours from a compiled structure
        return -q

    return force


def test_a_callable_that_cannot_be_identified_needs_resume_trust(tmp_path):
    force = _opaque_force()
    with pytest.raises(Unidentifiable, match="cKDTree"):
        callable_digest(force)
    reference = _run(force, None, checkpoint_every=None)
    path = tmp_path / "run.ckpt"
    with pytest.warns(CheckpointWarning, match='field F.*resume="trust"'):
        with pytest.raises(KeyboardInterrupt):
            _run(force, path, observers=[_StopAt(15)])
    with pytest.raises(sd.CheckpointError, match=r"field F's callable cannot be identified"):
        _run(force, path, resume=True, observers=[_StopAt(None)])
    resumed = _run(force, path, resume="trust", observers=[_StopAt(None)])
    assert torch.equal(resumed.final["q"], reference.final["q"])


def _openmm_system(k):
    openmm = pytest.importorskip("openmm")
    system = openmm.System()
    for _ in range(2):
        system.addParticle(12.0)
    bond = openmm.HarmonicBondForce()
    bond.addBond(0, 1, 0.1, k)
    system.addForce(bond)
    return system


def test_forces_from_openmm_are_identified(tmp_path):
    """An OpenMM-backed potential (a Context inside) is identified by its system's XML: the
    same system resumes with resume=True, a stiffer bond is refused."""
    from splitsde.backends.openmm import OpenMMPotential

    positions = np.array([[0.0, 0.0, 0.0], [0.12, 0.0, 0.0]])

    def run(k, **kw):
        pot = OpenMMPotential(_openmm_system(k), positions)
        system = sd.langevin.underdamped(pot, kT=2.5, mass=pot.mass_tensor())
        return sd.integrate(
            system.integrator("BAOAB"), system.initial_state(2), h=0.002, steps=30, seed=1,
            checkpoint=tmp_path / "md.ckpt", checkpoint_every=10, **kw,
        )  # fmt: skip

    with pytest.raises(KeyboardInterrupt):
        run(1000.0, observers=[_StopAt(15)])
    with pytest.raises(sd.CheckpointError, match=r"different run(.|\n)*field F: checkpoint"):
        run(2000.0, observers=[_StopAt(None)], resume=True)
    resumed = run(1000.0, observers=[_StopAt(None)], resume=True)
    reference = run(1000.0, overwrite=True, observers=[_StopAt(None)])
    assert torch.equal(resumed.final["q"], reference.final["q"])


def test_digests_see_what_the_callable_computes():
    def make(k):
        def f(q):
            return helper(q) * k

        return f

    def helper(q):
        return -q

    assert callable_digest(make(1.0)) == callable_digest(make(1.0))
    assert callable_digest(make(1.0)) != callable_digest(make(2.0))
    assert callable_digest(lambda q: -q) != callable_digest(lambda q: q)
    a = linear_module(1.0)
    before = callable_digest(a)
    a.register_buffer("scale", torch.ones(1))
    assert callable_digest(a) != before
    assert callable_digest(a) == callable_digest(a)
    # a global tensor by content
    assert callable_digest(global_force) == callable_digest(global_force)


# -- a NaN between checks ---------------------------------------------------------------------
def _poisoned(after):
    """F(q, t) = -q, but NaN from time ``after`` on (a force that breaks mid-run)."""
    q, p = sd.blocks("q p")
    F = sd.Field("F", [q], time=True)
    sde = sd.SDE(
        [q, p], {"A": sd.Flow({q: p}), "B": sd.Flow({p: F()}), "O": sd.Flow({p: -p}, {p: 1.0})}
    )

    def force(x, t):
        return -x if t < after else torch.full_like(x, float("nan"))

    return sd.System(sde, fields={"F": force}).integrator("BAOAB")


def test_a_nan_between_checks_never_reaches_a_checkpoint(tmp_path):
    # step 15 (from t = 1.5) evaluates F at t = 1.5 and 1.55: the first step to see the NaN
    integ = _poisoned(after=1.52)
    y0 = {"q": torch.ones(3, 1, dtype=torch.float64), "p": torch.zeros(3, 1, dtype=torch.float64)}
    path = tmp_path / "run.ckpt"
    with pytest.raises(sd.NonFiniteError, match=r"step 15 .*field F returned non-finite") as err:
        sd.integrate(
            integ, y0, h=0.1, steps=60, seed=0, check_every=100,  # checks only at the end ...
            checkpoint=path, checkpoint_every=5,  # ... and before every checkpoint
        )  # fmt: skip
    assert err.value.step == 15 and err.value.field == "F"
    newest, previous = read_checkpoint(path), read_checkpoint(tmp_path / "run.ckpt.prev")
    assert (newest["step"], previous["step"]) == (15, 10)
    for ck in (newest, previous):
        assert all(bool(torch.isfinite(x).all()) for x in ck["state"])


def test_resume_falls_back_to_the_previous_checkpoint_and_says_so(tmp_path):
    force = closure_force(1.0)
    reference = _run(force, None, checkpoint_every=None)
    path = tmp_path / "run.ckpt"
    with pytest.raises(KeyboardInterrupt):
        _run(force, path, observers=[_StopAt(25)])
    assert read_checkpoint(path)["step"] == 20
    assert read_checkpoint(path.with_name("run.ckpt.prev"))["step"] == 10
    raw = bytearray(path.read_bytes())
    raw[-100] ^= 0xFF  # a flipped bit in the newest checkpoint
    path.write_bytes(bytes(raw))
    fell_back = r"corrupted(.|\n)*previous checkpoint .* \(step 10\)"
    with pytest.warns(CheckpointWarning, match=fell_back):
        resumed = _run(force, path, resume=True, observers=[_StopAt(None)])
    assert torch.equal(resumed.final["p"], reference.final["p"])


def test_resume_with_only_the_previous_checkpoint_left(tmp_path):
    """A crash between the two renames leaves only ``.prev``."""
    force = closure_force(1.0)
    reference = _run(force, None, checkpoint_every=None)
    path = tmp_path / "run.ckpt"
    with pytest.raises(KeyboardInterrupt):
        _run(force, path, observers=[_StopAt(25)])
    path.unlink()
    with pytest.warns(CheckpointWarning, match="missing"):
        resumed = _run(force, path, resume=True, observers=[_StopAt(None)])
    assert torch.equal(resumed.final["q"], reference.final["q"])


# -- where the checkpoint goes ------------------------------------------------------------------
class _Count(sd.Observer):
    name = "count"

    def __init__(self):
        self.steps = 0

    def on_step(self, step, t, state):
        self.steps += 1


def test_an_unwritable_location_is_refused_before_step_1(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    counter = _Count()
    with pytest.raises(sd.CheckpointError, match=r"cannot create the checkpoint directory .*file"):
        _run(closure_force(1.0), blocker / "run.ckpt", observers=[counter])
    with pytest.raises(sd.CheckpointError, match="is a directory"):
        _run(closure_force(1.0), tmp_path, observers=[counter])
    if sys.platform.startswith("linux"):  # /proc refuses new files, even to root
        with pytest.raises(sd.CheckpointError, match=r"/proc/run.ckpt cannot be written"):
            _run(closure_force(1.0), "/proc/run.ckpt", observers=[counter])
    assert counter.steps == 0


def test_a_missing_directory_is_created(tmp_path):
    path = tmp_path / "runs" / "job1" / "run.ckpt"
    _run(closure_force(1.0), path)
    assert read_checkpoint(path)["step"] == 30


class _RemoveDirectory(sd.Observer):
    """Replace the checkpoint directory by a file mid-run (a disk that went away)."""

    name = "sabotage"

    def __init__(self, directory, at):
        self.directory, self.at = directory, at

    def on_step(self, step, t, state):
        if step + 1 == self.at:
            for p in self.directory.iterdir():
                p.unlink()
            self.directory.rmdir()
            self.directory.write_text("in the way")


def test_a_failed_write_mid_run_stops_with_the_result_attached(tmp_path):
    force = closure_force(1.0)
    upto_20 = _run(force, None, steps=20, checkpoint_every=None)
    directory = tmp_path / "ckpts"
    with pytest.raises(sd.CheckpointError, match="after step 20 failed") as err:
        _run(force, directory / "run.ckpt", observers=[_RemoveDirectory(directory, 15)])
    res = err.value.result
    assert isinstance(res, sd.Result) and res.steps == 20
    assert torch.equal(res.final["q"], upto_20.final["q"])
    assert len(res.grid) == 21 and res.grid[-1] == upto_20.grid[-1]
    assert not list(tmp_path.glob(".run.ckpt.tmp-*"))


def test_a_failed_final_write_keeps_the_whole_result(tmp_path, monkeypatch):
    force = closure_force(1.0)
    full = _run(force, None, checkpoint_every=None)
    import splitsde.runtime.checkpoint as ck

    calls = {"n": 0}
    real = ck.os.fsync

    def disk_full(fd):
        if stat.S_ISREG(os.fstat(fd).st_mode):  # a checkpoint file, not its directory
            calls["n"] += 1
            if calls["n"] == 3:  # the end-of-run write (after those at steps 10 and 20)
                raise OSError(28, "No space left on device")
        return real(fd)

    monkeypatch.setattr(ck.os, "fsync", disk_full)
    with pytest.raises(sd.CheckpointError, match="No space left") as err:
        _run(force, tmp_path / "run.ckpt")
    assert err.value.result.steps == 30
    assert torch.equal(err.value.result.final["p"], full.final["p"])
    assert read_checkpoint(tmp_path / "run.ckpt")["step"] == 20
    assert not list(tmp_path.glob(".run.ckpt.tmp-*"))


def test_an_existing_checkpoint_is_not_overwritten_silently(tmp_path):
    path = tmp_path / "run.ckpt"
    _run(closure_force(1.0), path)
    before = path.read_bytes()
    with pytest.raises(sd.CheckpointError, match="already exists; pass resume=True"):
        _run(closure_force(2.0), path)
    assert path.read_bytes() == before
    other = _run(closure_force(2.0), path, overwrite=True)
    assert read_checkpoint(path)["step"] == 30
    again = _run(closure_force(2.0), path, resume=True)
    assert torch.equal(again.final["q"], other.final["q"])
    with pytest.raises(ValueError, match="overwrite=True needs checkpoint= and excludes resume"):
        _run(closure_force(2.0), path, resume=True, overwrite=True)


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_temporaries_of_dead_writers_are_removed(tmp_path):
    host = socket.gethostname()
    dead = _dead_pid()
    stale = [tmp_path / f".run.ckpt.tmp-{host}-{dead}", tmp_path / f".run.ckpt.tmp-{dead}"]
    kept = [
        tmp_path / f".run.ckpt.tmp-{host}-{os.getppid()}",  # a live writer
        tmp_path / f".run.ckpt.tmp-otherhost-{dead}",  # another host's process
        tmp_path / f".other.ckpt.tmp-{host}-{dead}",  # another file's temporary
        tmp_path / "notes.txt",
    ]
    for p in stale + kept:
        p.write_bytes(b"partial")
    traj = tmp_path / "traj"
    traj.mkdir()
    chunk_tmp = traj / f".chunk_000003.pt.tmp-{host}-{dead}"
    chunk_tmp.write_bytes(b"partial")
    _run(closure_force(1.0), tmp_path / "run.ckpt", save_every=5, trajectory=traj, chunk=2)
    assert not any(p.exists() for p in stale) and not chunk_tmp.exists()
    assert all(p.exists() for p in kept)


def test_result_grid_and_times_are_those_of_the_run(tmp_path):
    res = _run(closure_force(1.0), None, checkpoint_every=None, t0=0.3, save_every=10)
    np.testing.assert_array_equal(res.grid, 0.3 + 0.1 * np.arange(31))
    np.testing.assert_array_equal(res.times, res.grid[::10])


def test_warnings_are_not_raised_for_identified_runs(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _run(linear_module(1.0), tmp_path / "a.ckpt")
        _run(sd.potentials.DoubleWell(1.0).force, tmp_path / "b.ckpt")
    assert Path(tmp_path / "a.ckpt").exists()
