r"""The energy of a Hamiltonian SDE: what Metropolis tests, shadow work and heat measure.

An :class:`Energy` is attached to an :class:`~splitsde.symbolic.sde.SDE` whose deterministic
flows (the letters without noise) conserve it exactly. For underdamped Langevin dynamics

.. math:: H(q, p) = U(q) + \sum_i \frac{p_i^2}{2 M_i},

with :math:`U` an opaque per-walker field and the kinetic energy an elementwise density summed
over the elements of each walker. One walker's energy is

.. math:: H(z) = \sum_k a_k\, W_k(z) + \sum_{\text{elements}} e(z),

where each :math:`W_k` is a field returning one value per walker (declared with
``like=[None]``) and :math:`a_k` a state-free coefficient. The energy also names the thermal
energy :math:`k_BT` (Metropolis accepts with :math:`\min(1, e^{-W/k_BT})`) and the momentum
blocks (odd under time reversal: flipped when a Metropolis proposal is rejected).

References: Horowitz, Phys. Lett. B 268 (1991) 247 (GHMC); Sivak, Chodera & Crooks,
Phys. Rev. X 3 (2013) 011007 (shadow work and heat of splitting integrators).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sympy

from splitsde.symbolic.field import Field, field_applications, field_of
from splitsde.symbolic.symbols import Block, Parameter, t

__all__ = ["ElementSum", "Energy", "EnergyTerm"]


class ElementSum(sympy.Function):
    r"""Per-walker sum of an elementwise tensor expression over all non-batch axes,
    :math:`\sum_{\text{elements}} e` (used inside step programs for kinetic energies)."""

    nargs = 1
    is_real = True

    def _latex(self, printer: Any) -> str:
        return r"\textstyle\sum\left(" + printer._print(self.args[0]) + r"\right)"


@dataclass(frozen=True)
class EnergyTerm:
    """One additive term of an energy: per-walker (fields) or elementwise (summed)."""

    expr: sympy.Expr
    elementwise: bool

    @property
    def blocks(self) -> frozenset[Block]:
        """Blocks the term reads (directly or through fields)."""
        bs = {s for s in self.expr.free_symbols if isinstance(s, Block)}
        for app in field_applications(self.expr):
            bs |= set(field_of(app)[0].depends)
        return frozenset(bs)

    @property
    def fields(self) -> tuple[Field, ...]:
        out: list[Field] = []
        for app in sorted(field_applications(self.expr), key=str):
            f = field_of(app)[0]
            if f not in out:
                out.append(f)
        return tuple(out)


class Energy:
    """Energy per walker: per-walker field terms plus an elementwise density.

    Parameters
    ----------
    per_walker:
        A linear combination of applied fields whose outputs hold one value per walker
        (``U()``), with state-free coefficients.
    elementwise:
        An expression in blocks and parameters, evaluated elementwise and summed over each
        walker's elements (``p**2 / (2*M)``).
    kT:
        The thermal energy (a positive expression in parameters).
    momenta:
        Blocks that change sign under time reversal (flipped on a Metropolis rejection).
    """

    def __init__(
        self,
        per_walker: Any = 0,
        elementwise: Any = 0,
        *,
        kT: Any,
        momenta: Sequence[Block] = (),
    ) -> None:
        from splitsde.symbolic.flow import check_expression

        pw = check_expression(per_walker, "per-walker energy")
        el = check_expression(elementwise, "elementwise energy")
        kt = check_expression(kT, "kT of the energy")
        if any(isinstance(s, Block) or s == t for s in kt.free_symbols) or field_applications(kt):
            raise ValueError(f"kT = {kt} must depend on parameters only")
        if t in pw.free_symbols or t in el.free_symbols:
            raise ValueError("a time-dependent energy is not supported (Metropolis needs H(z))")
        terms: list[EnergyTerm] = []
        for term in sympy.Add.make_args(sympy.expand(pw)):
            if term == 0:
                continue
            apps = field_applications(term)
            bare = term.xreplace({a: sympy.Dummy() for a in apps}).free_symbols
            if len(apps) != 1 or any(isinstance(s, Block) for s in bare):
                raise ValueError(
                    f"per-walker energy term {term} must be a coefficient times one field "
                    "applied to its dependencies (a bare block is not a per-walker quantity)"
                )
            (app,) = apps
            f, out = field_of(app)
            if f.like[out] is not None:
                raise ValueError(
                    f"field {f.name} is used as a per-walker energy but its output is shaped like "
                    f"block {f.like[out]}; declare it with like=[None]"
                )
            if f.time:
                raise ValueError(f"energy field {f.name} depends on time; not supported")
            coef = sympy.simplify(term / app)
            if coef.has(app) or field_applications(coef):
                raise ValueError(f"per-walker energy term {term} is not linear in {app}")
            terms.append(EnergyTerm(term, False))
        if el != 0:
            for app in field_applications(el):
                f, out = field_of(app)
                if f.like[out] is None:
                    raise ValueError(
                        f"field {f.name} returns one value per walker; put it in per_walker="
                    )
            terms.append(EnergyTerm(el, True))
        if not terms:
            raise ValueError("an energy needs at least one nonzero term")
        for b in momenta:
            if not isinstance(b, Block):
                raise TypeError(f"momentum {b!r} is not a Block")
        self.terms: tuple[EnergyTerm, ...] = tuple(terms)
        self.per_walker = pw
        self.elementwise = el
        self.kT = kt
        self.momenta: tuple[Block, ...] = tuple(momenta)

    @property
    def fields(self) -> tuple[Field, ...]:
        out: list[Field] = []
        for term in self.terms:
            for f in term.fields:
                if f not in out:
                    out.append(f)
        return tuple(out)

    @property
    def blocks(self) -> frozenset[Block]:
        out: set[Block] = set(self.momenta)
        for term in self.terms:
            out |= term.blocks
        return frozenset(out)

    @property
    def parameters(self) -> tuple[Parameter, ...]:
        ps: set[Parameter] = set()
        for e in (self.per_walker, self.elementwise, self.kT):
            ps |= {s for s in e.free_symbols if isinstance(s, Parameter)}
        return tuple(sorted(ps, key=str))

    def expression(self) -> sympy.Expr:
        """The energy as one expression (the elementwise part wrapped in :class:`ElementSum`)."""
        return self.per_walker + (ElementSum(self.elementwise) if self.elementwise != 0 else 0)

    def __repr__(self) -> str:
        return f"Energy({self.expression()}; kT={self.kT}; momenta={list(map(str, self.momenta))})"
