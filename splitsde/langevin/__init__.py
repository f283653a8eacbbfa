"""Langevin dynamics for molecular dynamics and sampling."""

from splitsde.langevin import potentials
from splitsde.langevin.dynamics import LangevinSystem, overdamped, overdamped_lm, underdamped
from splitsde.langevin.observables import (
    ConfigurationalTemperature,
    kinetic_temperature,
    potential_energy,
)

__all__ = [
    "ConfigurationalTemperature",
    "LangevinSystem",
    "kinetic_temperature",
    "overdamped",
    "overdamped_lm",
    "potential_energy",
    "potentials",
    "underdamped",
]
