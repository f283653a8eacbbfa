r"""One sub-flow of an SDE: a drift and a (diagonal, Itô) noise on some blocks.

A flow changes the blocks that have a nonzero drift or noise and leaves the others fixed:

.. math:: dz_b = f_b(z, t)\,dt + g_b(z, t)\,dW_b, \qquad b \in \text{changed blocks},

with one independent Wiener process :math:`W_b` per changed block, acting elementwise on the
block's tensor. The SDE is the sum of its flows (drifts add, noise variances add).
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cached_property
from typing import TYPE_CHECKING, Any

import sympy

from splitsde.symbolic.check import check_expression
from splitsde.symbolic.field import Field, field_applications, field_of
from splitsde.symbolic.parse import refuse_text
from splitsde.symbolic.symbols import Block, Parameter

if TYPE_CHECKING:
    from splitsde.symbolic.solve import Solver, SolverStrategy

__all__ = ["Flow", "check_expression", "linear_drift"]


class Flow:
    """A sub-flow: drift and noise per block, optionally with a user-chosen solver.

    Parameters
    ----------
    drift:
        Mapping ``block -> expression``.
    noise:
        Mapping ``block -> expression``: the coefficient :math:`g_b` of an independent Wiener
        process acting elementwise on block ``b``.
    solver:
        A solver strategy (see :mod:`splitsde.symbolic.solve`) that overrides the derived one.
    """

    def __init__(
        self,
        drift: Mapping[Block, Any] | None = None,
        noise: Mapping[Block, Any] | None = None,
        *,
        solver: SolverStrategy | None = None,
        description: str = "",
    ) -> None:
        self.drift: dict[Block, sympy.Expr] = {}
        self.noise: dict[Block, sympy.Expr] = {}
        for kind, mapping, target in (("drift", drift, self.drift), ("noise", noise, self.noise)):
            for b, e in (mapping or {}).items():
                if not isinstance(b, Block):
                    raise TypeError(f"{kind} key {b!r} is not a Block")
                ex = check_expression(e, f"{kind} of block {b}")
                if ex != 0:
                    target[b] = ex
        if not self.drift and not self.noise:
            raise ValueError("a flow needs a nonzero drift or noise on at least one block")
        self.strategy = solver
        self.description = description

    # -- structure ------------------------------------------------------------------------------
    @property
    def changed(self) -> tuple[Block, ...]:
        """Blocks this flow changes (nonzero drift or noise), in declaration order."""
        out: list[Block] = []
        for b in (*self.drift, *self.noise):
            if b not in out:
                out.append(b)
        return tuple(out)

    @property
    def is_stochastic(self) -> bool:
        return bool(self.noise)

    @property
    def expressions(self) -> tuple[sympy.Expr, ...]:
        return (*self.drift.values(), *self.noise.values())

    @property
    def fields(self) -> tuple[Field, ...]:
        found: list[Field] = []
        for e in self.expressions:
            for app in sorted(field_applications(e), key=str):
                f = field_of(app)[0]
                if f not in found:
                    found.append(f)
        return tuple(found)

    @property
    def parameters(self) -> tuple[Parameter, ...]:
        ps: set[Parameter] = set()
        for e in self.expressions:
            ps |= {s for s in e.free_symbols if isinstance(s, Parameter)}
        for f in self.fields:
            for expr in (f.definition or {}).values():
                ps |= {s for s in expr.free_symbols if isinstance(s, Parameter)}
        return tuple(sorted(ps, key=str))

    @property
    def reads(self) -> tuple[Block, ...]:
        """Blocks the flow's drift and noise read (directly or through fields)."""
        bs: set[Block] = set()
        for e in self.expressions:
            bs |= {s for s in e.free_symbols if isinstance(s, Block)}
        return tuple(sorted(bs, key=str))

    # -- solver ---------------------------------------------------------------------------------
    @cached_property
    def solver(self) -> Solver:
        """The solver of this flow: the user's choice, else the derived one."""
        from splitsde.symbolic.solve import Auto

        return (self.strategy or Auto()).derive(self)

    def with_solver(self, solver: SolverStrategy) -> Flow:
        """The same flow with another solver strategy."""
        return Flow(self.drift, self.noise, solver=solver, description=self.description)

    # -- display --------------------------------------------------------------------------------
    def equations(self) -> list[sympy.Eq]:
        eqs = []
        dt = sympy.Symbol("dt")
        for b in self.changed:
            rhs = self.drift.get(b, sympy.Integer(0)) * dt
            if b in self.noise:
                rhs += self.noise[b] * sympy.Symbol(f"dW_{b.name}")
            eqs.append(sympy.Eq(sympy.Symbol(f"d{b.name}"), rhs))
        return eqs

    def __repr__(self) -> str:
        return "Flow(" + "; ".join(str(e.lhs) + " = " + str(e.rhs) for e in self.equations()) + ")"

    def _repr_latex_(self) -> str:
        return "$" + r"\\ ".join(sympy.latex(e) for e in self.equations()) + "$"


def linear_drift(matrix: Any, blocks_: list[Block] | tuple[Block, ...]) -> dict[Block, sympy.Expr]:
    r"""Drift dictionary of a linear coupling :math:`f = C z` between whole blocks.

    ``matrix`` is a small (block) matrix, e.g. the 2x2 PSLD drift coupling ``x`` and ``m``;
    each entry multiplies a whole block elementwise.
    """
    refuse_text(matrix, "linear_drift")
    C = sympy.Matrix(matrix)
    if C.shape != (len(blocks_), len(blocks_)):
        raise ValueError(
            f"linear_drift: matrix shape {C.shape} does not match {len(blocks_)} blocks"
        )
    z = sympy.Matrix(blocks_)
    fz = C * z
    return {b: fz[i] for i, b in enumerate(blocks_) if fz[i] != 0}
