r"""Langevin dynamics as split SDEs.

Underdamped (letters as in openmmtools: A = "R", B = "V", O = "O")

.. math::
    dq = M^{-1} p\,dt \;(A), \qquad dp = F(q)\,dt \;(B), \qquad
    dp = -\gamma p\,dt + \sqrt{2\gamma k_BT}\,M^{1/2} dW \;(O),

with :math:`F = -\nabla U`. Each flow is solved exactly by the derived solvers (two shears and
an Ornstein--Uhlenbeck flow). With ``force_groups`` the kick splits into ``B0``, ``B1``, ...,
one per force group, for multiple time-stepping words such as ``"B0 B1 A B1 O B1 A B1 B0"``.

Overdamped

.. math:: dq = F(q)\,dt \;(B), \qquad dq = \sqrt{2 k_BT}\,dW \;(O),

so the word ``"BO"`` is Euler--Maruyama. The Leimkuhler--Matthews non-Markovian scheme is the
high-friction limit of BAOAB and is available as :func:`overdamped_lm`.

References: Leimkuhler & Matthews, *Molecular Dynamics* (Springer 2015), ch. 6--7.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import sympy
import torch

from splitsde.base.methods import MethodInfo, register_method
from splitsde.compose.presets import PRESETS
from splitsde.langevin.potentials import _Q, Potential, PotentialError
from splitsde.langevin.units import Units
from splitsde.runtime.system import System
from splitsde.symbolic.energy import Energy
from splitsde.symbolic.field import Field
from splitsde.symbolic.flow import Flow
from splitsde.symbolic.sde import SDE
from splitsde.symbolic.symbols import Block, Parameter

__all__ = ["LangevinSystem", "langevin_sde", "overdamped", "overdamped_lm", "underdamped"]


class LangevinSystem(System):
    """A Langevin system: the split SDE, its parameters, the potential(s) and helpers."""

    def __init__(
        self,
        sde: SDE,
        params: dict,
        fields: dict,
        potentials: Sequence[Potential],
        kT: float,
        mass: Any,
        underdamped: bool,
        name: str,
        units: Units | None = None,
    ) -> None:
        super().__init__(sde, params, fields, name)
        self.potentials = tuple(potentials)
        self.kT = float(kT)
        self.mass = mass
        self.underdamped = underdamped
        #: The units the potential, masses and kT are given in (``None``: reduced units); they
        #: label the columns of :class:`~splitsde.langevin.reporter.Reporter`.
        self.units = units

    @property
    def potential(self) -> Potential:
        if len(self.potentials) != 1:
            raise ValueError("this system has several force groups; use .potentials")
        return self.potentials[0]

    def energy(self, q: torch.Tensor) -> torch.Tensor:
        return sum(p.energy(q) for p in self.potentials)

    def force(self, q: torch.Tensor) -> torch.Tensor:
        return sum(p.force(q) for p in self.potentials)

    def laplacian(self, q: torch.Tensor) -> torch.Tensor:
        return sum(p.laplacian(q) for p in self.potentials)

    def initial_state(
        self,
        walkers: int,
        *,
        dim: int | tuple[int, ...] | None = None,
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float64,
        device: Any = "cpu",
    ) -> dict[str, torch.Tensor]:
        """Walkers at the potential's reference configuration with Maxwell--Boltzmann momenta.

        ``dim`` is the configuration shape of one walker (default: the potential's own shape,
        else one coordinate).
        """
        pot = self.potentials[0]
        if dim is None:
            event = pot.event_shape or (1,)
        else:
            event = (dim,) if isinstance(dim, int) else tuple(dim)
            if pot.event_shape is not None and event != tuple(pot.event_shape):
                raise PotentialError(
                    f"{pot!r} acts on configurations of shape {tuple(pot.event_shape)}, "
                    f"not dim={dim}"
                )
        shape = (walkers, *event)
        q = pot.initial(shape, dtype, device)
        if not self.underdamped:
            return {"q": q}
        g = generator or torch.Generator(device=device).manual_seed(0)
        m = self.mass
        scale = torch.sqrt(torch.as_tensor(m, dtype=dtype, device=device) * self.kT)
        p = torch.randn(shape, generator=g, dtype=dtype, device=device) * scale
        return {"q": q, "p": p}


def _force_field(name: str, q: Block, pot: Potential) -> Field:
    sym = pot.symbolic_force()
    definition = sym.xreplace({_Q: q}) if sym is not None else None
    return Field(name, [q], definition=definition, description=f"force of {pot!r}")


def _energy_field(name: str, q: Block, pot: Potential) -> Field:
    return Field(name, [q], like=[None], description=f"potential energy of {pot!r} per walker")


def langevin_sde(kicks: Sequence[tuple[str, Field, Field]]) -> SDE:
    r"""The symbolic underdamped Langevin SDE with energy
    :math:`H = \sum_k U_k(q) + \sum p^2/(2M)`.

    ``kicks`` lists ``(letter, force field, energy field)`` per kick letter: ``("B", F, U)``
    for one force, or ``("B0", F0, U0), ("B1", F1, U1), ...`` for force groups. The letters
    are A (positions), the kicks, and O (exact Ornstein--Uhlenbeck).
    """
    q, p = Block("q"), Block("p")
    M = Parameter("M", positive=True)
    g = Parameter("gamma", nonnegative=True)
    T = Parameter("kT", positive=True)
    flows: dict[str, Flow] = {"A": Flow({q: p / M}, description="positions (openmmtools R)")}
    for letter, F, _ in kicks:
        what = "kick (openmmtools V)" if letter == "B" else f"kick of force group {letter[1:]}"
        flows[letter] = Flow({p: F()}, description=what)
    flows["O"] = Flow({p: -g * p}, {p: sympy.sqrt(2 * g * T * M)}, description="exact OU")
    energy = Energy(sum(U() for _, _, U in kicks), p**2 / (2 * M), kT=T, momenta=[p])
    return SDE([q, p], flows, energy=energy, name="underdamped Langevin")


def underdamped(
    potential: Potential | Sequence[Potential],
    *,
    gamma: float = 1.0,
    kT: float = 1.0,
    mass: float | torch.Tensor = 1.0,
    force_groups: bool = False,
    units: Units | None = None,
) -> LangevinSystem:
    """Underdamped Langevin dynamics split into A (positions), B (kicks), O (exact OU).

    ``potential`` may be a list: with ``force_groups=True`` each potential becomes its own
    force group and kick letter ``B0``, ``B1``, ...; otherwise their forces are summed.
    ``mass`` may be a tensor broadcasting against the positions (per-particle masses).
    ``units`` names the units of the potential, masses and ``kT`` for reports (default:
    reduced units; :data:`~splitsde.langevin.units.OPENMM_UNITS` for nm, ps, amu, kJ/mol).
    """
    pots = list(potential) if isinstance(potential, Sequence) else [potential]
    if not pots:
        raise ValueError("give at least one potential")
    if not (gamma >= 0 and math.isfinite(gamma)):
        raise ValueError(f"gamma must be finite and non-negative, got {gamma}")
    if not kT > 0:
        raise ValueError(f"kT must be positive, got {kT}")
    q = Block("q")
    fields: dict[str, Any] = {}
    if force_groups and len(pots) > 1:
        kicks = []
        for i, pot in enumerate(pots):
            kicks.append((f"B{i}", _force_field(f"F{i}", q, pot), _energy_field(f"U{i}", q, pot)))
            fields[f"F{i}"] = pot.force
            fields[f"U{i}"] = pot.energy
    else:
        if len(pots) == 1:
            kicks = [("B", _force_field("F", q, pots[0]), _energy_field("U", q, pots[0]))]
            fields["F"] = pots[0].force
            fields["U"] = pots[0].energy
        else:
            kicks = [
                (
                    "B",
                    Field("F", [q], description="sum of forces"),
                    Field("U", [q], like=[None], description="sum of potential energies"),
                )
            ]
            fields["F"] = lambda x: sum(pt.force(x) for pt in pots)
            fields["U"] = lambda x: sum(pt.energy(x) for pt in pots)
    sde = langevin_sde(kicks)
    if isinstance(mass, torch.Tensor):
        if (mass <= 0).any():
            raise ValueError("masses must be positive")
    elif not mass > 0:
        raise ValueError(f"mass must be positive, got {mass}")
    params = {"M": mass, "gamma": gamma, "kT": kT}
    name = "+".join(pt.name for pt in pots)
    return LangevinSystem(
        sde, params, fields, pots, kT, mass, True, f"underdamped {name}", units=units
    )


def overdamped(
    potential: Potential, *, kT: float = 1.0, units: Units | None = None
) -> LangevinSystem:
    """Overdamped Langevin dynamics split into B (drift, Euler) and O (exact noise shear);
    ``units`` as for :func:`underdamped`."""
    if not kT > 0:
        raise ValueError(f"kT must be positive, got {kT}")
    q = Block("q")
    T = Parameter("kT", positive=True)
    F = _force_field("F", q, potential)
    sde = SDE(
        [q],
        {
            "B": Flow({q: F()}, description="drift"),
            "O": Flow(noise={q: sympy.sqrt(2 * T)}, description="noise"),
        },
        name="overdamped Langevin",
    )
    return LangevinSystem(
        sde,
        {"kT": kT},
        {"F": potential.force},
        [potential],
        kT,
        1.0,
        False,
        f"overdamped {potential.name}",
        units=units,
    )


def overdamped_lm(
    potential: Potential, *, kT: float = 1.0, h: float
) -> tuple[LangevinSystem, float]:
    r"""The Leimkuhler--Matthews scheme
    :math:`q_{n+1} = q_n + hF(q_n) + \sqrt{kT h/2}(R_n + R_{n+1})`
    as BAOAB in the infinite-friction limit (unit mass, :math:`\delta = \sqrt{2h}`).

    Returns the underdamped system (with :math:`\gamma = \infty` realised as a full momentum
    refresh) and the step :math:`\delta` to run BAOAB with; the positions after each step are
    the LM iterates. Reference: Leimkuhler & Matthews, AMRX 2013; Leimkuhler, Matthews & Stoltz,
    IMA J. Numer. Anal. 36 (2016) 13.
    """
    if not h > 0:
        raise ValueError("h must be positive")
    q, p = Block("q"), Block("p")
    T = Parameter("kT", positive=True)
    F = _force_field("F", q, potential)
    from splitsde.symbolic.solve import Custom, noise_symbol

    refresh = Custom(
        {p: sympy.sqrt(T) * noise_symbol(p)},
        weak_order=None,
        exact=True,
        name="momentum refresh",
        reason="gamma = infinity: p is redrawn from N(0, kT)",
    )
    sde = SDE(
        [q, p],
        {
            "A": Flow({q: p}),
            "B": Flow({p: F()}),
            "O": Flow({p: -p}, {p: sympy.sqrt(2 * T)}, solver=refresh),
        },
        name="Langevin (infinite friction)",
    )
    sys_ = LangevinSystem(
        sde, {"kT": kT}, {"F": potential.force}, [potential], kT, 1.0, True, f"LM {potential.name}"
    )
    return sys_, float(np.sqrt(2.0 * h))


def _preset_methods() -> list[MethodInfo]:
    """Method-table rows: the declared orders and invariant-measure notes, the field
    evaluations per step and exact sub-flows of each preset compiled on underdamped Langevin
    (the presets are data in :mod:`splitsde.compose.presets`; their letters are this module's)."""
    from splitsde.langevin.potentials import Harmonic

    system = underdamped(Harmonic(1.0))
    rows = []
    for p in PRESETS.values():
        integ = system.integrator(p.name)
        exact = dict.fromkeys(s.letter for s in integ.program.substeps if s.solver.exact)
        name = p.name + (f" (alias {', '.join(p.aliases)})" if p.aliases else "")
        rows.append(
            MethodInfo(
                name=name if p.word == p.name else f"{name}: `{p.word}`",
                kind="Langevin preset",
                weak_order=str(p.weak_order),
                invariant=p.invariant,
                evaluations=str(integ.evaluations_per_step),
                exact_subflows=", ".join(exact) or "none",
                reference=p.reference,
            )
        )
    return rows


register_method("Langevin presets", _preset_methods)
