"""Units of a Langevin run, stated so that reports can label every column.

The torch backend computes in whatever units the potential, masses and ``kT`` are given in;
:class:`Units` only *names* them for reports (:class:`~splitsde.langevin.reporter.Reporter`):
the unit of time, the unit of energy and, when temperatures can be given in kelvin, the
Boltzmann constant in energy units per kelvin. Without it a run is in reduced units and
temperatures are reported as :math:`k_BT` in energy units, comparable with the system's ``kT``.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["OPENMM_UNITS", "REDUCED_UNITS", "Units"]

#: Nanoseconds per unit of time, for the speed in ns/day.
_NANOSECONDS = {"fs": 1e-6, "ps": 1e-3, "ns": 1.0, "us": 1e3, "µs": 1e3}


@dataclass(frozen=True)
class Units:
    """Names of the units of a run (no conversion is done).

    ``time`` and ``energy`` are labels (``"ps"``, ``"kJ/mole"``; ``"reduced units"``);
    ``boltzmann`` is :math:`k_B` in energy units per kelvin, or ``None`` when temperatures are
    reported as :math:`k_BT` in energy units.
    """

    time: str = "reduced units"
    energy: str = "reduced units"
    boltzmann: float | None = None

    def __post_init__(self) -> None:
        if self.boltzmann is not None and not self.boltzmann > 0:
            raise ValueError(f"boltzmann must be positive, got {self.boltzmann}")

    @property
    def temperature(self) -> str:
        """The label of a temperature: ``"K"``, or ``"kT, <energy unit>"``."""
        return "K" if self.boltzmann is not None else f"kT, {self.energy}"

    def temperature_from_kT(self, kT: float) -> float:
        """A temperature given as :math:`k_BT` (energy units) in this label's unit."""
        return kT / self.boltzmann if self.boltzmann is not None else kT

    @property
    def nanoseconds(self) -> float | None:
        """Nanoseconds per unit of time, when the time unit is a known one."""
        return _NANOSECONDS.get(self.time)


#: Reduced units: temperatures as kT.
REDUCED_UNITS = Units()

#: OpenMM's units (nm, ps, amu, kJ/mol), as :func:`splitsde.backends.openmm.openmm_langevin`
#: uses them; :math:`k_B = R` = 8.31446261815324e-3 kJ/(mol K) (exact in the 2019 SI).
OPENMM_UNITS = Units(time="ps", energy="kJ/mole", boltzmann=8.31446261815324e-3)
