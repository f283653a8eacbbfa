r"""An SDE as a sum of named sub-flows over named blocks.

.. math:: dz = \sum_{\ell} f^{(\ell)}(z, t)\,dt + \sum_\ell g^{(\ell)}(z, t)\,dW^{(\ell)}

Each letter :math:`\ell` names a :class:`~splitsde.symbolic.flow.Flow`; noises of different
flows are independent, so the total noise variance of a block is the sum of the flows'
variances. An optional full ``drift``/``noise`` lets the constructor check that the split adds
up to the SDE the user meant.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import sympy

from splitsde.symbolic.energy import Energy
from splitsde.symbolic.field import Field
from splitsde.symbolic.flow import Flow, check_expression
from splitsde.symbolic.solve import Solver, SolverStrategy
from splitsde.symbolic.symbols import LETTER, Block, Parameter

__all__ = ["SDE"]


class SDE:
    """Named blocks and the sub-flows (letters) whose sum is the SDE.

    Parameters
    ----------
    blocks:
        The state blocks, in the order states are reported.
    flows:
        Mapping ``letter -> Flow``; letters follow the word grammar (``A``, ``B``, ``O``,
        ``B0``, ``B1``, ...).
    drift, noise:
        Optional full drift and noise per block; when given, the flows must add up to them
        (drifts sum, noise variances sum).
    energy:
        Optional :class:`~splitsde.symbolic.energy.Energy` conserved by the deterministic
        flows (needed by Metropolized ``{ }`` groups and by shadow-work/heat observers).
    name:
        A label used in reports.
    """

    def __init__(
        self,
        blocks: Iterable[Block],
        flows: Mapping[str, Flow],
        *,
        drift: Mapping[Block, Any] | None = None,
        noise: Mapping[Block, Any] | None = None,
        energy: Energy | None = None,
        name: str = "",
    ) -> None:
        self.blocks: tuple[Block, ...] = tuple(blocks)
        #: The blocks' names, in order (the keys of a state mapping).
        self.block_names: tuple[str, ...] = tuple(b.name for b in self.blocks)
        if not self.blocks:
            raise ValueError("an SDE needs at least one block")
        for b in self.blocks:
            if not isinstance(b, Block):
                raise TypeError(f"{b!r} is not a Block; create blocks with splitsde.blocks(...)")
        if len(set(self.blocks)) != len(self.blocks):
            raise ValueError("duplicate block names")
        if not flows:
            raise ValueError("an SDE needs at least one flow")
        self.flows: dict[str, Flow] = {}
        for letter, flow in flows.items():
            if not isinstance(letter, str) or not LETTER.match(letter):
                raise ValueError(
                    f"flow name {letter!r} is not a letter of the word grammar: an upper-case "
                    "letter followed by optional digits (A, B, O, B0, B1, ...)"
                )
            if not isinstance(flow, Flow):
                raise TypeError(f"flow {letter} is not a Flow")
            unknown = set(flow.changed) | set(flow.reads)
            for f in flow.fields:
                unknown |= set(f.depends)
            unknown -= set(self.blocks)
            if unknown:
                raise ValueError(
                    f"flow {letter} uses block(s) {sorted(map(str, unknown))} "
                    "not declared in the SDE"
                )
            self.flows[letter] = flow
        self.name = name
        self.fields: dict[str, Field] = {}
        for flow in self.flows.values():
            for f in flow.fields:
                other = self.fields.get(f.name)
                if other is not None and other is not f:
                    raise ValueError(f"two different fields are named {f.name!r}")
                self.fields[f.name] = f
        if energy is not None:
            if not isinstance(energy, Energy):
                raise TypeError("energy must be a splitsde Energy")
            stray = energy.blocks - set(self.blocks)
            if stray:
                names = sorted(map(str, stray))
                raise ValueError(f"the energy uses block(s) {names} not in the SDE")
            for f in energy.fields:
                other = self.fields.get(f.name)
                if other is not None and other is not f:
                    raise ValueError(f"two different fields are named {f.name!r}")
                self.fields[f.name] = f
        self.energy = energy
        if drift is not None or noise is not None:
            self._check_total(drift or {}, noise or {})

    # -- structure ------------------------------------------------------------------------------
    @property
    def letters(self) -> tuple[str, ...]:
        return tuple(self.flows)

    @property
    def parameters(self) -> tuple[Parameter, ...]:
        ps: set[Parameter] = set()
        for flow in self.flows.values():
            ps |= set(flow.parameters)
        if self.energy is not None:
            ps |= set(self.energy.parameters)
        return tuple(sorted(ps, key=str))

    @property
    def drift(self) -> dict[Block, sympy.Expr]:
        """Total drift per block (sum over flows)."""
        out = {b: sympy.Integer(0) for b in self.blocks}
        for flow in self.flows.values():
            for b, e in flow.drift.items():
                out[b] += e
        return out

    @property
    def noise_variance(self) -> dict[Block, sympy.Expr]:
        """Total noise variance rate per block, :math:`\\sum_\\ell (g_b^{(\\ell)})^2`."""
        out = {b: sympy.Integer(0) for b in self.blocks}
        for flow in self.flows.values():
            for b, g in flow.noise.items():
                out[b] += g**2
        return out

    def _check_total(self, drift: Mapping[Block, Any], noise: Mapping[Block, Any]) -> None:
        tot_d, tot_v = self.drift, self.noise_variance
        for b in self.blocks:
            want = check_expression(drift.get(b, 0), f"drift of {b}")
            if sympy.simplify(tot_d[b] - want) != 0:
                raise ValueError(
                    f"the flows' drifts of block {b} add up to {tot_d[b]}, not the declared {want}"
                )
            g = check_expression(noise.get(b, 0), f"noise of {b}")
            if sympy.simplify(tot_v[b] - g**2) != 0:
                raise ValueError(
                    f"the flows' noise variances of block {b} add up to {tot_v[b]}, "
                    f"not the declared {g**2}"
                )

    # -- solvers --------------------------------------------------------------------------------
    @property
    def solvers(self) -> dict[str, Solver]:
        """The solver of every flow (user's choice or derived)."""
        return {letter: flow.solver for letter, flow in self.flows.items()}

    def with_solvers(self, solvers: Mapping[str, SolverStrategy]) -> SDE:
        """The same SDE with some flows' solvers replaced."""
        unknown = set(solvers) - set(self.flows)
        if unknown:
            raise ValueError(f"no flow(s) {sorted(unknown)}; flows: {', '.join(self.flows)}")
        flows = {
            k: (f.with_solver(solvers[k]) if k in solvers else f) for k, f in self.flows.items()
        }
        return SDE(self.blocks, flows, energy=self.energy, name=self.name)

    def describe(self) -> str:
        lines = [f"SDE {self.name or ''} on blocks {', '.join(map(str, self.blocks))}".rstrip()]
        for letter, flow in self.flows.items():
            lines.append(f"  {letter}: {flow!r}")
            lines.extend("     " + line for line in flow.solver.describe().splitlines())
        return "\n".join(lines)

    def __repr__(self) -> str:
        blocks = list(map(str, self.blocks))
        return f"SDE({self.name or ''}; blocks={blocks}; flows={list(self.flows)})"

    def _repr_latex_(self) -> str:
        rows = []
        for letter, flow in self.flows.items():
            for eq in flow.equations():
                rows.append(rf"\text{{{letter}}}:\ & {sympy.latex(eq)}")
        return r"$\begin{aligned}" + r"\\ ".join(rows) + r"\end{aligned}$"
