"""Rows of the method table measured on compiled integrators.

The symbolic layer declares solver strategies and their orders; what a row also shows -- the
field evaluations of one slice -- is read from the compiled single-letter program (or measured
over one step when the count is adaptive). Compiling and running belong to the run-time layer,
so the describers live here and register on import (see :mod:`splitsde.base.methods`).
"""

from __future__ import annotations

import sympy
import torch

from splitsde.base.methods import MethodInfo, register_method
from splitsde.runtime.integrate import integrate
from splitsde.runtime.integrator import Integrator
from splitsde.runtime.noise import ZeroNoise
from splitsde.symbolic.field import Field
from splitsde.symbolic.flow import Flow
from splitsde.symbolic.sde import SDE
from splitsde.symbolic.solve import (
    Auto,
    EulerMaruyama,
    Exact,
    ExponentialEuler,
    SolverStrategy,
)
from splitsde.symbolic.symbols import Block, Parameter

__all__ = ["solver_method_row"]


def solver_method_row(
    name: str,
    strategy: SolverStrategy,
    flow: Flow,
    *,
    invariant: str,
    reference: str,
    kind: str = "solver strategy",
) -> MethodInfo:
    """A :class:`~splitsde.base.methods.MethodInfo` row for ``strategy`` applied to ``flow``: the
    derived solver's declared weak order, and the field evaluations of one slice read from the
    compiled single-letter program (measured over one step when the count is adaptive)."""
    blocks_ = list(dict.fromkeys([*flow.changed, *flow.reads]))
    sde = SDE(blocks_, {"X": flow.with_solver(strategy)})
    integ = Integrator(sde, "X", params={p.name: 1.0 for p in sde.parameters})
    solver = integ.program.substeps[0].solver
    n = integ.program.evaluations_per_step(first=True)
    if n is None:
        y0 = {b.name: torch.full((1, 1), 0.5, dtype=torch.float64) for b in blocks_}
        res = integrate(integ, y0, h=0.1, steps=1, noise=ZeroNoise())
        evaluations = f"adaptive ({res.nfe} on q'' = -q, h = 0.1)"
    else:
        evaluations = str(n)
    return MethodInfo(
        name=name,
        kind=kind,
        weak_order="exact" if solver.exact else str(solver.weak_order),
        invariant=invariant,
        evaluations=evaluations,
        exact_subflows="the flow" if solver.exact else "none",
        reference=reference,
    )


def _solver_methods() -> list[MethodInfo]:
    q, p = Block("q"), Block("p")
    g, kT = Parameter("gamma", positive=True), Parameter("kT", positive=True)
    F = Field("F", [q], definition=-q)
    G = Field("G", [q], definition=-(q**3))
    kick, ou = Flow({p: F()}), Flow({p: -g * p}, {p: sympy.sqrt(2 * g * kT)})
    overdamped = Flow({q: F()}, {q: sympy.sqrt(2 * kT)})
    ll = "Leimkuhler & Matthews, Molecular Dynamics (Springer 2015), ch. 7"
    return [
        solver_method_row(
            "Auto: shear", Auto(), kick, invariant="exact law of the sub-flow", reference=ll
        ),
        solver_method_row(
            "Auto: linear / Ornstein-Uhlenbeck",
            Auto(),
            ou,
            invariant="exact law of the sub-flow",
            reference="Van Loan, IEEE TAC 23 (1978) 395",
        ),
        solver_method_row(
            "Exact",
            Exact(),
            ou,
            invariant="exact law of the sub-flow (refuses flows without an exact solver)",
            reference=ll,
        ),
        solver_method_row(
            "ExponentialEuler",
            ExponentialEuler(),
            Flow({q: -g * q + G()}),
            invariant="exact for linear flows; O(h) bias otherwise",
            reference="Hochbruck & Ostermann, Acta Numerica 19 (2010) 209",
        ),
        solver_method_row(
            "EulerMaruyama",
            EulerMaruyama(),
            overdamped,
            invariant="O(h) bias of the invariant measure (Talay & Tubaro, "
            "Stoch. Anal. Appl. 8 (1990) 483)",
            reference="Kloeden & Platen, Numerical Solution of SDEs (Springer 1992), ch. 9, 14",
        ),
        MethodInfo(
            name="Custom",
            kind="solver strategy",
            weak_order="declared by the user",
            invariant="declared by the user",
            evaluations="as written",
            exact_subflows="if declared exact",
            reference="--",
        ),
    ]


register_method("solver strategies", _solver_methods)
