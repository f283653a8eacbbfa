r"""torchdiffeq as the solver of a deterministic sub-flow.

:class:`ODESolver` is a solver strategy (like :class:`~splitsde.symbolic.solvers.EulerMaruyama`):
give
it to a flow (``Flow(..., solver=ODESolver("rk4"))``) or to an integrator
(``solvers={"A": ODESolver("dopri5", rtol=1e-8)}``). The flow's update over a slice
:math:`[t, t+h]` is the map :math:`z \mapsto z(t+h)` of :math:`\dot z = f(z, y, \tau)`, computed
by :func:`torchdiffeq.odeint` inside the compiled step as a
:class:`~splitsde.symbolic.flowmap.FlowMap`; the fields the drift applies are evaluated through
the integrator's counter, so ``Result.nfe`` includes every stage.

Each method of :data:`ODE_METHODS` is declared with its order as an ODE solver, hence its weak
order as a sub-flow solver (a splitting word caps the composed order, e.g. at 2 for a symmetric
word), its drift evaluations per internal step and a reference.

The adaptive pairs choose their own internal steps: their error is set by ``rtol``/``atol``
rather than by the slice length, so their declared order describes the method, not a
convergence rate in ``h`` (for a tolerance small against the splitting error the word behaves
as if the flow were exact). A fixed-step method with ``options={"step_size": d}`` takes
:math:`\lceil |h|/d \rceil` internal steps per slice.

The slice clock is float64; torchdiffeq passes stage times in the state's dtype.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from splitsde.base.methods import register_method
from splitsde.symbolic.flowmap import FlowMap
from splitsde.symbolic.solve import Solver
from splitsde.symbolic.symbols import t
from splitsde.symbolic.update import Update

__all__ = ["ODE_METHODS", "ODEMethod", "ODESolver"]


@dataclass(frozen=True)
class ODEMethod:
    """A torchdiffeq method as data: its order, its field evaluations per internal step
    (``None`` if adaptive) and a reference."""

    name: str
    order: int
    stages: int | None
    reference: str

    @property
    def adaptive(self) -> bool:
        return self.stages is None


ODE_METHODS: dict[str, ODEMethod] = {
    m.name: m
    for m in [
        ODEMethod("euler", 1, 1, "Euler, Institutiones calculi integralis (1768)"),
        ODEMethod("midpoint", 2, 2, "Runge, Math. Ann. 46 (1895) 167"),
        ODEMethod("rk4", 4, 4, "Kutta, Z. Math. Phys. 46 (1901) 435 (3/8 rule)"),
        ODEMethod("bosh3", 3, None, "Bogacki & Shampine, Appl. Math. Lett. 2 (1989) 321"),
        ODEMethod("dopri5", 5, None, "Dormand & Prince, J. Comput. Appl. Math. 6 (1980) 19"),
    ]
}


@dataclass(frozen=True)
class ODESolver:
    """Solve a deterministic sub-flow with a torchdiffeq method.

    Parameters
    ----------
    method:
        One of :data:`ODE_METHODS` (``"rk4"``, ``"dopri5"``, ...).
    rtol, atol:
        Tolerances of the adaptive methods (ignored by fixed-step ones).
    options:
        Extra options for :func:`torchdiffeq.odeint` (``{"step_size": 0.01}`` for several
        fixed internal steps per slice).
    """

    method: str = "rk4"
    rtol: float = 1e-7
    atol: float = 1e-9
    options: tuple[tuple[str, Any], ...] = field(default=())

    def __init__(
        self,
        method: str = "rk4",
        rtol: float = 1e-7,
        atol: float = 1e-9,
        options: Mapping[str, Any] | None = None,
    ) -> None:
        if method not in ODE_METHODS:
            raise ValueError(f"unknown ODE method {method!r}; supported: {', '.join(ODE_METHODS)}")
        if not (rtol > 0 and atol > 0):
            raise ValueError(f"tolerances must be positive, got rtol={rtol}, atol={atol}")
        opts = dict(options or {})
        for key in ("norm", "grid_constructor"):
            if key in opts:
                raise ValueError(f"option {key!r} is not supported by ODESolver")
        object.__setattr__(self, "method", method)
        object.__setattr__(self, "rtol", float(rtol))
        object.__setattr__(self, "atol", float(atol))
        object.__setattr__(self, "options", tuple(sorted(opts.items())))

    @property
    def spec(self) -> ODEMethod:
        return ODE_METHODS[self.method]

    @property
    def evaluations_per_call(self) -> int | None:
        """Drift evaluations per slice (``None``: adaptive, or set by ``step_size``); each
        evaluates every field application of the drift once."""
        if self.spec.adaptive or dict(self.options).get("step_size") is not None:
            return None
        return self.spec.stages

    def integrate(
        self,
        rhs: Callable[[float, tuple[torch.Tensor, ...]], tuple[torch.Tensor, ...]],
        z0: tuple[torch.Tensor, ...],
        t0: float,
        t1: float,
    ) -> tuple[torch.Tensor, ...]:
        """Integrate ``dz/dtau = rhs(tau, z)`` from ``t0`` to ``t1`` with torchdiffeq."""
        import torchdiffeq

        times = torch.tensor([t0, t1], dtype=torch.float64, device=z0[0].device)
        kwargs: dict[str, Any] = {"method": self.method, "options": dict(self.options)}
        if self.spec.adaptive:
            kwargs.update(rtol=self.rtol, atol=self.atol)
        sol = torchdiffeq.odeint(lambda tau, z: rhs(float(tau), z), z0, times, **kwargs)
        return tuple(x[-1] for x in sol)

    def derive(self, flow: Any) -> Solver:
        if flow.is_stochastic:
            raise ValueError(
                f"ODESolver({self.method!r}) solves deterministic flows; {flow!r} has noise "
                f"on {', '.join(map(str, flow.noise))}"
            )
        spec = self.spec
        tol = f", rtol={self.rtol:g}, atol={self.atol:g}" if spec.adaptive else ""
        fm = FlowMap(
            flow,
            name=self.method,
            solve=self.integrate,
            evaluations_per_call=self.evaluations_per_call,
            description=f"torchdiffeq {self.method}{tol}",
        )
        exprs = tuple(fm.apply(i) for i in range(len(fm.changed)))
        timed = any(t in e.free_symbols for e in fm.drift)
        notes = [f"reference: {spec.reference}"]
        if spec.adaptive:
            notes.append(
                f"adaptive step control (rtol={self.rtol:g}, atol={self.atol:g}): the error is "
                "set by the tolerances, not by the slice length; field evaluations are measured"
            )
        elif self.evaluations_per_call is not None:
            notes.append(f"{spec.stages} evaluation(s) of each field per slice")
        return Solver(
            method=f"torchdiffeq {self.method}",
            exact=False,
            reason="chosen by the user (numerical ODE solve of a deterministic flow)",
            update=Update(fm.changed, exprs),
            weak_order=spec.order,
            strong_order=float(spec.order),
            time="drift evaluated at the method's stage times" if timed else "autonomous",
            notes=tuple(notes),
        )


def _ode_methods() -> list:
    from splitsde.runtime.method_rows import solver_method_row
    from splitsde.symbolic.field import Field
    from splitsde.symbolic.flow import Flow
    from splitsde.symbolic.symbols import Block

    q, p = Block("q"), Block("p")
    F = Field("F", [q], definition=-q)
    oscillator = Flow({q: p, p: F()})
    rows = []
    for m in ODE_METHODS.values():
        tol = " (rtol 1e-7, atol 1e-9)" if m.adaptive else ""
        rows.append(
            solver_method_row(
                f"ODESolver('{m.name}'){tol}",
                ODESolver(m.name),
                oscillator,
                invariant="deterministic flows only; order of the ODE method",
                reference=m.reference,
            )
        )
    return rows


register_method("torchdiffeq solvers", _ode_methods)
