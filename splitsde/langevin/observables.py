r"""Observables of Langevin runs on the torch backend, one function per quantity, in the units
of the run (energies in the potential's unit, temperatures as :math:`k_BT` in that unit):

* potential energy :math:`U(q)` per walker (:func:`potential_energy`),
* kinetic energy :math:`K = \tfrac12 p^\top M^{-1} p` per walker (:func:`kinetic_energy`),
* kinetic temperature :math:`k_BT_{kin} = 2K / N_{dof}` per walker (:func:`kinetic_temperature`),
  with :math:`N_{dof}` the number of coordinates minus constrained degrees of freedom where the
  caller says so; the formula itself, for a kinetic energy and a count of degrees of freedom
  from elsewhere (an OpenMM state), is :func:`temperature_from_kinetic_energy`,
* configurational temperature :math:`k_BT_{conf} = \langle |\nabla U|^2\rangle / \langle \Delta
  U \rangle` (Rugh, Phys. Rev. Lett. 78 (1997) 772; Butler et al., J. Chem. Phys. 109 (1998)
  6519), an estimator of :math:`k_BT` that needs no momenta: its per-walker terms
  (:func:`configurational_terms`), the estimate over the walkers of one state
  (:func:`configurational_temperature`) and time averages after a burn-in
  (:class:`ConfigurationalTemperature`).

Temperatures come in ``units.temperature`` of the :class:`~splitsde.langevin.units.Units`
passed: :math:`k_BT` in energy units by default, kelvin with a Boltzmann constant
(``units=OPENMM_UNITS``); the reporter passes its own.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from splitsde.langevin.units import REDUCED_UNITS, Units
from splitsde.runtime.observers import Observer

__all__ = [
    "ConfigurationalTemperature",
    "configurational_temperature",
    "configurational_terms",
    "kinetic_energy",
    "kinetic_temperature",
    "potential_energy",
    "temperature_from_kinetic_energy",
]


def kinetic_energy(state: Mapping[str, torch.Tensor], mass: Any = 1.0) -> torch.Tensor:
    r"""Per-walker kinetic energy :math:`\tfrac12 p^\top M^{-1} p` (``mass`` broadcasts
    against the momenta, e.g. per-particle masses of shape ``(atoms, 1)``)."""
    p = state["p"]
    m = torch.as_tensor(mass, dtype=p.dtype, device=p.device)
    return 0.5 * (p * p / m).reshape(p.shape[0], -1).sum(-1)


def temperature_from_kinetic_energy(
    kinetic_energy: Any, ndof: int, units: Units = REDUCED_UNITS
) -> Any:
    r"""The kinetic-temperature formula, written once: :math:`k_BT_{kin} = 2K / N_{dof}`,
    returned in ``units.temperature`` -- :math:`k_BT` in the energy unit of ``K`` for
    :data:`~splitsde.langevin.units.REDUCED_UNITS` (the default), kelvin
    (:math:`T = 2K / (N_{dof} k_B)`) when ``units`` has a Boltzmann constant, as
    :data:`~splitsde.langevin.units.OPENMM_UNITS`. ``K`` may be a number, an array or a
    tensor (per walker); the OpenMM backend's
    :func:`~splitsde.backends.openmm.kinetic_temperature` uses this formula too."""
    if ndof < 1:
        raise ValueError(f"no kinetic degrees of freedom left ({ndof})")
    return units.temperature_from_kT(2.0 * kinetic_energy / ndof)


def kinetic_temperature(
    state: Mapping[str, torch.Tensor],
    mass: Any = 1.0,
    removed_dof: int = 0,
    *,
    units: Units = REDUCED_UNITS,
) -> torch.Tensor:
    r"""Per-walker instantaneous kinetic temperature :math:`k_BT_{kin} = 2K / N_{dof}`,
    :math:`N_{dof}` = coordinates per walker minus ``removed_dof``, in ``units.temperature``:
    :math:`k_BT` in energy units by default (reduced units), kelvin with
    ``units=OPENMM_UNITS`` or any :class:`~splitsde.langevin.units.Units` with a Boltzmann
    constant (see :func:`temperature_from_kinetic_energy`)."""
    ndof = state["p"][0].numel() - removed_dof
    return temperature_from_kinetic_energy(kinetic_energy(state, mass), ndof, units)


def potential_energy(state: Mapping[str, torch.Tensor], system: Any) -> torch.Tensor:
    """Per-walker potential energy :math:`U(q)` of ``system`` (its potentials summed)."""
    return system.energy(state["q"])


def configurational_terms(
    state: Mapping[str, torch.Tensor], system: Any
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Per-walker :math:`|\nabla U|^2` and :math:`\Delta U` (float64), the numerator and
    denominator of the configurational temperature."""
    q = state["q"]
    f = system.force(q)
    grad2 = (f * f).reshape(q.shape[0], -1).sum(-1).to(torch.float64)
    return grad2, system.laplacian(q).to(torch.float64)


def configurational_temperature(state: Mapping[str, torch.Tensor], system: Any) -> torch.Tensor:
    r"""The configurational temperature of one state estimated over its walkers,
    :math:`\sum_w |\nabla U(q_w)|^2 / \sum_w \Delta U(q_w)` (a 0-d float64 tensor, energy
    units)."""
    grad2, lap = configurational_terms(state, system)
    return grad2.sum() / lap.sum()


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
        g2, lap = configurational_terms(state, self.system)
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
