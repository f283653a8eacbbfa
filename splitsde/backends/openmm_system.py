r"""What the OpenMM backend needs to know about an :class:`openmm.System`: units, kinetic
degrees of freedom, which force groups hold forces, and whether a word integrates it correctly.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from splitsde.base.errors import SplitsdeError
from splitsde.base.optional import require
from splitsde.langevin.observables import temperature_from_kinetic_energy
from splitsde.langevin.units import OPENMM_UNITS

openmm = require("openmm", extra="md", feature="the OpenMM backend")
unit = require("openmm.unit", extra="md", feature="the OpenMM backend")

__all__ = [
    "BOLTZMANN",
    "OpenMMError",
    "check_force_groups",
    "degrees_of_freedom",
    "force_groups",
    "kinetic_temperature",
]

#: Molar Boltzmann constant in kJ/(mol K): the one value of :data:`splitsde.langevin.units
#: .OPENMM_UNITS` (equal to OpenMM's ``MOLAR_GAS_CONSTANT_R``; tests/md/test_openmm_backend.py).
BOLTZMANN = OPENMM_UNITS.boltzmann

# forces that contribute no energy or force (they act between steps, in updateContextState)
NO_FORCE = (
    openmm.CMMotionRemover,
    openmm.AndersenThermostat,
    openmm.MonteCarloBarostat,
    openmm.MonteCarloAnisotropicBarostat,
    openmm.MonteCarloMembraneBarostat,
    openmm.MonteCarloFlexibleBarostat,
)
_EWALD = (openmm.NonbondedForce.Ewald, openmm.NonbondedForce.PME, openmm.NonbondedForce.LJPME)


class OpenMMError(SplitsdeError, ValueError):
    """An input the OpenMM backend cannot use: a system the word would integrate wrongly, a
    non-finite or out-of-range parameter, a pickled integrator of another program."""


def value_in(x: Any, u: unit.Unit, what: str) -> float:
    """``x`` (an OpenMM quantity or a number already in ``u``) as a finite float in ``u``."""
    v = x.value_in_unit(u) if unit.is_quantity(x) else float(x)
    if not np.isfinite(v):
        raise OpenMMError(f"{what} must be finite, got {x}")
    return float(v)


def degrees_of_freedom(system: openmm.System) -> int:
    r"""Kinetic degrees of freedom of an OpenMM system: :math:`3` per particle with mass,
    minus one per constraint that involves a particle with mass, minus :math:`3` when a
    :class:`openmm.CMMotionRemover` fixes the centre of mass (massless particles are not
    integrated). The count OpenMM's ``StateDataReporter`` uses for its temperature."""
    zero = 0.0 * unit.dalton
    massive = [system.getParticleMass(i) > zero for i in range(system.getNumParticles())]
    dof = 3 * sum(massive)
    for k in range(system.getNumConstraints()):
        i, j, _ = system.getConstraintParameters(k)
        if massive[i] or massive[j]:
            dof -= 1
    if any(isinstance(f, openmm.CMMotionRemover) for f in system.getForces()):
        dof -= 3
    if dof < 1:
        raise OpenMMError(f"the system has no kinetic degrees of freedom ({dof})")
    return dof


def kinetic_temperature(kinetic_energy: Any, system: openmm.System) -> float | np.ndarray:
    r"""Instantaneous kinetic temperature :math:`T = 2K / (N_\mathrm{dof} k_B)` in kelvin, with
    :math:`N_\mathrm{dof}` from :func:`degrees_of_freedom` (constraints and a fixed centre of
    mass removed). ``kinetic_energy`` is an OpenMM quantity or a number in kJ/mol (an array of
    them gives an array)."""
    if unit.is_quantity(kinetic_energy):
        kinetic_energy = kinetic_energy.value_in_unit(unit.kilojoule_per_mole)
    k = np.asarray(kinetic_energy, dtype=np.float64)
    temperature = temperature_from_kinetic_energy(k, degrees_of_freedom(system), OPENMM_UNITS)
    return float(temperature) if temperature.ndim == 0 else temperature


def force_groups(system: openmm.System) -> set[int]:
    """The force groups that hold forces: each force's group, and the reciprocal-space group of
    an Ewald/PME :class:`openmm.NonbondedForce` that has one
    (``setReciprocalSpaceForceGroup``, the usual multiple-time-step split)."""
    groups: set[int] = set()
    for f in system.getForces():
        if isinstance(f, NO_FORCE):
            continue
        groups.add(f.getForceGroup())
        if (
            isinstance(f, openmm.NonbondedForce)
            and f.getNonbondedMethod() in _EWALD
            and f.getReciprocalSpaceForceGroup() >= 0
        ):
            groups.add(f.getReciprocalSpaceForceGroup())
    return groups


def check_force_groups(
    system: openmm.System, word: Any, kick_groups: Sequence[int], thermostated: bool
) -> None:
    """Refuse a system that ``word`` would integrate wrongly: force groups that no kick letter
    covers (their forces would be ignored), kicks of empty groups, and an
    :class:`openmm.AndersenThermostat` next to a word that has its own thermostat (O)."""
    if thermostated and any(isinstance(f, openmm.AndersenThermostat) for f in system.getForces()):
        raise OpenMMError(
            f"the system has an AndersenThermostat and word {word} has its own (the O letter); "
            "remove the AndersenThermostat force"
        )
    if not kick_groups:
        return
    groups = force_groups(system)
    missing = sorted(groups - set(kick_groups))
    if missing:
        raise OpenMMError(
            f"force group(s) {missing} hold forces but word {word} has no kick "
            f"{', '.join(f'B{g}' for g in missing)}: those forces would be ignored"
        )
    empty = sorted(set(kick_groups) - groups)
    if empty:
        raise OpenMMError(
            f"word {word} kicks force group(s) {empty}, which hold no forces; check "
            "force.setForceGroup(...) and NonbondedForce.setReciprocalSpaceForceGroup(...)"
        )
