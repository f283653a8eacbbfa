r"""Monte Carlo over several processes with ``torch.distributed``.

The walkers of a Monte Carlo estimate are independent, so they shard trivially: rank
:math:`r` of :math:`R` runs walkers :math:`[\lfloor rW/R\rfloor, \lfloor (r+1)W/R\rfloor)` with
its own random stream, seeded by :func:`rank_seed` from ``(seed, rank)`` (a
:class:`numpy.random.SeedSequence` spawn key, so the streams are independent), and the moment
sums that the estimators need -- :math:`\sum x`, :math:`\sum x x^\top`, counts, in float64 --
are all-reduced. Hence

* a run is reproducible bit for bit for a fixed world size (and device, dtype);
* runs with different world sizes use different streams, so they agree **in distribution**
  (same walkers, same law), not bit for bit;
* a single process is rank 0 of a world of size 1, with the same seed derivation, so
  ``torchrun --nproc-per-node 1`` and a plain run give identical results.

Launch: ``torchrun --nproc-per-node N -m splitsde verify ... --monte-carlo`` on one machine
(gloo on CPU, nccl when each rank has a GPU); on several nodes add ``--nnodes``,
``--node-rank`` and ``--rdzv-endpoint`` as usual for ``torchrun``. :func:`init_world` joins the
process group torchrun describes in the environment.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from splitsde.analysis.common_noise import derived_seed

__all__ = ["World", "current_world", "init_world", "rank_seed"]


def rank_seed(seed: int, rank: int, *stream: int | str) -> int:
    """The seed of ``rank``'s random stream (and of sub-streams ``stream``), derived from
    ``(seed, rank)``: independent streams for distinct ranks."""
    return derived_seed(int(seed), "rank", int(rank), *stream)


@dataclass(frozen=True)
class World:
    """The processes a Monte Carlo estimate is sharded over (size 1: this process alone)."""

    rank: int = 0
    size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def is_root(self) -> bool:
        return self.rank == 0

    def shard(self, n: int) -> slice:
        """This rank's contiguous share of ``n`` items."""
        return slice(self.rank * n // self.size, (self.rank + 1) * n // self.size)

    def sum(self, x: np.ndarray) -> np.ndarray:
        """Elementwise sum over ranks, in float64."""
        x = np.asarray(x, np.float64)
        if not self.distributed:
            return x
        t = torch.as_tensor(np.ascontiguousarray(x), dtype=torch.float64, device=self.device)
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.SUM)
        return t.cpu().numpy().reshape(x.shape)

    def any(self, flag: bool) -> bool:
        """Whether ``flag`` is true on any rank."""
        return bool(self.sum(np.array([float(flag)]))[0] > 0)

    def gather(self, obj: Any) -> list[Any]:
        """One picklable object from every rank, in rank order."""
        if not self.distributed:
            return [obj]
        out: list[Any] = [None] * self.size
        torch.distributed.all_gather_object(out, obj)
        return out


def current_world() -> World:
    """The initialised ``torch.distributed`` process group, or a world of one process."""
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()):
        return World()
    backend = dist.get_backend()
    device = torch.device("cpu")
    if backend == "nccl":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return World(dist.get_rank(), dist.get_world_size(), device)


def init_world(backend: str | None = None) -> World:
    """Join the process group described by torchrun's environment variables (``RANK``,
    ``WORLD_SIZE``, ``MASTER_ADDR``, ...) if there is one: ``nccl`` when CUDA is available,
    else ``gloo`` (or ``backend``). Without those variables: a world of one process."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return current_world()
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or "RANK" not in os.environ:
        return World()
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend=backend)
    return current_world()
