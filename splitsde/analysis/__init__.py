"""Exact and statistical verification of splitting integrators.

* :mod:`~splitsde.analysis.affine` -- exact one-step maps of compiled steps on linear problems
  (by probing), the exact law after n steps, the scheme's exact stationary law.
"""

from splitsde.analysis.affine import (
    AffineMap,
    BlockLayout,
    NotAffineError,
    UnstableError,
    affine_step,
    is_autonomous,
    layout_of,
    propagate,
    stationary,
)

__all__ = [
    "AffineMap",
    "BlockLayout",
    "NotAffineError",
    "UnstableError",
    "affine_step",
    "is_autonomous",
    "layout_of",
    "propagate",
    "stationary",
]
