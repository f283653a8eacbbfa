r"""The symbolic update of one sub-flow over one time slice.

An :class:`Update` is what a solver produces and what both the torch lowering and the exact
analysis consume (architecture rule 1). It maps the blocks at the start of a slice
:math:`[t, t+h]` to their values at its end:

.. math:: z_b \leftarrow \Phi_b(z, t, h, \xi, F(\cdot), \dots)

Expressions may contain

* blocks (their values at the start of the slice, or after earlier ``lets``),
* applied fields (evaluated where the statement stands),
* :class:`~splitsde.symbolic.symbols.NoiseSymbol` standard normals, described by
  :class:`NoiseSpec` (which block's shape, which part of the slice),
* :class:`~splitsde.symbolic.symbols.Temporary` values defined by ``lets``,
* :class:`~splitsde.symbolic.symbols.Coefficient` symbols with a float64 definition
  (:class:`CoefficientDef`), for quantities without a closed form (matrix exponentials,
  quadratures),
* ``t``, ``h`` and parameters.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np
import sympy

from splitsde.symbolic.field import field_applications
from splitsde.symbolic.symbols import Block, Coefficient, NoiseSymbol, Temporary

__all__ = ["CoefficientDef", "CoefficientSymbols", "NoiseSpec", "NumericCoefficients", "Update"]


@dataclass(frozen=True)
class NoiseSpec:
    """A standard normal tensor shaped like ``like``, standing for the Brownian increment over
    the fraction ``[start, stop]`` of the slice (noise sources driven by a Brownian path use
    it).

    ``kind="uniform"`` declares instead one uniform number on ``[0, 1)`` per walker (a tensor of
    shape ``(batch, 1, ..., 1)`` that broadcasts against ``like``): the random selections of
    randomized solvers, drawn through the same noise source in program order.
    """

    like: Block
    start: Fraction = Fraction(0)
    stop: Fraction = Fraction(1)
    kind: str = "normal"

    def __post_init__(self) -> None:
        if self.kind not in ("normal", "uniform"):
            raise ValueError(f"noise kind must be 'normal' or 'uniform', got {self.kind!r}")


class NumericCoefficients:
    """A group of coefficients computed together in float64 by one numerical procedure.

    ``evaluate(t0, s, params)`` receives float64 arrays of slice starts and lengths (same shape)
    and a mapping ``Parameter -> float`` and returns ``{key: array}`` for every key.

    A group with ``history = r > 0`` (the coefficients of a multistep solver, which depend on
    the grid) is called as ``evaluate(t0, s, params, past)``: ``past`` has shape
    ``(len(t0), r)`` and holds the starts of the same slice 1, ..., r steps earlier, ``NaN``
    where the run has not reached that far back (the warm start). Such a group is never
    autonomous.
    """

    def __init__(
        self,
        keys: tuple[Any, ...],
        evaluate: Callable[..., dict[Any, np.ndarray]],
        method: str,
        autonomous: bool,
        history: int = 0,
    ) -> None:
        if int(history) != history or history < 0:
            raise ValueError(f"history must be a non-negative integer, got {history}")
        self.keys = keys
        self._evaluate = evaluate
        self.method = method
        self.history = int(history)
        self.autonomous = autonomous and self.history == 0

    def evaluate(
        self,
        t0: np.ndarray,
        s: np.ndarray,
        params: Mapping[Any, Any],
        past: np.ndarray | None = None,
    ) -> dict:
        t0, s = np.asarray(t0, np.float64), np.asarray(s, np.float64)
        if not self.history:
            return self._evaluate(t0, s, params)
        if past is None:  # a lone slice: no history
            past = np.full((*t0.shape, self.history), np.nan)
        return self._evaluate(t0, s, params, np.asarray(past, np.float64))

    def __repr__(self) -> str:
        return f"NumericCoefficients({self.method}, {len(self.keys)} entries)"


@dataclass(frozen=True)
class CoefficientDef:
    """Definition of a :class:`Coefficient` symbol.

    Exactly one of ``expr`` (a sympy expression in ``t``, ``h`` and parameters, lowered with
    numpy in float64) and ``numeric`` (a :class:`NumericCoefficients` group and the key of this
    entry) is given. ``display`` is what the solver prints (an unevaluated integral, say).
    """

    expr: sympy.Expr | None = None
    numeric: NumericCoefficients | None = None
    key: Any = None
    display: sympy.Expr | None = None
    method: str = "closed form"

    def __post_init__(self) -> None:
        if (self.expr is None) == (self.numeric is None):
            raise ValueError("a coefficient needs exactly one of expr and numeric")


class CoefficientSymbols:
    """Coefficient symbols standing for entries of one :class:`NumericCoefficients` group.

    ``symbols(key)`` returns the symbol named ``name(key)`` (or the ``name`` given) and records
    its :class:`CoefficientDef` in :attr:`defs`, the mapping an :class:`Update` holds as its
    ``coefficients``; ``defs`` may be shared with other coefficients of the same update.
    """

    def __init__(
        self,
        group: NumericCoefficients,
        name: Callable[[Any], str] | None = None,
        defs: dict[Coefficient, CoefficientDef] | None = None,
    ) -> None:
        self.group = group
        self.name = name
        self.defs: dict[Coefficient, CoefficientDef] = {} if defs is None else defs

    def __call__(self, key: Any, name: str | None = None) -> Coefficient:
        if name is None:
            if self.name is None:
                raise ValueError("give the coefficient a name (this table has no naming rule)")
            name = self.name(key)
        sym = Coefficient(name)
        self.defs[sym] = CoefficientDef(numeric=self.group, key=key, method=self.group.method)
        return sym


@dataclass(frozen=True)
class Update:
    """Simultaneous assignment ``targets <- exprs`` after the temporaries ``lets``."""

    targets: tuple[Block, ...]
    exprs: tuple[sympy.Expr, ...]
    noises: tuple[tuple[NoiseSymbol, NoiseSpec], ...] = ()
    lets: tuple[tuple[Temporary, sympy.Expr], ...] = ()
    coefficients: Mapping[Coefficient, CoefficientDef] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.targets) != len(self.exprs):
            raise ValueError("an update needs one expression per target")
        declared = {s for s, _ in self.noises}
        used = set()
        for e in self.all_expressions():
            used |= {s for s in e.free_symbols if isinstance(s, NoiseSymbol)}
        if used - declared:
            raise ValueError(
                f"update uses undeclared noise symbols {sorted(map(str, used - declared))}"
            )
        coefs = set()
        for e in self.all_expressions():
            coefs |= {s for s in e.free_symbols if isinstance(s, Coefficient)}
        if coefs - set(self.coefficients):
            missing = sorted(map(str, coefs - set(self.coefficients)))
            raise ValueError(f"update uses undefined coefficients {missing}")

    def all_expressions(self) -> tuple[sympy.Expr, ...]:
        return (*(e for _, e in self.lets), *self.exprs)

    @property
    def field_applications(self) -> set[sympy.Expr]:
        apps: set[sympy.Expr] = set()
        for e in self.all_expressions():
            apps |= field_applications(e)
        return apps

    def closed_form(self, expr: sympy.Expr) -> sympy.Expr:
        """``expr`` with every closed-form coefficient substituted (numeric ones stay symbols)."""
        subs = {
            c: d.expr
            for c, d in self.coefficients.items()
            if d.expr is not None and d.method == "closed form"
        }
        return expr.xreplace(subs) if subs else expr

    def display(self, expr: sympy.Expr) -> sympy.Expr:
        """``expr`` with coefficients replaced by their display forms where they have one."""
        subs = {}
        for c, d in self.coefficients.items():
            if d.display is not None:
                subs[c] = d.display
            elif d.expr is not None and d.method == "closed form":
                subs[c] = d.expr
        return expr.xreplace(subs) if subs else expr
