"""Interop with the torch libraries users already know.

* :mod:`splitsde.interop.torchsde` -- any SDE as a torchsde SDE (:func:`as_torchsde`), and a
  noise source backed by a torchsde Brownian motion (:class:`BrownianNoise`) so that splitsde
  and torchsde run on the same Brownian path;
* :mod:`splitsde.interop.torchdiffeq` -- a torchdiffeq method as the solver of a deterministic
  sub-flow (:class:`ODESolver`).

Both peers are core dependencies of splitsde (installed with it).
"""

from splitsde.interop.torchdiffeq import ODE_METHODS, ODESolver
from splitsde.interop.torchsde import (
    BrownianNoise,
    PathwiseDraw,
    StateLayout,
    TorchSDEView,
    as_torchsde,
    pathwise_report,
    pathwise_strong_order,
)

__all__ = [
    "ODE_METHODS",
    "BrownianNoise",
    "ODESolver",
    "PathwiseDraw",
    "StateLayout",
    "TorchSDEView",
    "as_torchsde",
    "pathwise_report",
    "pathwise_strong_order",
]
