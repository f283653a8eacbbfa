"""Trajectories streamed to disk in chunks during a run.

:func:`splitsde.integrate` with ``trajectory=directory`` writes the saved states in chunks of
``chunk`` frames, each chunk a separate file written atomically (temporary file, then rename).
A crash loses at most the frames of the chunk being filled; with checkpoints, resuming restores
that partial chunk from the checkpoint and removes any chunk written after it, so the files
after a resumed run equal those of an uninterrupted one. Temporary files of writers that were
killed are removed when a trajectory is created or resumed.

:class:`Trajectory` reads the chunks back (all frames, or only some blocks) and, with the
optional ``mdtraj`` extra, exports one walker's positions to DCD, XTC or any format mdtraj
writes.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from splitsde.runtime.checkpoint import remove_stale_temporaries, tmp_path

__all__ = ["Saver", "Trajectory", "TrajectoryWriter"]

_META = "trajectory.json"


def _chunk_name(i: int) -> str:
    return f"chunk_{i:06d}.pt"


class TrajectoryWriter:
    """Buffers saved frames and writes them to ``directory`` every ``chunk`` frames."""

    def __init__(self, directory: str | os.PathLike, names: Sequence[str], chunk: int) -> None:
        if chunk < 1:
            raise ValueError("chunk must be at least 1 frame")
        self.directory = Path(directory)
        self.names = tuple(names)
        self.chunk = int(chunk)
        self.written = 0
        self.times: list[float] = []
        self.frames: list[tuple[torch.Tensor, ...]] = []

    def create(self) -> None:
        """Start a new trajectory; an existing one is never overwritten silently."""
        if self.directory.exists() and any(self.directory.glob("chunk_*.pt")):
            raise FileExistsError(
                f"trajectory directory {self.directory} already holds chunks; remove it, choose "
                "another directory, or resume from the checkpoint written with it"
            )
        self.directory.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(self.directory, "chunk_*.pt")
        meta = {
            "format": "splitsde-trajectory",
            "version": 1,
            "blocks": list(self.names),
            "chunk": self.chunk,
        }
        (self.directory / _META).write_text(json.dumps(meta))

    def append(self, t: float, frame: tuple[torch.Tensor, ...]) -> None:
        self.times.append(float(t))
        self.frames.append(tuple(x.detach().to("cpu").clone() for x in frame))
        if len(self.frames) >= self.chunk:
            self.flush()

    def flush(self) -> None:
        """Write the buffered frames as the next chunk (atomically)."""
        if not self.frames:
            return
        data = {"times": torch.tensor(self.times, dtype=torch.float64)}
        for j, n in enumerate(self.names):
            data[n] = torch.stack([f[j] for f in self.frames])
        path = self.directory / _chunk_name(self.written)
        tmp = tmp_path(path)
        try:
            with open(tmp, "wb") as fh:
                torch.save(data, fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        self.written += 1
        self.times, self.frames = [], []

    def state_dict(self) -> dict[str, Any]:
        return {"written": self.written, "times": list(self.times), "frames": list(self.frames)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a checkpoint: drop chunks written after it, restore the buffer."""
        self.written = int(state["written"])
        self.times = list(state["times"])
        self.frames = [tuple(f) for f in state["frames"]]
        if not (self.directory / _META).exists():
            raise FileNotFoundError(f"trajectory {self.directory} is missing; cannot resume it")
        for i in range(self.written):
            if not (self.directory / _chunk_name(i)).exists():
                raise FileNotFoundError(
                    f"trajectory chunk {_chunk_name(i)} in {self.directory} is missing; "
                    "the checkpoint refers to it"
                )
        for p in self.directory.glob("chunk_*.pt"):
            if int(p.stem.split("_")[1]) >= self.written:
                p.unlink()
        remove_stale_temporaries(self.directory, "chunk_*.pt")


class Saver:
    """Saves the state of a run every ``every`` steps (and at the start and the end): the
    blocks at positions ``index`` of the state, in memory or, with ``directory``, streamed to
    disk in chunks of ``chunk`` frames (:class:`TrajectoryWriter`)."""

    def __init__(
        self,
        every: int | None,
        names: Sequence[str],
        index: Sequence[int],
        directory: str | os.PathLike | None = None,
        chunk: int = 100,
    ) -> None:
        self.every = every or 0
        self.names = tuple(names)
        self.index = tuple(index)
        self.directory = directory
        self.writer = TrajectoryWriter(directory, names, chunk) if directory is not None else None
        self.frames: list[tuple[torch.Tensor, ...]] = []
        self.times: list[float] = []

    def start(self, t: float, state: Sequence[torch.Tensor]) -> None:
        """A new run: create the trajectory directory, save the initial state."""
        if self.writer is not None:
            self.writer.create()
        if self.every:
            self._keep(t, state)

    def next_save(self, k: int) -> int | None:
        """The step index of the next save after ``k`` (``None``: no saving)."""
        return (k // self.every + 1) * self.every if self.every else None

    def after_step(self, k: int, t: float, state: Sequence[torch.Tensor], last: int) -> None:
        """``k`` steps are done, ``last`` is the run's final step index."""
        if self.every and (k % self.every == 0 or k == last):
            self._keep(t, state)

    def _keep(self, t: float, state: Sequence[torch.Tensor]) -> None:
        frame = tuple(state[i].clone() for i in self.index)
        if self.writer is not None:
            self.writer.append(t, frame)
        else:
            self.frames.append(frame)
            self.times.append(t)

    def flush(self, *, quiet: bool = False) -> None:
        """Write buffered frames (``quiet``: ignore a failing disk, for partial results)."""
        if self.writer is None:
            return
        try:
            self.writer.flush()
        except OSError:
            if not quiet:
                raise

    def states(self) -> dict[str, torch.Tensor]:
        """The frames kept in memory, block name -> ``(n_saved, *block_shape)``."""
        if not self.frames:
            return {}
        return {n: torch.stack([f[j] for f in self.frames]) for j, n in enumerate(self.names)}

    def trajectory(self) -> Trajectory | None:
        return Trajectory(self.directory) if self.directory is not None else None

    def state_dict(self) -> dict[str, Any]:
        """The checkpoint entries of the saved states (``saved``, ``saved_t``, ``trajectory``)."""
        return {
            "saved": self.frames,
            "saved_t": self.times,
            "trajectory": self.writer.state_dict() if self.writer is not None else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.frames = [tuple(f) for f in state["saved"]]
        self.times = list(state["saved_t"])
        if self.writer is not None:
            self.writer.load_state_dict(state["trajectory"])


class Trajectory:
    """A trajectory written by :func:`splitsde.integrate` (``trajectory=directory``).

    >>> traj = Trajectory("run/traj")                        # doctest: +SKIP
    >>> times, states = traj.load()                          # doctest: +SKIP
    >>> traj.save("walker0.dcd", topology, walker=0)         # doctest: +SKIP
    """

    def __init__(self, directory: str | os.PathLike) -> None:
        self.directory = Path(directory)
        meta_path = self.directory / _META
        if not meta_path.exists():
            raise FileNotFoundError(f"{self.directory} is not a splitsde trajectory (no {_META})")
        meta = json.loads(meta_path.read_text())
        #: Names of the blocks written (a trajectory keeps names only, no Block symbols).
        self.block_names: tuple[str, ...] = tuple(meta["blocks"])
        self.chunk = int(meta["chunk"])

    @property
    def chunks(self) -> list[Path]:
        return sorted(self.directory.glob("chunk_*.pt"))

    def load(
        self, blocks: Sequence[str] | None = None
    ) -> tuple[np.ndarray, dict[str, torch.Tensor]]:
        """All frames written so far: times and block name -> tensor ``(frames, *shape)``."""
        names = tuple(blocks) if blocks is not None else self.block_names
        unknown = set(names) - set(self.block_names)
        if unknown:
            raise ValueError(
                f"the trajectory has no block(s) {sorted(unknown)}; it has {self.block_names}"
            )
        times, parts = [], {n: [] for n in names}
        for p in self.chunks:
            data = torch.load(p, weights_only=True)
            times.append(data["times"].numpy())
            for n in names:
                parts[n].append(data[n])
        if not times:
            return np.zeros(0), {}
        return np.concatenate(times), {n: torch.cat(v) for n, v in parts.items()}

    def __len__(self) -> int:
        return sum(int(torch.load(p, weights_only=True)["times"].numel()) for p in self.chunks)

    def to_mdtraj(
        self, topology: Any, *, walker: int = 0, block: str = "q", time_unit_ps: float = 1.0
    ):
        """One walker's frames as an :class:`mdtraj.Trajectory` (positions in nm).

        ``topology`` is an mdtraj or OpenMM topology; ``block`` holds positions of shape
        ``(walkers, atoms, 3)``; times are multiplied by ``time_unit_ps``.
        """
        from splitsde.base.optional import require

        mdtraj = require("mdtraj", extra="md", feature="writing molecular trajectories")

        times, states = self.load([block])
        if not states:
            raise ValueError(f"trajectory {self.directory} has no frames")
        xyz = states[block]
        if xyz.ndim != 4 or xyz.shape[-1] != 3:
            raise ValueError(
                f"block {block} has frames of shape {tuple(xyz.shape[1:])}; positions of shape "
                "(walkers, atoms, 3) are needed for molecular formats"
            )
        if not hasattr(topology, "n_atoms"):
            topology = mdtraj.Topology.from_openmm(topology)
        if topology.n_atoms != xyz.shape[2]:
            raise ValueError(
                f"topology has {topology.n_atoms} atoms, the trajectory {xyz.shape[2]}"
            )
        return mdtraj.Trajectory(
            xyz[:, walker].to(torch.float32).numpy(), topology, time=times * time_unit_ps
        )

    def save(
        self,
        path: str | os.PathLike,
        topology: Any,
        *,
        walker: int = 0,
        block: str = "q",
        time_unit_ps: float = 1.0,
    ) -> None:
        """Export one walker to DCD, XTC (or any format mdtraj infers from the extension)."""
        self.to_mdtraj(topology, walker=walker, block=block, time_unit_ps=time_unit_ps).save(
            str(path)
        )
