r"""Observables of Langevin runs (per walker, as tensors of shape ``(walkers,)``).

* kinetic temperature :math:`T_{kin} = \langle p^\top M^{-1} p\rangle / N_{dof}` (minus
  constrained degrees of freedom where the caller says so),
* configurational temperature :math:`T_{conf} = \langle |\nabla U|^2\rangle / \langle \Delta U
  \rangle` (Rugh 1997; Butler et al. 1998): an estimator of kT that needs no momenta,
* potential energy :math:`U(q)`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from splitsde.observers import Observer

__all__ = ["ConfigurationalTemperature", "kinetic_temperature", "potential_energy"]


def kinetic_temperature(
    state: Mapping[str, torch.Tensor], mass: Any = 1.0, removed_dof: int = 0
) -> torch.Tensor:
    """Per-walker instantaneous kinetic temperature :math:`p^\\top M^{-1} p / N_{dof}`."""
    p = state["p"]
    m = torch.as_tensor(mass, dtype=p.dtype, device=p.device)
    ke2 = (p * p / m).reshape(p.shape[0], -1).sum(-1)
    ndof = p[0].numel() - removed_dof
    return ke2 / ndof


def potential_energy(state: Mapping[str, torch.Tensor], system: Any) -> torch.Tensor:
    return system.energy(state["q"])


class ConfigurationalTemperature(Observer):
    r"""Accumulates :math:`|\nabla U|^2` and :math:`\Delta U` after a burn-in;
    ``finish()`` returns their per-walker time averages and the ratio estimate."""

    def __init__(self, system: Any, burn_in: int = 0, every: int = 1, name: str = "T_conf") -> None:
        self.system = system
        self.burn_in = burn_in
        self.every = every
        self.name = name
        self.g2: torch.Tensor | None = None
        self.lap: torch.Tensor | None = None
        self.count = 0

    def on_step(self, step: int, t: float, state: Mapping[str, torch.Tensor]) -> None:
        if step + 1 <= self.burn_in or (step + 1 - self.burn_in) % self.every:
            return None
        q = state["q"]
        f = self.system.force(q)
        g2 = (f * f).reshape(q.shape[0], -1).sum(-1).to(torch.float64)
        lap = self.system.laplacian(q).to(torch.float64)
        if self.g2 is None:
            self.g2, self.lap = torch.zeros_like(g2), torch.zeros_like(lap)
        self.g2 += g2
        self.lap += lap
        self.count += 1
        return None

    def finish(self) -> dict[str, Any]:
        if not self.count:
            raise ValueError("no samples after the burn-in")
        g2 = self.g2 / self.count
        lap = self.lap / self.count
        return {"grad2": g2, "laplacian": lap, "value": float(g2.mean() / lap.mean())}

    def state_dict(self) -> dict[str, Any]:
        return {"g2": self.g2, "lap": self.lap, "count": self.count}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.g2, self.lap, self.count = state["g2"], state["lap"], state["count"]
