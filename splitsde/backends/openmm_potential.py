r"""OpenMM forces as a field of the torch backend: small real systems through
:func:`splitsde.integrate`, observers and the analysis tools."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from splitsde.backends import openmm_system
from splitsde.backends.openmm_system import BOLTZMANN, OpenMMError, value_in
from splitsde.base.optional import require
from splitsde.langevin.dynamics import LangevinSystem, underdamped
from splitsde.langevin.potentials import Potential

openmm = require("openmm", extra="md", feature="the OpenMM backend")
unit = require("openmm.unit", extra="md", feature="the OpenMM backend")

__all__ = ["OpenMMPotential", "openmm_langevin"]


class OpenMMPotential(Potential):
    r"""The potential energy and forces of an :class:`openmm.System` as a torch
    :class:`~splitsde.langevin.potentials.Potential`, so small real systems run through
    :func:`splitsde.integrate`, observers and analysis.

    Positions ``q`` of shape ``(walkers, atoms, 3)`` (nm) go in; forces (kJ/mol/nm) and
    energies (kJ/mol) per walker come out, computed walker by walker in one
    :class:`openmm.Context`. ``groups`` restricts them to some force groups (one potential per
    group gives the torch backend's force-group kicks ``B0``, ``B1``, ...). Energy and forces
    at the same positions come from one OpenMM evaluation (the last result is cached).

    The torch Langevin equations have no holonomic constraints, so a system with constraints
    is refused (run it with :class:`LangevinSplittingIntegrator` instead).
    """

    name = "openmm"
    #: Run-time cache and counter, not part of the forces (see :mod:`splitsde.runtime.fingerprint`).
    __fingerprint_ignore__ = ("_cache", "evaluations")

    def __init__(
        self,
        system: openmm.System,
        positions: Any,
        *,
        groups: set[int] | None = None,
        platform: str = "Reference",
        threads: int | None = 1,
    ) -> None:
        if system.getNumConstraints():
            raise OpenMMError(
                f"the system has {system.getNumConstraints()} constraints, which the torch "
                "backend does not handle; use LangevinSplittingIntegrator or remove constraints"
            )
        masses = [
            system.getParticleMass(i).value_in_unit(unit.dalton)
            for i in range(system.getNumParticles())
        ]
        if min(masses) <= 0:
            raise OpenMMError("massless particles (virtual sites) are not supported by this field")
        self.system = system
        self.masses = masses
        self.groups = set(groups) if groups is not None else None
        self.event_shape = (system.getNumParticles(), 3)
        pos = positions.value_in_unit(unit.nanometer) if unit.is_quantity(positions) else positions
        self.reference = np.asarray(pos, dtype=np.float64).reshape(self.event_shape)
        plat = openmm.Platform.getPlatformByName(platform)
        props = {"Threads": str(int(threads))} if platform == "CPU" and threads else {}
        self.context = openmm.Context(system, openmm.VerletIntegrator(0.001), plat, props)
        self._cache: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self.evaluations = 0
        if self.groups is not None:
            self.name = "openmm[" + ",".join(map(str, sorted(self.groups))) + "]"

    def mass_tensor(self, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """Masses (amu) shaped ``(atoms, 1)`` to broadcast against positions."""
        return torch.tensor(self.masses, dtype=dtype).reshape(-1, 1)

    def _evaluate(self, q: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        x = q.detach().to("cpu", torch.float64).numpy()
        if x.ndim != 3 or x.shape[1:] != self.event_shape:
            raise OpenMMError(
                f"positions must have shape (walkers, {self.event_shape[0]}, 3), "
                f"got {tuple(q.shape)}"
            )
        if self._cache is not None and np.array_equal(self._cache[0], x):
            return self._cache[1], self._cache[2]
        energies = np.empty(x.shape[0])
        forces = np.empty_like(x)
        kw = {"groups": self.groups} if self.groups is not None else {}
        for i, xi in enumerate(x):
            self.context.setPositions(xi)
            st = self.context.getState(getEnergy=True, getForces=True, **kw)
            energies[i] = st.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
            forces[i] = st.getForces(asNumpy=True).value_in_unit(
                unit.kilojoule_per_mole / unit.nanometer
            )
            self.evaluations += 1
        self._cache = (x.copy(), energies, forces)
        return energies, forces

    def energy(self, q: torch.Tensor) -> torch.Tensor:
        e, _ = self._evaluate(q)
        return torch.as_tensor(e, dtype=q.dtype, device=q.device).clone()

    def force(self, q: torch.Tensor) -> torch.Tensor:
        _, f = self._evaluate(q)
        return torch.as_tensor(f, dtype=q.dtype, device=q.device).clone()

    def initial(self, shape: tuple[int, ...], dtype: torch.dtype, device: Any) -> torch.Tensor:
        ref = torch.as_tensor(self.reference, dtype=dtype, device=device)
        return ref.expand(shape).clone()

    def __repr__(self) -> str:
        groups = f", groups={sorted(self.groups)}" if self.groups is not None else ""
        return f"OpenMMPotential({self.system.getNumParticles()} atoms{groups})"


def openmm_langevin(
    system: openmm.System,
    positions: Any,
    *,
    temperature: Any = 298.0,
    friction: Any = 1.0,
    force_groups: bool = False,
    platform: str = "Reference",
    threads: int | None = 1,
) -> LangevinSystem:
    """Underdamped Langevin dynamics of an OpenMM system for the torch backend.

    Units are OpenMM's (nm, ps, amu, kJ/mol): ``kT`` is :math:`k_B T` in kJ/mol, masses come
    from the system. With ``force_groups`` every non-empty force group ``k`` becomes kick
    letter ``Bk`` (in order; the letters are numbered 0, 1, ... by increasing group).
    """
    T = value_in(temperature, unit.kelvin, "temperature")
    gamma = value_in(friction, unit.picoseconds**-1, "friction")
    if force_groups:
        groups = sorted(openmm_system.force_groups(system))
        pots: Any = [
            OpenMMPotential(system, positions, groups={g}, platform=platform, threads=threads)
            for g in groups
        ]
    else:
        pots = OpenMMPotential(system, positions, platform=platform, threads=threads)
    first = pots[0] if isinstance(pots, list) else pots
    return underdamped(
        pots, gamma=gamma, kT=BOLTZMANN * T, mass=first.mass_tensor(), force_groups=force_groups
    )
