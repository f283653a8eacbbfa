r"""Checksummed OpenMM checkpoints that refuse damaged files and checkpoints of another run.

``Context.loadCheckpoint`` trusts its input: a truncated or bit-flipped checkpoint can load
without an error and leave garbage in the state (an integrator's ``kT`` of ``6.9e-310``), and a
checkpoint of another word or temperature loads into whatever integrator the context has.
:func:`save_checkpoint` stores OpenMM's checkpoint inside a splitsde checkpoint file (written
atomically, with a SHA-256 of its contents; :mod:`splitsde.runtime.checkpoint`) together with what
identifies the run: the integrator (for :class:`~splitsde.backends.openmm.
LangevinSplittingIntegrator`: word, reduction, step program, temperature, friction, step size),
the system (a digest of its XML) and the platform. A state with non-finite positions or
velocities is never written, and the previous checkpoint is kept as ``<name>.prev``, so a
diverged run cannot replace a good checkpoint. :func:`load_checkpoint` verifies the checksum
(falling back to the previous file, with a warning, when the newest is damaged) and refuses a
checkpoint whose run differs, naming every difference, before OpenMM sees a byte.
:class:`ChecksummedCheckpointReporter` does the same for an ``app.Simulation``, in place of
``app.CheckpointReporter``.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

import numpy as np
import torch

from splitsde.backends.openmm_integrator import LangevinSplittingIntegrator, _computations
from splitsde.backends.openmm_system import BOLTZMANN
from splitsde.base.optional import require
from splitsde.runtime.checkpoint import CheckpointError, load_latest, write_checkpoint

openmm = require("openmm", extra="md", feature="the OpenMM backend")

__all__ = ["ChecksummedCheckpointReporter", "load_checkpoint", "save_checkpoint"]

_KIND = "openmm-context"


def _context(target: Any) -> openmm.Context:
    ctx = getattr(target, "context", target)
    if not isinstance(ctx, openmm.Context):
        raise CheckpointError(
            f"expected an openmm.Context or an app.Simulation, got {type(target).__name__}"
        )
    return ctx


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _value(getter: Any) -> str:
    try:
        v = getter()
    except AttributeError:  # a word without O has no temperature or friction
        return "(none)"
    return str(v)


def run_identity(context: openmm.Context) -> dict[str, str]:
    """What must agree between the run that wrote a checkpoint and the one loading it."""
    integ = context.getIntegrator()
    ident = {"integrator": type(integ).__name__}
    if isinstance(integ, LangevinSplittingIntegrator):
        ident["word"] = str(integ.word)
        ident["reduction"] = str(integ.reduction)
        ident["step program"] = _digest(repr(_computations(integ)))
        ident["temperature"] = f"{integ.kT / BOLTZMANN:.6g} K (kT = {integ.kT!r} kJ/mol)"
        ident["friction"] = _value(integ.getFriction)
    else:
        for name in ("Temperature", "Friction"):
            getter = getattr(integ, f"get{name}", None)
            if getter is not None:
                ident[name.lower()] = _value(getter)
    ident["step size"] = str(integ.getStepSize())
    system = context.getSystem()
    ident["system"] = (
        f"{system.getNumParticles()} particles, {system.getNumConstraints()} constraints, "
        f"{system.getNumForces()} forces, "
        f"XML digest {_digest(openmm.XmlSerializer.serialize(system))}"
    )
    ident["platform"] = f"{context.getPlatform().getName()}, OpenMM {openmm.__version__}"
    return ident


def save_checkpoint(target: openmm.Context | Any, path: str | os.PathLike) -> None:
    """Write ``target``'s (a Context or an ``app.Simulation``) OpenMM checkpoint to ``path``,
    atomically and checksummed, with the identity of the run (see the module docstring); the
    checkpoint it replaces is kept as ``<path>.prev``.

    Raises :class:`~splitsde.runtime.checkpoint.CheckpointError` without writing if the positions or
    velocities are not finite (the run diverged: the checkpoints on disk are left as they
    were)."""
    ctx = _context(target)
    state = ctx.getState(getPositions=True, getVelocities=True)
    step = int(ctx.getStepCount())
    for what in ("positions", "velocities"):
        values = getattr(state, f"get{what.capitalize()}")(asNumpy=True)._value
        if not np.isfinite(values).all():
            raise CheckpointError(
                f"the {what} are not finite at step {step} (the run diverged); checkpoint "
                f"{path} was not written and the checkpoints on disk are kept"
            )
    data = ctx.createCheckpoint()
    write_checkpoint(
        path,
        {
            "kind": _KIND,
            "step": step,
            "identity": run_identity(ctx),
            "checkpoint": torch.frombuffer(bytearray(data), dtype=torch.uint8),
        },
    )


def load_checkpoint(target: openmm.Context | Any, path: str | os.PathLike) -> None:
    """Load a checkpoint written by :func:`save_checkpoint` into ``target``.

    The newest usable file of ``path`` and ``<path>.prev`` is loaded; falling back to the
    previous one warns (:class:`~splitsde.runtime.checkpoint.CheckpointWarning`). Raises
    :class:`~splitsde.runtime.checkpoint.CheckpointError` if there is none or both are damaged
    (truncated, modified: checksum), if it is not such a checkpoint, or if it was written by a
    different run (another word, reduction, temperature, friction, step size, system or
    platform; every difference is named). To continue a run at another temperature, load it
    at the temperature it was written at, then call ``setTemperature``."""
    ctx = _context(target)
    payload = load_latest(path)
    if payload is None:
        raise CheckpointError(f"checkpoint {path} does not exist")
    if payload.get("kind") != _KIND:
        raise CheckpointError(
            f"{path} is a splitsde checkpoint of splitsde.integrate, not of an OpenMM context"
        )
    stored, current = payload["identity"], run_identity(ctx)
    diffs = [
        f"{key}: checkpoint has {stored.get(key, '(missing)')}, this run has {value}"
        for key, value in current.items()
        if stored.get(key) != value
    ]
    if diffs:
        raise CheckpointError(
            f"checkpoint {path} was written by a different run; refusing to load it:\n  "
            + "\n  ".join(diffs)
        )
    ctx.loadCheckpoint(payload["checkpoint"].numpy().tobytes())


class ChecksummedCheckpointReporter:
    """An ``app.Simulation`` reporter that writes :func:`save_checkpoint` files every
    ``report_interval`` steps (in place of ``app.CheckpointReporter``); resume with
    :func:`load_checkpoint` ``(simulation, file)``."""

    def __init__(self, file: str | os.PathLike, report_interval: int) -> None:
        if int(report_interval) < 1:
            raise CheckpointError(f"report_interval must be >= 1, got {report_interval}")
        self.file = file
        self.report_interval = int(report_interval)

    def describeNextReport(self, simulation: Any) -> dict[str, Any]:
        steps = self.report_interval - simulation.currentStep % self.report_interval
        return {"steps": steps, "periodic": None, "include": []}

    def report(self, simulation: Any, state: Any) -> None:
        save_checkpoint(simulation, self.file)
