r"""Words to OpenMM: a splitting compiled to an :class:`openmm.CustomIntegrator`.

The Langevin letters of :mod:`splitsde.langevin` run on OpenMM's platforms (Reference, CPU,
CUDA, OpenCL) on real molecular systems:

=======  ==============================================  =====================================
letter   sub-flow over a slice of length :math:`s`        OpenMM computation
=======  ==============================================  =====================================
``A``    :math:`q \leftarrow q + s M^{-1} p`              ``x = x + c*v``, then constrain ``x``
                                                          and correct ``v`` by
                                                          :math:`(x - x_1)/s`
``B``    :math:`p \leftarrow p + s F(q)`                  ``v = v + c_m*f``, constrain ``v``
``Bk``   the same with the forces of force group k        ``v = v + c_m*fk``, constrain ``v``
``O``    :math:`p \leftarrow e^{-\gamma s} p +            ``v = a*v + b_m*gaussian``,
         \sqrt{k_BT(1 - e^{-2\gamma s})}\,M^{1/2}\xi`     constrain ``v``
``{ }``  Metropolized group (GHMC)                        energies, ``uniform``, restore and
                                                          flip ``v`` on rejection
=======  ==============================================  =====================================

The OpenMM program is **translated from the same symbolic step program** the torch backend
lowers (:func:`splitsde.compose.program.build_program`): each ``Assign`` becomes a per-DOF
computation after substituting :math:`p = m v`, :math:`M = m`, :math:`h = dt`. The word grammar,
the letter-count weights and the evaluation-reuse rules are therefore identical in both
backends; a program that OpenMM cannot express (a force reused after the positions moved, as
``reuse="per_step"`` does, or letters other than A, B, Bk, O) is refused with a
:class:`~splitsde.compose.word.WordError`.

State-free coefficients (:math:`e^{-\gamma s}`, :math:`\sqrt{k_BT(1-e^{-2\gamma s})/m}`,
:math:`s/m`, ...) are computed once, in an ``if`` block that runs again only when ``kT``,
``gamma`` or ``dt`` change (:meth:`LangevinSplittingIntegrator.set_temperature` just sets
``kT``). Units are OpenMM's: nm, ps, amu, kJ/mol.

References: Leimkuhler & Matthews, Appl. Math. Res. Express. 2013 (BAOAB); Fass et al.,
Entropy 20 (2018) 318 (splittings, force groups and shadow work in OpenMM custom integrators);
Horowitz, Phys. Lett. B 268 (1991) 247 (GHMC); Zhang et al., J. Phys. Chem. B 123 (2019) 6010
(OpenMM's LangevinMiddleIntegrator, BAOA).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import sympy
import torch
from sympy.printing.str import StrPrinter

from splitsde.compose.presets import word as parse_word
from splitsde.compose.program import (
    Assign,
    Draw,
    Eval,
    GroupBegin,
    Let,
    Mark,
    Metropolis,
    Program,
    build_program,
)
from splitsde.compose.reduce import ReducedWord, Reduction
from splitsde.compose.word import Word, WordError
from splitsde.langevin.dynamics import LangevinSystem, langevin_sde, underdamped
from splitsde.langevin.potentials import Potential
from splitsde.optional import require
from splitsde.symbolic.energy import ElementSum
from splitsde.symbolic.field import Field
from splitsde.symbolic.sde import SDE
from splitsde.symbolic.symbols import Block, FieldValue, NoiseSymbol, Temporary, h, t

openmm = require("openmm", extra="md", feature="the OpenMM backend")
unit = require("openmm.unit", extra="md", feature="the OpenMM backend")

__all__ = [
    "BOLTZMANN",
    "LangevinSplittingIntegrator",
    "OpenMMPotential",
    "degrees_of_freedom",
    "kinetic_temperature",
    "langevin_program",
    "make_context",
    "openmm_langevin",
]

#: Molar Boltzmann constant in kJ/(mol K).
BOLTZMANN = unit.MOLAR_GAS_CONSTANT_R.value_in_unit(unit.kilojoule_per_mole / unit.kelvin)

_KICK = re.compile(r"B([0-9]*)\Z")
_NO_FORCE = (
    openmm.CMMotionRemover,
    openmm.MonteCarloBarostat,
    openmm.MonteCarloAnisotropicBarostat,
    openmm.MonteCarloMembraneBarostat,
    openmm.MonteCarloFlexibleBarostat,
)

# OpenMM-side symbols
_x, _v = sympy.symbols("x v", real=True)
_m = sympy.Symbol("m", positive=True)
_dt = sympy.Symbol("dt", positive=True)
_gaussian, _uniform = sympy.symbols("gaussian uniform", real=True)


def _value(x: Any, u: unit.Unit, what: str) -> float:
    v = x.value_in_unit(u) if unit.is_quantity(x) else float(x)
    if not v == v or v in (float("inf"), float("-inf")):
        raise ValueError(f"{what} must be finite, got {x}")
    return float(v)


def degrees_of_freedom(system: openmm.System) -> int:
    r"""Kinetic degrees of freedom of an OpenMM system: :math:`3` per particle with mass,
    minus one per constraint that involves a particle with mass, minus :math:`3` when a
    :class:`openmm.CMMotionRemover` fixes the centre of mass (massless particles are not
    integrated). The count OpenMM's ``StateDataReporter`` uses for its temperature."""
    zero = 0.0 * unit.dalton
    massive = [system.getParticleMass(i) > zero for i in range(system.getNumParticles())]
    dof = 3 * sum(massive)
    for k in range(system.getNumConstraints()):
        i, j, _ = system.getConstraintParameters(k)
        if massive[i] or massive[j]:
            dof -= 1
    if any(isinstance(f, openmm.CMMotionRemover) for f in system.getForces()):
        dof -= 3
    if dof < 1:
        raise ValueError(f"the system has no kinetic degrees of freedom ({dof})")
    return dof


def kinetic_temperature(kinetic_energy: Any, system: openmm.System) -> float | np.ndarray:
    r"""Instantaneous kinetic temperature :math:`T = 2K / (N_\mathrm{dof} k_B)` in kelvin, with
    :math:`N_\mathrm{dof}` from :func:`degrees_of_freedom` (constraints and a fixed centre of
    mass removed). ``kinetic_energy`` is an OpenMM quantity or a number in kJ/mol (an array of
    them gives an array)."""
    if unit.is_quantity(kinetic_energy):
        kinetic_energy = kinetic_energy.value_in_unit(unit.kilojoule_per_mole)
    k = np.asarray(kinetic_energy, dtype=np.float64)
    temperature = 2.0 * k / (degrees_of_freedom(system) * BOLTZMANN)
    return float(temperature) if temperature.ndim == 0 else temperature


def langevin_program(word: str | Word | ReducedWord, reduction: Reduction | None = None) -> Program:
    """The symbolic step program of a Langevin word (letters A, B or B0, B1, ..., O)."""
    return _langevin(word, reduction)[1]


def _langevin(word: str | Word | ReducedWord, reduction: Reduction | None) -> tuple[SDE, Program]:
    if isinstance(word, ReducedWord):
        if reduction is not None:
            raise ValueError("give the reduction either in the word or as reduction=, not both")
        word, reduction = word.word, word.reduction
    w = parse_word(word)
    bad = [x for x in w.letters if x not in ("A", "O") and not _KICK.match(x)]
    if bad:
        raise WordError(
            f"the OpenMM backend expresses the Langevin letters A (positions), B (all forces) or "
            f"B0, B1, ... (one force group each) and O (exact Ornstein-Uhlenbeck); word {w} "
            f"has {', '.join(bad)}"
        )
    kicks = sorted((x for x in w.letters if _KICK.match(x)), key=lambda x: (len(x), x))
    if "B" in kicks and len(kicks) > 1:
        raise WordError(
            f"word {w} mixes B (all forces) with force-group kicks {', '.join(kicks[1:])}: the "
            "forces would be applied twice; use either B or B0, B1, ..."
        )
    groups = [int(k[1:]) for k in kicks if k != "B"]
    if any(g > 31 for g in groups):
        raise WordError("OpenMM has force groups 0 to 31 only")
    q = Block("q")
    defs = [(k, Field(f"F{k[1:]}", [q]), Field(f"U{k[1:]}", [q], like=[None])) for k in kicks]
    sde = langevin_sde(defs)
    return sde, build_program(sde, w, reduction, allow_missing=True)


class _LeptonPrinter(StrPrinter):
    """sympy -> OpenMM's Lepton expression language (``^`` powers, doubles everywhere)."""

    def _print_Pow(self, expr: sympy.Pow, rational: bool = False) -> str:
        b, e = expr.args
        if e == sympy.Rational(1, 2):
            return f"sqrt({self._print(b)})"
        if e == -1:
            return f"1/({self._print(b)})"
        if e == sympy.Rational(-1, 2):
            return f"1/sqrt({self._print(b)})"
        base = self._print(b) if b.is_Symbol else f"({self._print(b)})"
        return (
            f"{base}^{self._print(e)}" if e.is_Integer and e > 0 else f"{base}^({self._print(e)})"
        )

    def _print_Rational(self, expr: sympy.Rational) -> str:
        return repr(float(expr))

    def _print_Integer(self, expr: sympy.Integer) -> str:
        return str(int(expr))

    def _print_Float(self, expr: sympy.Float) -> str:
        return repr(float(expr))

    def _print_phi1(self, expr: sympy.Expr) -> str:
        a = self._print(expr.args[0])
        return f"select({a}, (exp({a}) - 1)/({a}), 1)"

    def _print_Exp1(self, expr: sympy.Expr) -> str:
        return "exp(1)"

    def _print_Pi(self, expr: sympy.Expr) -> str:
        return repr(float(sympy.pi))


def _lepton(e: sympy.Expr) -> str:
    return _LeptonPrinter().doprint(e)


@dataclass
class _Op:
    kind: str  # global, perdof, sum, constrain_x, constrain_v, update, if, end
    var: str = ""
    expr: str = ""
    note: str = ""


@dataclass
class _Build:
    ops: list[_Op] = field(default_factory=list)
    globals_: dict[str, float] = field(default_factory=dict)
    perdof: list[str] = field(default_factory=list)
    constants: dict[str, str] = field(default_factory=dict)  # expr text -> global name
    constant_ops: list[_Op] = field(default_factory=list)
    perdof_constants: dict[str, str] = field(default_factory=dict)

    def glob(self, name: str, value: float = 0.0) -> str:
        self.globals_.setdefault(name, value)
        return name

    def dof(self, name: str) -> str:
        if name not in self.perdof:
            self.perdof.append(name)
        return name


class LangevinSplittingIntegrator(openmm.CustomIntegrator):
    r"""A splitting word compiled to an :class:`openmm.CustomIntegrator`.

    Parameters
    ----------
    word:
        A word or preset over the letters A, B (or B0, B1, ... for force groups) and O, with
        optional ``{ }`` Metropolized groups: ``"BAOAB"``, ``"GHMC"``,
        ``"B0 B1 A A O A A B1 B0"``. Weights follow the letter-count rule of the grammar.
    timestep, temperature, friction:
        Step :math:`h` (ps), heat-bath temperature (K) and friction :math:`\gamma` (1/ps);
        floats or :mod:`openmm.unit` quantities.
    reduction:
        Evaluation-reuse rules (only those OpenMM can express: ``"exact"``, ``"none"``).
    measure_heat, measure_shadow_work:
        Accumulate the heat (kinetic-energy change of the O sub-steps) and the shadow work
        (total energy change minus heat) in the globals ``heat`` and ``shadow_work`` (kJ/mol).
    constraint_tolerance:
        Relative tolerance of OpenMM's constraint algorithms (default: OpenMM's).

    Notes
    -----
    Declared weak order and invariant-measure behaviour are those of the word (see
    :mod:`splitsde.compose.presets`); the program is the torch backend's.
    """

    def __init__(
        self,
        word: str | Word | ReducedWord = "BAOAB",
        timestep: Any = 0.001,
        temperature: Any = 298.0,
        friction: Any = 1.0,
        *,
        reduction: Reduction | None = None,
        measure_heat: bool = False,
        measure_shadow_work: bool = False,
        constraint_tolerance: float | None = None,
    ) -> None:
        dt = _value(timestep, unit.picoseconds, "timestep")
        if not dt > 0:
            raise ValueError(f"timestep must be positive, got {timestep}")
        T = _value(temperature, unit.kelvin, "temperature")
        if not T > 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        gamma = _value(friction, unit.picoseconds**-1, "friction")
        if not gamma >= 0:
            raise ValueError(f"friction must be non-negative, got {friction}")
        super().__init__(dt)
        if constraint_tolerance is not None:
            self.setConstraintTolerance(float(constraint_tolerance))
        sde, self.program = _langevin(word, reduction)
        self.word = self.program.word
        self.kick_groups = sorted(
            {int(o.letter[1:]) for o in self.word if _KICK.match(o.letter) and o.letter != "B"}
        )
        self.measure_heat = measure_heat
        self.measure_shadow_work = measure_shadow_work
        self._notes: dict[int, str] = {}
        b = _Build()
        b.glob("kT", BOLTZMANN * T)
        b.glob("gamma", gamma)
        self._kinetic = _kinetic(sde)
        _Translator(self.program, b, self._kinetic, measure_heat or measure_shadow_work).run()
        self._emit(b)

    # -- emission ---------------------------------------------------------------------------
    def _emit(self, b: _Build) -> None:
        for name in ("kT_used", "gamma_used", "dt_used"):
            b.glob(name, -1.0)
        b.glob("stale", 1.0)
        measure = self.measure_heat or self.measure_shadow_work
        if measure:
            for name in ("heat", "shadow_work", "heat_step", "ke_before", "ke_after", "E_step"):
                b.glob(name)
        for name, value in b.globals_.items():
            self.addGlobalVariable(name, value)
        for name in b.perdof:
            self.addPerDofVariable(name, 0.0)
        kinetic = self._kinetic
        self.setKineticEnergyExpression(kinetic)

        def add(op: _Op) -> None:
            i = self.getNumComputations()
            if op.note:
                self._notes[i] = op.note
            if op.kind == "global":
                self.addComputeGlobal(op.var, op.expr)
            elif op.kind == "perdof":
                self.addComputePerDof(op.var, op.expr)
            elif op.kind == "sum":
                self.addComputeSum(op.var, op.expr)
            elif op.kind == "constrain_x":
                self.addConstrainPositions()
            elif op.kind == "constrain_v":
                self.addConstrainVelocities()
            elif op.kind == "update":
                self.addUpdateContextState()
            elif op.kind == "if":
                self.beginIfBlock(op.expr)
            elif op.kind == "end":
                self.endBlock()
            else:  # pragma: no cover - internal
                raise AssertionError(op.kind)

        add(_Op("update", note="barostats, CM motion removal and other context updates"))
        add(
            _Op(
                "global",
                "stale",
                "1 - delta(kT - kT_used)*delta(gamma - gamma_used)*delta(dt - dt_used)",
                note="coefficients depend on kT, gamma, dt: recompute only when one changed",
            )
        )
        add(_Op("if", expr="stale > 0"))
        for op in b.constant_ops:
            add(op)
        for name in ("kT", "gamma", "dt"):
            add(_Op("global", f"{name}_used", name))
        add(_Op("end"))
        if self.measure_shadow_work:
            add(_Op("sum", "ke_before", kinetic, note="energy at the start of the step"))
            add(_Op("global", "E_step", "energy + ke_before"))
        if measure:
            add(_Op("global", "heat_step", "0"))
        for op in b.ops:
            add(op)
        if measure:
            add(_Op("global", "heat", "heat + heat_step", note="heat and shadow work of the step"))
        if self.measure_shadow_work:
            add(_Op("sum", "ke_after", kinetic))
            add(
                _Op(
                    "global",
                    "shadow_work",
                    "shadow_work + (energy + ke_after - E_step) - heat_step",
                )
            )

    # -- user API ---------------------------------------------------------------------------
    def set_temperature(self, temperature: Any) -> None:
        """Set the heat-bath temperature (K); kT-dependent constants follow on the next step."""
        T = _value(temperature, unit.kelvin, "temperature")
        if not T > 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.setGlobalVariableByName("kT", BOLTZMANN * T)

    def get_temperature(self) -> unit.Quantity:
        return self.getGlobalVariableByName("kT") / BOLTZMANN * unit.kelvin

    def set_friction(self, friction: Any) -> None:
        """Set the friction :math:`\\gamma` (1/ps)."""
        gamma = _value(friction, unit.picoseconds**-1, "friction")
        if not gamma >= 0:
            raise ValueError(f"friction must be non-negative, got {friction}")
        self.setGlobalVariableByName("gamma", gamma)

    def refresh_constants(self) -> None:
        """Force the coefficients to be recomputed on the next step (after changing masses)."""
        self.setGlobalVariableByName("kT_used", -1.0)

    @property
    def kT(self) -> float:
        """Thermal energy in kJ/mol."""
        return self.getGlobalVariableByName("kT")

    def _measured(self, name: str, flag: bool, dimensionless: bool) -> float:
        if not flag:
            raise RuntimeError(f"construct the integrator with measure_{name}=True to read {name}")
        v = self.getGlobalVariableByName(name)
        return v / self.kT if dimensionless else v

    def get_heat(self, dimensionless: bool = False) -> float:
        """Accumulated heat in kJ/mol (or in units of kT)."""
        return self._measured("heat", self.measure_heat or self.measure_shadow_work, dimensionless)

    def get_shadow_work(self, dimensionless: bool = False) -> float:
        """Accumulated shadow work in kJ/mol (or in units of kT)."""
        return self._measured("shadow_work", self.measure_shadow_work, dimensionless)

    @property
    def acceptance_rate(self) -> float | None:
        """Accepted / attempted Metropolis proposals over all ``{ }`` groups."""
        if not self.program.groups:
            return None
        acc = sum(self.getGlobalVariableByName(f"naccept{g.index}") for g in self.program.groups)
        tri = sum(self.getGlobalVariableByName(f"ntrials{g.index}") for g in self.program.groups)
        return acc / tri if tri else float("nan")

    def reset_statistics(self) -> None:
        """Zero the heat, shadow work and acceptance counters."""
        names = {self.getGlobalVariableName(i) for i in range(self.getNumGlobalVariables())}
        for n in ("heat", "shadow_work"):
            if n in names:
                self.setGlobalVariableByName(n, 0.0)
        for g in self.program.groups:
            self.setGlobalVariableByName(f"naccept{g.index}", 0.0)
            self.setGlobalVariableByName(f"ntrials{g.index}", 0.0)

    def check_system(self, system: openmm.System) -> None:
        """Refuse a system the word does not integrate correctly (force groups left out or
        kicked twice, a second thermostat)."""
        groups: set[int] = set()
        for f in system.getForces():
            if isinstance(f, openmm.AndersenThermostat):
                raise ValueError(
                    "the system has an AndersenThermostat; the word's O letter is the thermostat, "
                    "remove the AndersenThermostat force"
                )
            if not isinstance(f, _NO_FORCE):
                groups.add(f.getForceGroup())
        if not self.kick_groups:
            return
        missing = sorted(groups - set(self.kick_groups))
        if missing:
            raise ValueError(
                f"force group(s) {missing} hold forces but word {self.word} has no kick "
                f"{', '.join(f'B{g}' for g in missing)}: those forces would be ignored"
            )
        empty = sorted(set(self.kick_groups) - groups)
        if empty:
            raise ValueError(
                f"word {self.word} kicks force group(s) {empty}, which hold no forces; check "
                "force.setForceGroup(...)"
            )

    def listing(self) -> str:
        """The generated OpenMM program, annotated with the sub-steps it implements."""
        kinds = {
            self.ComputeGlobal: "global ",
            self.ComputePerDof: "per-DOF",
            self.ComputeSum: "sum    ",
        }
        lines = [f"OpenMM CustomIntegrator for word {self.word}"]
        depth = 0
        for i in range(self.getNumComputations()):
            kind, var, expr = self.getComputationStep(i)
            if i in self._notes:
                lines.append(f"  -- {self._notes[i]}")
            pad = "  " * depth
            if kind in kinds:
                lines.append(f"  {i:3d} {pad}{kinds[kind]}  {var} = {expr}")
            elif kind == self.ConstrainPositions:
                lines.append(f"  {i:3d} {pad}constrain positions")
            elif kind == self.ConstrainVelocities:
                lines.append(f"  {i:3d} {pad}constrain velocities")
            elif kind == self.UpdateContextState:
                lines.append(f"  {i:3d} {pad}update context state")
            elif kind == self.IfBlockStart:
                lines.append(f"  {i:3d} {pad}if ({expr}) {{")
                depth += 1
            elif kind == self.BlockEnd:
                depth -= 1
                lines.append(f"  {i:3d} {'  ' * depth}}}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"LangevinSplittingIntegrator({str(self.word)!r}, dt={self.getStepSize()})"


def _kinetic(sde: SDE) -> str:
    """The kinetic energy density per DOF from the SDE's energy (:math:`p^2/2M \to m v^2/2`)."""
    blocks = {bk.name: bk for bk in sde.blocks}
    params = {s.name: s for s in sde.energy.parameters}
    e = sde.energy.elementwise.xreplace({blocks["p"]: _m * _v, params["M"]: _m})
    return _lepton(sympy.simplify(e))


class _Translator:
    """Walks a Langevin step program and emits OpenMM computations."""

    def __init__(self, program: Program, build: _Build, kinetic: str, measure: bool) -> None:
        self.program = program
        self.b = build
        self.kinetic = kinetic
        self.measure = measure
        blocks = {bk.name: bk for bk in program.blocks}
        self.q, self.p = blocks["q"], blocks["p"]
        params = {s.name: s for s in _parameters(program)}
        self.subs: dict[sympy.Basic, sympy.Basic] = {self.q: _x, self.p: _m * _v, h: _dt}
        for name, sym in (
            ("M", _m),
            ("gamma", sympy.Symbol("gamma", real=True)),
            ("kT", sympy.Symbol("kT", real=True)),
        ):
            if name in params:
                self.subs[params[name]] = sym
        self.q_version = 0
        self.value_version: dict[FieldValue, int] = {}
        self.value_name: dict[FieldValue, str] = {}
        self.uses = Counter()
        for s in program.statements:
            for e in _expressions(s):
                for sym in e.free_symbols:
                    if isinstance(sym, NoiseSymbol):
                        self.uses[sym] += 1
        self.noise: dict[NoiseSymbol, sympy.Symbol] = {}
        self.temps: dict[Temporary, sympy.Symbol] = {}
        self.sums = 0

    # -- expression helpers -----------------------------------------------------------------
    def _field_symbol(self, fv: FieldValue, energy: bool) -> sympy.Symbol:
        if self.value_version.get(fv) != self.q_version:
            raise WordError(
                f"the OpenMM backend cannot express program {self.program.word} "
                f"({self.program.reduction}): it uses a field value after the positions moved; "
                "OpenMM evaluates forces at the current positions (use reuse='exact' or 'none')"
            )
        return sympy.Symbol(self.value_name[fv], real=True)

    def _convert(self, e: sympy.Expr, energy_context: bool = False) -> sympy.Expr:
        repl: dict[sympy.Basic, sympy.Basic] = {}
        for sym in e.free_symbols:
            if isinstance(sym, FieldValue):
                repl[sym] = self._field_symbol(sym, energy_context)
            elif isinstance(sym, NoiseSymbol):
                repl[sym] = self.noise.get(sym, _gaussian)
            elif isinstance(sym, Temporary):
                repl[sym] = self.temps[sym]
            elif sym == t:
                raise WordError("the OpenMM backend cannot express time-dependent updates")
        out = e.xreplace(repl).xreplace(self.subs)
        if any(isinstance(s, Block) for s in out.free_symbols):  # pragma: no cover - guard
            raise WordError(f"cannot translate {e} to OpenMM")
        return out

    def _constant(self, c: sympy.Expr, per_dof: bool) -> str:
        """A hoisted coefficient: a global (state-free) or a per-DOF constant (uses m)."""
        text = _lepton(sympy.powsimp(c, force=True))
        table = self.b.perdof_constants if per_dof else self.b.constants
        name = table.get(text)
        if name is None:
            name = f"{'cm' if per_dof else 'c'}{len(table)}"
            table[text] = name
            if per_dof:
                self.b.dof(name)
                self.b.constant_ops.append(_Op("perdof", name, text))
            else:
                self.b.glob(name)
                self.b.constant_ops.append(_Op("global", name, text))
        return name

    def _hoist(self, e: sympy.Expr) -> str:
        """Per-DOF expression with state-free coefficients hoisted into constants."""
        state_syms = {_x, _v, _gaussian} | {
            sympy.Symbol(n, real=True) for n in self.value_name.values()
        }
        state_syms |= {s for s in e.free_symbols if s.name in self.b.perdof}
        e = sympy.expand(e, power_exp=False, log=False, power_base=False)
        terms = []
        for term in sympy.Add.make_args(e):
            factors = sympy.Mul.make_args(term)
            state = [f for f in factors if f.free_symbols & state_syms]
            mass = [
                f for f in factors if not (f.free_symbols & state_syms) and _m in f.free_symbols
            ]
            rest = [f for f in factors if f not in state and f not in mass]
            if any(_m in f.free_symbols for f in state):
                terms.append(_lepton(term))
                continue
            coef = sympy.Mul(*rest) * sympy.Mul(*mass)
            s = sympy.Mul(*state)
            if coef.is_Number:
                terms.append(_lepton(coef * s))
            else:
                name = self._constant(coef, per_dof=bool(mass))
                terms.append(name if s == 1 else f"{name}*{_lepton(s)}")
        return " + ".join(terms) if terms else "0"

    # -- statements -------------------------------------------------------------------------
    def run(self) -> None:
        program = self.program
        for s in program.statements:
            if isinstance(s, Eval):
                self._eval(s)
            elif isinstance(s, Draw):
                if self.uses[s.symbol] > 1:
                    name = self.b.dof(f"xi{len(self.noise)}")
                    self.noise[s.symbol] = sympy.Symbol(name, real=True)
                    self.b.ops.append(_Op("perdof", name, "gaussian"))
            elif isinstance(s, Let):
                self._let(s)
            elif isinstance(s, Assign):
                self._assign(s)
            elif isinstance(s, GroupBegin):
                self._group_begin(s)
            elif isinstance(s, Metropolis):
                self._metropolis(s)
            elif isinstance(s, Mark):
                pass

    def _eval(self, s: Eval) -> None:
        f = s.field
        group = f.name[1:]
        if tuple(s.args) != tuple(f.depends):  # pragma: no cover - Langevin fields are plain
            raise WordError(f"cannot express {f.name} at {s.args} in OpenMM")
        for o in s.outs:
            self.value_version[o] = self.q_version
            self.value_name[o] = ("f" if f.name.startswith("F") else "energy") + group

    def _let(self, s: Let) -> None:
        e = s.expr
        repl = {}
        for es in e.atoms(ElementSum):
            name = self.b.glob(f"sum{self.sums}")
            self.sums += 1
            self.b.ops.append(_Op("sum", name, self._hoist(self._convert(es.args[0]))))
            repl[es] = sympy.Symbol(name, real=True)
        e = self._convert(e.xreplace(repl), energy_context=True)
        name = self.b.glob(s.symbol.name)
        self.temps[s.symbol] = sympy.Symbol(name, real=True)
        self.b.ops.append(_Op("global", name, _lepton(e)))

    def _assign(self, s: Assign) -> None:
        if len(s.targets) != 1:  # pragma: no cover - Langevin updates change one block
            raise WordError("the OpenMM backend needs one block per sub-step")
        (target,), (expr,) = s.targets, s.exprs
        sub = self.program.substeps[s.substep]
        occ = sub.occurrence
        note = f"sub-step {s.substep}: {occ.letter}[{occ.weight}] ({sub.solver.method})"
        e = self._convert(expr)
        stochastic = bool(sub.solver.update.noises)
        if target == self.q:
            self.b.ops.append(_Op("perdof", "x", self._hoist(e), note=note))
            x1 = self.b.dof("x1")
            self.b.ops.append(_Op("perdof", x1, "x"))
            self.b.ops.append(_Op("constrain_x"))
            slice_ = sympy.Rational(occ.weight.numerator, occ.weight.denominator) * _dt
            corr = self._constant(1 / slice_, per_dof=False)
            self.b.ops.append(_Op("perdof", "v", f"v + (x - {x1})*{corr}"))
            self.b.ops.append(_Op("constrain_v"))
            self.q_version += 1
        else:
            new_v = sympy.expand(e / _m)
            if stochastic and self.measure:
                self.b.ops.append(_Op("sum", "ke_before", self.kinetic, note=note))
                note = ""
            self.b.ops.append(_Op("perdof", "v", self._hoist(new_v), note=note))
            self.b.ops.append(_Op("constrain_v"))
            if stochastic and self.measure:
                self.b.ops.append(_Op("sum", "ke_after", self.kinetic))
                self.b.ops.append(_Op("global", "heat_step", "heat_step + ke_after - ke_before"))

    def _group_begin(self, s: GroupBegin) -> None:
        g = self.program.groups[s.group]
        note = f"Metropolized group {g.letter}: keep the state"
        for bk in s.saved:
            var = "x" if bk == self.q else "v"
            name = self.b.dof(f"{var}old{s.group}")
            self.b.ops.append(_Op("perdof", name, var, note=note))
            note = ""

    def _metropolis(self, s: Metropolis) -> None:
        g = s.group
        acc = self.b.glob(f"accept{g}")
        self.b.glob(f"naccept{g}")
        self.b.glob(f"ntrials{g}")
        work = self.temps[s.work]
        self.b.ops.append(
            _Op(
                "global",
                acc,
                f"step(-{work} - log(uniform))",
                note=f"Metropolis test of group {g}: accept with min(1, exp(-W/kT))",
            )
        )
        self.b.ops.append(_Op("global", f"naccept{g}", f"naccept{g} + {acc}"))
        self.b.ops.append(_Op("global", f"ntrials{g}", f"ntrials{g} + 1"))
        self.b.ops.append(_Op("if", expr=f"{acc} = 0"))
        for bk in s.saved:
            if bk == self.q:
                self.b.ops.append(_Op("perdof", "x", f"xold{g}"))
            else:
                flip = "-" if bk in s.momenta else ""
                self.b.ops.append(_Op("perdof", "v", f"{flip}vold{g}"))
        self.b.ops.append(_Op("end"))
        if self.q in s.saved:
            self.q_version += 1
        for m in s.merges:
            for o, a in zip(m.outs, m.accepted):
                self.value_version[o] = self.q_version
                self.value_name[o] = self.value_name[a]


def _expressions(s: Any) -> tuple[sympy.Expr, ...]:
    if isinstance(s, Assign):
        return s.exprs
    if isinstance(s, Let):
        return (s.expr,)
    return ()


def _parameters(program: Program) -> set[sympy.Symbol]:
    from splitsde.symbolic.symbols import Parameter

    out: set[sympy.Symbol] = set()
    for s in program.statements:
        for e in _expressions(s):
            out |= {x for x in e.free_symbols if isinstance(x, Parameter)}
    for sub in program.substeps:
        for e in sub.solver.update.all_expressions():
            out |= {x for x in e.free_symbols if isinstance(x, Parameter)}
    return out


def make_context(
    system: openmm.System,
    integrator: LangevinSplittingIntegrator,
    positions: Any,
    *,
    platform: str = "CPU",
    threads: int | None = 1,
    seed: int | None = None,
    velocities: Any = None,
) -> openmm.Context:
    """An :class:`openmm.Context` for ``integrator`` after :meth:`~LangevinSplittingIntegrator.
    check_system`, on ``platform`` with a fixed thread count (CPU) and random seed."""
    integrator.check_system(system)
    plat = openmm.Platform.getPlatformByName(platform)
    props = {}
    if platform == "CPU" and threads is not None:
        props["Threads"] = str(int(threads))
    if seed is not None:
        integrator.setRandomNumberSeed(int(seed))
    ctx = openmm.Context(system, integrator, plat, props)
    ctx.setPositions(positions)
    if velocities is not None:
        ctx.setVelocities(velocities)
    return ctx


# ---------------------------------------------------------------------------------------------
# OpenMM forces as a field of the torch backend
# ---------------------------------------------------------------------------------------------
class OpenMMPotential(Potential):
    r"""The potential energy and forces of an :class:`openmm.System` as a torch
    :class:`~splitsde.langevin.potentials.Potential`, so small real systems run through
    :func:`splitsde.integrate`, observers and analysis.

    Positions ``q`` of shape ``(walkers, atoms, 3)`` (nm) go in; forces (kJ/mol/nm) and
    energies (kJ/mol) per walker come out, computed walker by walker in one
    :class:`openmm.Context`. ``groups`` restricts them to some force groups (one potential per
    group gives the torch backend's force-group kicks ``B0``, ``B1``, ...). Energy and forces
    at the same positions come from one OpenMM evaluation (the last result is cached).

    The torch Langevin equations have no holonomic constraints, so a system with constraints
    is refused (run it with :class:`LangevinSplittingIntegrator` instead).
    """

    name = "openmm"

    def __init__(
        self,
        system: openmm.System,
        positions: Any,
        *,
        groups: set[int] | None = None,
        platform: str = "Reference",
        threads: int | None = 1,
    ) -> None:
        if system.getNumConstraints():
            raise ValueError(
                f"the system has {system.getNumConstraints()} constraints, which the torch "
                "backend does not handle; use LangevinSplittingIntegrator or remove constraints"
            )
        masses = [
            system.getParticleMass(i).value_in_unit(unit.dalton)
            for i in range(system.getNumParticles())
        ]
        if min(masses) <= 0:
            raise ValueError("massless particles (virtual sites) are not supported by this field")
        self.system = system
        self.masses = masses
        self.groups = set(groups) if groups is not None else None
        self.event_shape = (system.getNumParticles(), 3)
        pos = positions.value_in_unit(unit.nanometer) if unit.is_quantity(positions) else positions
        self.reference = np.asarray(pos, dtype=np.float64).reshape(self.event_shape)
        plat = openmm.Platform.getPlatformByName(platform)
        props = {"Threads": str(int(threads))} if platform == "CPU" and threads else {}
        self.context = openmm.Context(system, openmm.VerletIntegrator(0.001), plat, props)
        self._cache: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self.evaluations = 0
        if self.groups is not None:
            self.name = "openmm[" + ",".join(map(str, sorted(self.groups))) + "]"

    def mass_tensor(self, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """Masses (amu) shaped ``(atoms, 1)`` to broadcast against positions."""
        return torch.tensor(self.masses, dtype=dtype).reshape(-1, 1)

    def _evaluate(self, q: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        x = q.detach().to("cpu", torch.float64).numpy()
        if x.ndim != 3 or x.shape[1:] != self.event_shape:
            raise ValueError(
                f"positions must have shape (walkers, {self.event_shape[0]}, 3), "
                f"got {tuple(q.shape)}"
            )
        if self._cache is not None and np.array_equal(self._cache[0], x):
            return self._cache[1], self._cache[2]
        energies = np.empty(x.shape[0])
        forces = np.empty_like(x)
        kw = {"groups": self.groups} if self.groups is not None else {}
        for i, xi in enumerate(x):
            self.context.setPositions(xi)
            st = self.context.getState(getEnergy=True, getForces=True, **kw)
            energies[i] = st.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
            forces[i] = st.getForces(asNumpy=True).value_in_unit(
                unit.kilojoule_per_mole / unit.nanometer
            )
            self.evaluations += 1
        self._cache = (x.copy(), energies, forces)
        return energies, forces

    def energy(self, q: torch.Tensor) -> torch.Tensor:
        e, _ = self._evaluate(q)
        return torch.as_tensor(e, dtype=q.dtype, device=q.device).clone()

    def force(self, q: torch.Tensor) -> torch.Tensor:
        _, f = self._evaluate(q)
        return torch.as_tensor(f, dtype=q.dtype, device=q.device).clone()

    def initial(self, shape: tuple[int, ...], dtype: torch.dtype, device: Any) -> torch.Tensor:
        ref = torch.as_tensor(self.reference, dtype=dtype, device=device)
        return ref.expand(shape).clone()

    def __repr__(self) -> str:
        groups = f", groups={sorted(self.groups)}" if self.groups is not None else ""
        return f"OpenMMPotential({self.system.getNumParticles()} atoms{groups})"


def openmm_langevin(
    system: openmm.System,
    positions: Any,
    *,
    temperature: Any = 298.0,
    friction: Any = 1.0,
    force_groups: bool = False,
    platform: str = "Reference",
    threads: int | None = 1,
) -> LangevinSystem:
    """Underdamped Langevin dynamics of an OpenMM system for the torch backend.

    Units are OpenMM's (nm, ps, amu, kJ/mol): ``kT`` is :math:`k_B T` in kJ/mol, masses come
    from the system. With ``force_groups`` every non-empty force group ``k`` becomes kick
    letter ``Bk`` (in order; the letters are numbered 0, 1, ... by increasing group).
    """
    T = _value(temperature, unit.kelvin, "temperature")
    gamma = _value(friction, unit.picoseconds**-1, "friction")
    if force_groups:
        groups = sorted(
            {f.getForceGroup() for f in system.getForces() if not isinstance(f, _NO_FORCE)}
        )
        pots: Any = [
            OpenMMPotential(system, positions, groups={g}, platform=platform, threads=threads)
            for g in groups
        ]
    else:
        pots = OpenMMPotential(system, positions, platform=platform, threads=threads)
    first = pots[0] if isinstance(pots, list) else pots
    return underdamped(
        pots, gamma=gamma, kT=BOLTZMANN * T, mass=first.mass_tensor(), force_groups=force_groups
    )
