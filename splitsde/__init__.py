"""splitsde: numerical SDE integrators built from splitting.

Declare an SDE as a sum of sub-flows, get a derived solver for each, compose any splitting word,
run it with :func:`integrate`, and verify it exactly where the theory allows.
"""

from splitsde import diffusion, langevin
from splitsde._version import __version__
from splitsde.base.errors import SplitsdeError
from splitsde.compose.presets import PRESETS, Preset, preset, word
from splitsde.compose.program import Program
from splitsde.compose.reduce import ReducedWord, Reduction, reduce
from splitsde.compose.word import Word, WordError
from splitsde.langevin import potentials
from splitsde.runtime import method_rows as _method_rows  # noqa: F401  (method-table rows register)
from splitsde.runtime.checkpoint import CheckpointError
from splitsde.runtime.integrate import Acceptance, Result, integrate, make_grid
from splitsde.runtime.integrator import FieldError, Integrator, NonFiniteError, StateError
from splitsde.runtime.noise import FixedNoise, GaussianNoise, NoiseSource, ZeroNoise
from splitsde.runtime.observers import Observer, Running, observe
from splitsde.runtime.system import System
from splitsde.runtime.trajectory import Trajectory
from splitsde.runtime.work import WorkAndHeat, energy_function
from splitsde.symbolic import solvers
from splitsde.symbolic.energy import Energy
from splitsde.symbolic.field import Field
from splitsde.symbolic.flow import Flow, linear_drift
from splitsde.symbolic.parse import ExpressionError, parse_expression
from splitsde.symbolic.sde import SDE
from splitsde.symbolic.solve import Solver, noise_symbol
from splitsde.symbolic.symbols import Block, Parameter, blocks, h, parameters, t

__all__ = [
    "PRESETS",
    "SDE",
    "Acceptance",
    "Block",
    "CheckpointError",
    "Energy",
    "ExpressionError",
    "Field",
    "FieldError",
    "FixedNoise",
    "Flow",
    "GaussianNoise",
    "Integrator",
    "NoiseSource",
    "NonFiniteError",
    "Observer",
    "Parameter",
    "Preset",
    "Program",
    "ReducedWord",
    "Reduction",
    "Result",
    "Running",
    "Solver",
    "SplitsdeError",
    "StateError",
    "System",
    "Trajectory",
    "Word",
    "WordError",
    "WorkAndHeat",
    "ZeroNoise",
    "__version__",
    "blocks",
    "diffusion",
    "energy_function",
    "h",
    "integrate",
    "langevin",
    "linear_drift",
    "make_grid",
    "noise_symbol",
    "observe",
    "parameters",
    "parse_expression",
    "potentials",
    "preset",
    "reduce",
    "solvers",
    "t",
    "word",
]


_SUBPACKAGES = ("analysis", "problems", "diffusion", "backends", "interop")


def __getattr__(name: str):
    """Sub-packages with heavier imports load on first use: ``sd.analysis``, ``sd.problems``."""
    if name in _SUBPACKAGES:
        import importlib

        return importlib.import_module(f"splitsde.{name}")
    raise AttributeError(f"module 'splitsde' has no attribute {name!r}")
