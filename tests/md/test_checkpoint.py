"""Checkpoint/resume (bit for bit after a SIGKILL), refused checkpoints, streamed trajectories."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

import splitsde as sd

ROOT = Path(__file__).resolve().parents[2]

RUN = textwrap.dedent(
    """
    import os, signal, sys, torch
    import splitsde as sd

    class Killer(sd.Observer):
        name = "killer"
        at = None
        def on_step(self, k, t, state):
            if self.at is not None and k + 1 == self.at:
                os.kill(os.getpid(), signal.SIGKILL)

    def run(tmp, dtype, kill_at=None, resume=False, checkpoint=True):
        system = sd.langevin.underdamped(sd.potentials.DoubleWell(1.0), gamma=1.0, kT=1.0,
                                         mass=torch.tensor([1.0, 2.0], dtype=dtype))
        gen = torch.Generator().manual_seed(1)
        y0 = system.initial_state(48, dim=2, dtype=dtype, generator=gen)
        killer = Killer()
        killer.at = kill_at
        observers = [
            killer,
            sd.WorkAndHeat(),
            sd.Running(lambda t, s: s["q"], "q", burn_in=5),
            sd.observe(lambda t, s: s["q"].mean().item(), "qbar", every=7),
        ]
        return sd.integrate(
            system.integrator("GHMC"), y0, h=0.35, steps=120, seed=11, observers=observers,
            save_every=9, save=["q"],
            checkpoint=os.path.join(tmp, "run.ckpt") if checkpoint else None,
            checkpoint_every=25 if checkpoint else None, resume=resume,
            trajectory=os.path.join(tmp, "traj"), chunk=4,
        )

    if __name__ == "__main__":
        run(sys.argv[1], getattr(torch, sys.argv[2]), kill_at=int(sys.argv[3]))
    """
)


@pytest.fixture(scope="module")
def runner(tmp_path_factory):
    path = tmp_path_factory.mktemp("script") / "ckpt_run.py"
    path.write_text(RUN)
    sys.path.insert(0, str(path.parent))
    import ckpt_run

    yield path, ckpt_run
    sys.path.remove(str(path.parent))


def _same(a: sd.Result, b: sd.Result) -> None:
    for k in a.final:
        assert torch.equal(a.final[k], b.final[k])
    assert torch.equal(a.acceptance[0].accepted, b.acceptance[0].accepted)
    assert (a.nfe, a.nfe_first_step) == (b.nfe, b.nfe_first_step)
    for key in ("shadow_work", "heat"):
        assert torch.equal(a.finals["work"][key], b.finals["work"][key])
    assert torch.equal(a.finals["q"]["mean_sq"], b.finals["q"]["mean_sq"])
    assert np.array_equal(a.observables["qbar"], b.observables["qbar"])
    ta, sa = a.trajectory.load()
    tb, sb = b.trajectory.load()
    assert np.array_equal(ta, tb) and torch.equal(sa["q"], sb["q"])
    assert len(ta) == 120 // 9 + 2


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_kill_and_resume_is_bit_identical(runner, tmp_path, dtype):
    script, mod = runner
    reference = mod.run(str(tmp_path / "ref"), getattr(torch, dtype), checkpoint=False)
    work = tmp_path / "job"
    work.mkdir()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, str(script), str(work), dtype, "70"],
        env=env,
        capture_output=True,
        timeout=120,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
    assert (work / "run.ckpt").exists()
    # killed after the checkpoint at step 50 and after writing a chunk (frames 36..63) past it
    assert (work / "traj" / "chunk_000001.pt").exists()
    resumed = mod.run(str(work), getattr(torch, dtype), resume=True)
    _same(reference, resumed)
    assert not list(work.glob(".run.ckpt.tmp-*"))


def _small(tmp_path: Path, **kw) -> sd.Result:
    system = sd.langevin.underdamped(sd.potentials.Harmonic(1.0), gamma=1.0, kT=1.0)
    args = {
        "h": 0.3,
        "steps": 30,
        "seed": 2,
        "checkpoint": tmp_path / "c.ckpt",
        "checkpoint_every": 10,
    }
    word = kw.pop("word", "BAOAB")
    args.update(kw)
    return sd.integrate(system.integrator(word), system.initial_state(8, dim=2), **args)


def test_resume_of_a_finished_run_returns_the_same_result(tmp_path):
    a = _small(tmp_path)
    b = _small(tmp_path, resume=True)
    assert torch.equal(a.final["p"], b.final["p"]) and b.steps == 30


def test_corrupted_checkpoint_is_refused(tmp_path):
    """Both files damaged (the newest and the previous one it falls back to)."""
    _small(tmp_path)
    paths = [tmp_path / "c.ckpt", tmp_path / "c.ckpt.prev"]
    raws = [bytearray(p.read_bytes()) for p in paths]
    for p, raw in zip(paths, raws):
        raw[len(raw) // 2] ^= 0x01
        p.write_bytes(bytes(raw))
    with pytest.raises(sd.CheckpointError, match="corrupted"):
        _small(tmp_path, resume=True)
    for p, raw in zip(paths, raws):
        p.write_bytes(bytes(raw[: len(raw) // 3]))
    with pytest.raises(sd.CheckpointError, match="corrupted"):
        _small(tmp_path, resume=True)
    for p in paths:
        p.write_bytes(b"not a checkpoint")
    with pytest.raises(sd.CheckpointError, match="not a splitsde checkpoint"):
        _small(tmp_path, resume=True)


@pytest.mark.parametrize(
    ("change", "component"),
    [
        ({"word": "OBABO"}, "word"),
        ({"h": 0.31}, "grid"),
        ({"steps": 40}, "grid"),
        ({"save_every": 5}, "saving"),
    ],
)
def test_mismatched_checkpoint_is_refused(tmp_path, change, component):
    _small(tmp_path)
    with pytest.raises(sd.CheckpointError, match=f"different run(.|\n)*{component}"):
        _small(tmp_path, resume=True, **change)


def test_mismatched_dtype_seed_and_state_are_refused(tmp_path):
    system = sd.langevin.underdamped(sd.potentials.Harmonic(1.0))
    integ = system.integrator("BAOAB")
    y0 = system.initial_state(4)
    ck = tmp_path / "d.ckpt"
    sd.integrate(integ, y0, h=0.1, steps=5, seed=1, checkpoint=ck, checkpoint_every=2)
    y32 = {k: v.float() for k, v in y0.items()}
    with pytest.raises(sd.CheckpointError, match="dtype"):
        sd.integrate(integ, y32, h=0.1, steps=5, seed=1, checkpoint=ck, resume=True)
    with pytest.raises(sd.CheckpointError, match="seed"):
        sd.integrate(integ, y0, h=0.1, steps=5, seed=2, checkpoint=ck, resume=True)
    moved = {"q": y0["q"] + 1, "p": y0["p"]}
    with pytest.raises(sd.CheckpointError, match="initial state"):
        sd.integrate(integ, moved, h=0.1, steps=5, seed=1, checkpoint=ck, resume=True)


def test_trajectory_is_never_overwritten_silently(tmp_path):
    system = sd.langevin.underdamped(sd.potentials.Harmonic(1.0))
    args = {
        "h": 0.1,
        "steps": 10,
        "seed": 0,
        "save_every": 1,
        "trajectory": tmp_path / "t",
        "chunk": 3,
    }
    res = sd.integrate(system.integrator("BAOAB"), system.initial_state(2), **args)
    assert res.states == {} and len(res.trajectory) == 11
    with pytest.raises(FileExistsError, match="already holds chunks"):
        sd.integrate(system.integrator("BAOAB"), system.initial_state(2), **args)


def test_trajectory_exports_to_dcd_and_xtc(tmp_path):
    import mdtraj

    top = mdtraj.Topology()
    chain = top.add_chain()
    for name in ("C", "O"):
        top.add_atom(name, mdtraj.element.get_by_symbol(name), top.add_residue("MOL", chain))
    system = sd.langevin.underdamped(sd.potentials.Harmonic(3.0))
    y0 = system.initial_state(2, dim=(2, 3))
    res = sd.integrate(
        system.integrator("BAOAB"),
        y0,
        h=0.05,
        steps=20,
        seed=0,
        save_every=4,
        trajectory=tmp_path / "t",
        chunk=2,
    )
    for ext in ("dcd", "xtc"):
        out = tmp_path / f"w1.{ext}"
        res.trajectory.save(out, top, walker=1)
        back = mdtraj.load(str(out), top=top)
        _, states = res.trajectory.load()
        assert back.n_frames == 6
        np.testing.assert_allclose(back.xyz, states["q"][:, 1].numpy(), atol=2e-3)
