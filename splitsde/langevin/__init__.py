"""Langevin dynamics for molecular dynamics and sampling."""

from splitsde.langevin import potentials
from splitsde.langevin.dynamics import LangevinSystem, overdamped, overdamped_lm, underdamped
from splitsde.langevin.observables import (
    ConfigurationalTemperature,
    configurational_temperature,
    configurational_terms,
    kinetic_energy,
    kinetic_temperature,
    potential_energy,
    temperature_from_kinetic_energy,
)
from splitsde.langevin.reporter import Reporter, ReporterError, plot_report, read_report
from splitsde.langevin.units import OPENMM_UNITS, REDUCED_UNITS, Units

__all__ = [
    "OPENMM_UNITS",
    "REDUCED_UNITS",
    "ConfigurationalTemperature",
    "LangevinSystem",
    "Reporter",
    "ReporterError",
    "Units",
    "configurational_temperature",
    "configurational_terms",
    "kinetic_energy",
    "kinetic_temperature",
    "overdamped",
    "overdamped_lm",
    "plot_report",
    "potential_energy",
    "potentials",
    "read_report",
    "temperature_from_kinetic_energy",
    "underdamped",
]
