r"""Shadow work and heat of any word, measured per sub-step.

For an SDE with an :class:`~splitsde.symbolic.energy.Energy` :math:`H`, every sub-step of a
step changes :math:`H`. Following Sivak, Chodera & Crooks (Phys. Rev. X 3 (2013) 011007) the
change is split by the kind of sub-step:

.. math::
    Q = \sum_{\text{stochastic sub-steps}} \Delta H \quad (\text{heat}), \qquad
    W = \sum_{\text{deterministic sub-steps}} \Delta H \quad (\text{shadow work}),

so :math:`H(z_n) - H(z_0) = W + Q` for every walker (first law). For Langevin dynamics the heat
is the kinetic-energy change of the O sub-steps and the shadow work is the energy error of the
deterministic (A, B) sub-steps; a Metropolis rejection that restores a group's starting state
counts as deterministic (it undoes that group's energy change).

Energy terms that no stochastic sub-step touches (the potential energy :math:`U(q)` of
Langevin dynamics) change only in deterministic sub-steps, so they are evaluated once per step
instead of after every sub-step; the others (the kinetic energy) after every sub-step that
changes them. Observer evaluations of energy fields are counted separately from the
integrator's NFE (``energy_evaluations`` in the result).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import sympy
import torch

from splitsde.compose.codegen import element_sum
from splitsde.compose.program import GroupInfo, SubstepInfo
from splitsde.runtime.observers import Observer
from splitsde.symbolic.energy import EnergyTerm
from splitsde.symbolic.field import field_applications, field_of
from splitsde.symbolic.spellings import lambdify as spell_lambdify

__all__ = ["WorkAndHeat", "energy_function"]


def _term_function(term: EnergyTerm, integrator: Any, counter: list[int]) -> Callable:
    """A torch function ``state -> per-walker float64 value`` of one energy term."""
    params = sorted(integrator.params, key=lambda p: p.name)
    values = [integrator.params[p] for p in params]
    blocks = list(integrator.sde.blocks)
    apps = sorted(field_applications(term.expr), key=sympy.default_sort_key)
    dummies = [sympy.Dummy(f"w{i}") for i in range(len(apps))]
    expr = term.expr.xreplace(dict(zip(apps, dummies)))
    fn = spell_lambdify([*blocks, *dummies, *params], expr, "torch")
    calls = []
    for app in apps:
        f, out = field_of(app)
        callable_ = integrator.field_function(f.name)
        calls.append((callable_, [blocks.index(b) for b in f.depends], out, len(f.outputs)))

    def value(state: Mapping[str, torch.Tensor]) -> torch.Tensor:
        tensors = [state[b.name] for b in blocks]
        like = tensors[0]
        wide = [x.to(torch.float64) for x in tensors]
        fvals = []
        for call, idx, out, n_out in calls:
            v = call(*[tensors[i] for i in idx])
            counter[0] += 1
            fvals.append((v[out] if n_out > 1 else v).to(torch.float64))
        pv = [
            v.to(like.device, torch.float64) if isinstance(v, torch.Tensor) else v for v in values
        ]
        r = fn(*wide, *fvals, *pv)
        if not isinstance(r, torch.Tensor):
            r = torch.as_tensor(r, dtype=torch.float64, device=like.device)
        if term.elementwise:
            r = element_sum(r.expand_as(wide[0]) if r.ndim < wide[0].ndim else r)
        return r.expand(like.shape[0]).clone() if r.ndim == 0 else r

    return value


def energy_function(integrator: Any) -> Callable[[Mapping[str, torch.Tensor]], torch.Tensor]:
    """The integrator's SDE energy :math:`H(z)` per walker as a torch function (float64)."""
    energy = integrator.sde.energy
    if energy is None:
        raise ValueError("the SDE declares no energy (SDE(..., energy=Energy(...)))")
    counter = [0]
    fns = [_term_function(term, integrator, counter) for term in energy.terms]
    return lambda state: sum(fn(state) for fn in fns)


class WorkAndHeat(Observer):
    r"""Accumulates per-walker shadow work :math:`W` and heat :math:`Q` (see module docstring).

    ``finish()`` returns ``{"shadow_work", "heat", "energy_change", "energy_evaluations"}``,
    per-walker float64 tensors (the change :math:`H(z_n) - H(z_0)` equals ``shadow_work +
    heat`` up to round-off). With ``record=True`` the cumulative shadow work is also recorded
    every ``every`` steps.
    """

    substeps = True

    def __init__(self, name: str = "work", *, record: bool = False, every: int = 1) -> None:
        self.name = name
        self.record = record
        self.every = every
        self.work: torch.Tensor | None = None
        self.heat: torch.Tensor | None = None
        self.initial: torch.Tensor | None = None
        self._values: list[torch.Tensor] = []
        self.evaluations = [0]

    def start(self, t: float, state: Mapping[str, torch.Tensor], integrator: Any) -> None:
        energy = integrator.sde.energy
        if energy is None:
            raise ValueError(
                f"observer {self.name}: shadow work and heat need the SDE's energy "
                "(SDE(..., energy=Energy(...))); this SDE declares none"
            )
        flows = integrator.sde.flows
        noisy_blocks = {
            b
            for s in integrator.program.substeps
            if flows[s.letter].is_stochastic
            for b in s.solver.update.targets
        }
        self._terms = energy.terms
        self._fns = [_term_function(term, integrator, self.evaluations) for term in self._terms]
        # terms untouched by noise change only deterministically: evaluate once per step
        self._per_step = [not (term.blocks & noisy_blocks) for term in self._terms]
        self._stochastic = {
            s.index: flows[s.letter].is_stochastic for s in integrator.program.substeps
        }
        self._values = [fn(state) for fn in self._fns]
        self.initial = sum(self._values)
        self.work = torch.zeros_like(self.initial)
        self.heat = torch.zeros_like(self.initial)

    def _update(self, i: int, state: Mapping[str, torch.Tensor], into: torch.Tensor) -> None:
        new = self._fns[i](state)
        into += new - self._values[i]
        self._values[i] = new

    def on_substep(self, step: int, substep: Any, state: Mapping[str, torch.Tensor]) -> None:
        if isinstance(substep, GroupInfo):  # Metropolis test: a rejection restores the state
            for i, per_step in enumerate(self._per_step):
                if not per_step:
                    self._update(i, state, self.work)
            return
        assert isinstance(substep, SubstepInfo)
        changed = set(substep.solver.update.targets)
        target = self.heat if self._stochastic[substep.index] else self.work
        for i, term in enumerate(self._terms):
            if not self._per_step[i] and term.blocks & changed:
                self._update(i, state, target)

    def on_step(self, step: int, t: float, state: Mapping[str, torch.Tensor]) -> Any:
        for i, per_step in enumerate(self._per_step):
            if per_step:
                self._update(i, state, self.work)
        if self.record:
            return self.work.clone()
        return None

    def finish(self) -> dict[str, Any]:
        return {
            "shadow_work": self.work,
            "heat": self.heat,
            "energy_change": sum(self._values) - self.initial,
            "energy_evaluations": self.evaluations[0],
        }

    def state_dict(self) -> dict[str, Any]:
        return {
            "work": self.work,
            "heat": self.heat,
            "initial": self.initial,
            "values": list(self._values),
            "evaluations": self.evaluations[0],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.work, self.heat, self.initial = state["work"], state["heat"], state["initial"]
        self._values = list(state["values"])
        self.evaluations[0] = int(state["evaluations"])
