r"""Flow maps: a deterministic sub-flow integrated numerically over its slice.

Some solvers have no closed update: an ODE method (Runge--Kutta, an adaptive
Dormand--Prince pair) applied to a deterministic flow :math:`\dot z = f(z, y, \tau)` produces
the map

.. math:: \Phi(z, y, t, h) \approx z(t + h), \qquad z(t) = z,

only as a procedure. A :class:`FlowMap` is that procedure dressed as a *pseudo-field*: an
applied sympy function of the blocks the flow reads, the slice start ``t`` and the slice
length ``h``, with one output per changed block. A solver's update is then the ordinary
:class:`~splitsde.symbolic.update.Update` ``z <- Phi_z(z, y, t, h)``, so the step program, its
torch lowering, checks and observers stay the single path (architecture rules 1 and 2).

The compiled program evaluates a flow map afresh at every occurrence (it is never reused or
carried across steps). The *real* fields the flow's drift applies are evaluated inside the map
through the integrator's counted callables, so the measured NFE includes them (rule 6).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

import sympy
import torch

from splitsde.symbolic.field import Field, field_applications, field_of
from splitsde.symbolic.symbols import Block, h, t

__all__ = ["FlowMap", "ODEIntegrate"]


class ODEIntegrate(Protocol):
    """``solve(rhs, z0, t0, t1) -> z1``: integrate ``dz/dtau = rhs(tau, z)`` (``z`` a tuple of
    tensors, ``tau`` a Python float) from ``t0`` to ``t1``."""

    def __call__(
        self,
        rhs: Callable[[float, tuple[torch.Tensor, ...]], tuple[torch.Tensor, ...]],
        z0: tuple[torch.Tensor, ...],
        t0: float,
        t1: float,
    ) -> tuple[torch.Tensor, ...]: ...


class FlowMap(Field):
    """The numerically integrated map of a deterministic flow, as a pseudo-field.

    Parameters
    ----------
    flow:
        A deterministic :class:`~splitsde.symbolic.flow.Flow`.
    name:
        Name of the map (its outputs are named after the changed blocks: ``rk4_q``).
    solve:
        The ODE integrator (see :class:`ODEIntegrate`).
    evaluations_per_call:
        Evaluations of the drift per call of the map when the method fixes them (four for one
        classical Runge--Kutta step), ``None`` when adaptive.
    description:
        A label for listings.
    """

    def __init__(
        self,
        flow: Any,
        *,
        name: str,
        solve: ODEIntegrate,
        evaluations_per_call: int | None,
        description: str = "",
    ) -> None:
        if flow.is_stochastic:
            raise ValueError(f"a flow map integrates a deterministic flow; {flow!r} has noise")
        changed = tuple(flow.changed)
        reads = {b for b in flow.reads if b not in changed}
        for f in flow.fields:
            reads |= {b for b in f.depends if b not in changed}
        depends = (*changed, *sorted(reads, key=str))
        super().__init__(
            name,
            depends,
            outputs=[b.name for b in changed],
            like=list(changed),
            description=description,
        )
        self.flow = flow
        self.changed: tuple[Block, ...] = changed
        self.drift: tuple[sympy.Expr, ...] = tuple(
            flow.drift.get(b, sympy.Integer(0)) for b in changed
        )
        self.inner_fields: tuple[Field, ...] = tuple(flow.fields)
        apps = set().union(*(field_applications(e) for e in self.drift))
        # one call per distinct application (the outputs of one call share it)
        self._calls_per_rhs = len({(field_of(a)[0], a.args) for a in apps})
        self.solve = solve
        self.evaluations_per_call = evaluations_per_call

    @property
    def args(self) -> tuple[sympy.Expr, ...]:
        """Symbolic arguments: the blocks read, then the slice start ``t`` and length ``h``."""
        return (*self.depends, t, h)

    @property
    def field_evaluations(self) -> int | None:
        """Real field evaluations of one call of the map, ``None`` if adaptive."""
        if self.evaluations_per_call is None:
            return None
        return self.evaluations_per_call * self._calls_per_rhs

    def bind(
        self, drift: Callable[[Sequence[torch.Tensor], float], list[torch.Tensor]]
    ) -> Callable[..., Any]:
        """The map as a callable ``(*blocks read, t0, h) -> new changed blocks``.

        ``drift(inputs, tau)`` evaluates the flow's drift of the changed blocks from the values
        of :attr:`depends` (see :func:`splitsde.compose.expressions.lower_expressions`).
        """
        n = len(self.changed)
        solve = self.solve

        def call(*args: Any) -> Any:
            values = list(args[:-2])
            t0, s = float(args[-2]), float(args[-1])
            frozen = values[n:]

            def rhs(tau: float, z: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
                return tuple(drift([*z, *frozen], tau))

            z1 = solve(rhs, tuple(values[:n]), t0, t0 + s)
            return z1[0] if n == 1 else tuple(z1)

        return call

    def __repr__(self) -> str:
        return f"FlowMap({self.name}: {', '.join(map(str, self.changed))})"
