r"""A Langevin step program translated to OpenMM ``CustomIntegrator`` computations.

The symbolic step program of a word (:func:`splitsde.compose.builder.build_program`, the one the
torch backend lowers) is walked statement by statement: each ``Assign`` becomes a per-DOF
computation after substituting :math:`p = m v`, :math:`M = m`, :math:`h = dt`; state-free
coefficients are hoisted into constants recomputed only when ``kT``, ``gamma`` or ``dt``
change; a Metropolized group saves, tests and restores the state. The result is a list of
operations (:class:`OpenMMProgram`) that :class:`~splitsde.backends.openmm.
LangevinSplittingIntegrator` adds to itself; nothing here touches OpenMM objects.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

import sympy

from splitsde.backends.openmm_lepton import lepton
from splitsde.compose.builder import build_program
from splitsde.compose.presets import word as parse_word
from splitsde.compose.program import (
    Assign,
    Draw,
    Eval,
    GroupBegin,
    Let,
    Metropolis,
    Program,
    Recall,
)
from splitsde.compose.reduce import ReducedWord, Reduction
from splitsde.compose.visitor import StatementVisitor, computed_expressions
from splitsde.compose.word import Word, WordError
from splitsde.langevin.dynamics import langevin_sde
from splitsde.symbolic.energy import ElementSum
from splitsde.symbolic.field import Field
from splitsde.symbolic.sde import SDE
from splitsde.symbolic.symbols import Block, FieldValue, NoiseSymbol, Temporary, h, t

__all__ = ["OpenMMProgram", "compile_openmm", "langevin_program"]

KICK = re.compile(r"B([0-9]*)\Z")
_FORCES = re.compile(r"\b(?:f|energy)[0-9]*\b")

# OpenMM-side symbols
_x, _v = sympy.symbols("x v", real=True)
_m = sympy.Symbol("m", positive=True)
_dt = sympy.Symbol("dt", positive=True)
_gaussian, _uniform = sympy.symbols("gaussian uniform", real=True)


def langevin_program(word: str | Word | ReducedWord, reduction: Reduction | None = None) -> Program:
    """The symbolic step program of a Langevin word (letters A, B or B0, B1, ..., O)."""
    return _langevin(word, reduction)[1]


def _langevin(word: str | Word | ReducedWord, reduction: Reduction | None) -> tuple[SDE, Program]:
    if isinstance(word, ReducedWord):
        if reduction is not None:
            raise WordError("give the reduction either in the word or as reduction=, not both")
        word, reduction = word.word, word.reduction
    w = parse_word(word)
    bad = [x for x in w.letters if x not in ("A", "O") and not KICK.match(x)]
    if bad:
        raise WordError(
            f"the OpenMM backend expresses the Langevin letters A (positions), B (all forces) or "
            f"B0, B1, ... (one force group each) and O (exact Ornstein-Uhlenbeck); word {w} "
            f"has {', '.join(bad)}"
        )
    kicks = sorted((x for x in w.letters if KICK.match(x)), key=lambda x: (len(x), x))
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


@dataclass
class Op:
    """One OpenMM computation: ``kind`` is global, perdof, sum, constrain_x, constrain_v,
    update, if or end; ``note`` annotates the listing; ``affine_v`` marks a velocity update
    affine in ``v`` (see :func:`fuse_velocity_updates`)."""

    kind: str
    var: str = ""
    expr: str = ""
    note: str = ""
    affine_v: bool = False  # a velocity update v <- a*v + b


@dataclass
class _Build:
    ops: list[Op] = field(default_factory=list)
    globals_: dict[str, float] = field(default_factory=dict)
    perdof: list[str] = field(default_factory=list)
    constants: dict[str, str] = field(default_factory=dict)  # expr text -> global name
    constant_ops: list[Op] = field(default_factory=list)
    perdof_constants: dict[str, str] = field(default_factory=dict)

    def glob(self, name: str, value: float = 0.0) -> str:
        self.globals_.setdefault(name, value)
        return name

    def dof(self, name: str) -> str:
        if name not in self.perdof:
            self.perdof.append(name)
        return name


@dataclass(frozen=True)
class OpenMMProgram:
    """Everything a ``CustomIntegrator`` needs: global variables (with initial values), per-DOF
    variables, the kinetic-energy expression and the computations in order."""

    program: Program
    kick_groups: tuple[int, ...]
    globals_: dict[str, float]
    perdof: tuple[str, ...]
    kinetic: str
    ops: tuple[Op, ...]


def _kinetic(sde: SDE) -> str:
    """The kinetic energy density per DOF from the SDE's energy (:math:`p^2/2M \to m v^2/2`)."""
    blocks = {bk.name: bk for bk in sde.blocks}
    params = {s.name: s for s in sde.energy.parameters}
    e = sde.energy.elementwise.xreplace({blocks["p"]: _m * _v, params["M"]: _m})
    return lepton(sympy.simplify(e))


class _Translator(StatementVisitor[None]):
    """Walks a Langevin step program and emits OpenMM computations.

    Statement kinds OpenMM cannot express (past field values of a multistep solver, random
    selections) are refused with a :class:`WordError` naming the kind."""

    consumer = "the OpenMM backend"
    error = WordError

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
            for e in computed_expressions(s):
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
        text = lepton(sympy.powsimp(c, force=True))
        table = self.b.perdof_constants if per_dof else self.b.constants
        name = table.get(text)
        if name is None:
            name = f"{'cm' if per_dof else 'c'}{len(table)}"
            table[text] = name
            if per_dof:
                self.b.dof(name)
                self.b.constant_ops.append(Op("perdof", name, text))
            else:
                self.b.glob(name)
                self.b.constant_ops.append(Op("global", name, text))
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
                terms.append(lepton(term))
                continue
            coef = sympy.Mul(*rest) * sympy.Mul(*mass)
            s = sympy.Mul(*state)
            if coef.is_Number:
                terms.append(lepton(coef * s))
            else:
                name = self._constant(coef, per_dof=bool(mass))
                terms.append(name if s == 1 else f"{name}*{lepton(s)}")
        return " + ".join(terms) if terms else "0"

    # -- statements -------------------------------------------------------------------------
    def run(self) -> None:
        self.walk(self.program.statements)

    def visit_draw(self, s: Draw) -> None:
        if s.kind != "normal":
            self.refuse(s, f"the uniform draw {s.symbol} of a random selection")
        if self.uses[s.symbol] > 1:
            name = self.b.dof(f"xi{len(self.noise)}")
            self.noise[s.symbol] = sympy.Symbol(name, real=True)
            self.b.ops.append(Op("perdof", name, "gaussian"))

    def visit_recall(self, s: Recall) -> None:
        self.refuse(
            s,
            f"the value of {', '.join(map(str, s.like))} {s.lag} step(s) ago (a multistep "
            "solver); OpenMM evaluates forces at the current positions only",
        )

    # a sub-step end needs no computation (no observers inside an OpenMM step)
    visit_mark = StatementVisitor.skip

    def visit_eval(self, s: Eval) -> None:
        f = s.field
        if s.mask is not None:
            self.refuse(s, f"{f.name} evaluated on a random selection of walkers")
        group = f.name[1:]
        if tuple(s.args) != tuple(f.depends):  # pragma: no cover - Langevin fields are plain
            raise WordError(f"cannot express {f.name} at {s.args} in OpenMM")
        for o in s.outs:
            self.value_version[o] = self.q_version
            self.value_name[o] = ("f" if f.name.startswith("F") else "energy") + group

    def visit_let(self, s: Let) -> None:
        e = s.expr
        repl = {}
        for es in e.atoms(ElementSum):
            name = self.b.glob(f"sum{self.sums}")
            self.sums += 1
            self.b.ops.append(Op("sum", name, self._hoist(self._convert(es.args[0]))))
            repl[es] = sympy.Symbol(name, real=True)
        e = self._convert(e.xreplace(repl), energy_context=True)
        name = self.b.glob(s.symbol.name)
        self.temps[s.symbol] = sympy.Symbol(name, real=True)
        self.b.ops.append(Op("global", name, lepton(e)))

    def visit_assign(self, s: Assign) -> None:
        if len(s.targets) != 1:  # pragma: no cover - Langevin updates change one block
            raise WordError("the OpenMM backend needs one block per sub-step")
        (target,), (expr,) = s.targets, s.exprs
        sub = self.program.substeps[s.substep]
        occ = sub.occurrence
        note = f"sub-step {s.substep}: {occ.letter}[{occ.weight}] ({sub.solver.method})"
        e = self._convert(expr)
        stochastic = bool(sub.solver.update.noises)
        if target == self.q:
            self.b.ops.append(Op("perdof", "x", self._hoist(e), note=note))
            x1 = self.b.dof("x1")
            self.b.ops.append(Op("perdof", x1, "x"))
            self.b.ops.append(Op("constrain_x"))
            slice_ = sympy.Rational(occ.weight.numerator, occ.weight.denominator) * _dt
            corr = self._constant(1 / slice_, per_dof=False)
            self.b.ops.append(Op("perdof", "v", f"v + (x - {x1})*{corr}", affine_v=True))
            self.b.ops.append(Op("constrain_v"))
            self.q_version += 1
        else:
            new_v = sympy.expand(e / _m)
            if stochastic and self.measure:
                self.b.ops.append(Op("sum", "ke_before", self.kinetic, note=note))
                note = ""
            affine = sympy.diff(new_v, _v, 2) == 0 and not sympy.diff(new_v, _v).has(_v)
            self.b.ops.append(Op("perdof", "v", self._hoist(new_v), note=note, affine_v=affine))
            self.b.ops.append(Op("constrain_v"))
            if stochastic and self.measure:
                self.b.ops.append(Op("sum", "ke_after", self.kinetic))
                self.b.ops.append(Op("global", "heat_step", "heat_step + ke_after - ke_before"))

    def visit_group_begin(self, s: GroupBegin) -> None:
        g = self.program.groups[s.group]
        note = f"Metropolized group {g.letter}: keep the state"
        for bk in s.saved:
            var = "x" if bk == self.q else "v"
            name = self.b.dof(f"{var}old{s.group}")
            self.b.ops.append(Op("perdof", name, var, note=note))
            note = ""

    def visit_metropolis(self, s: Metropolis) -> None:
        g = s.group
        acc = self.b.glob(f"accept{g}")
        self.b.glob(f"naccept{g}")
        self.b.glob(f"ntrials{g}")
        work = self.temps[s.work]
        self.b.ops.append(
            Op(
                "global",
                acc,
                f"step(-{work} - log(uniform))",
                note=f"Metropolis test of group {g}: accept with min(1, exp(-W/kT))",
            )
        )
        self.b.ops.append(Op("global", f"naccept{g}", f"naccept{g} + {acc}"))
        self.b.ops.append(Op("global", f"ntrials{g}", f"ntrials{g} + 1"))
        self.b.ops.append(Op("if", expr=f"{acc} = 0"))
        for bk in s.saved:
            if bk == self.q:
                self.b.ops.append(Op("perdof", "x", f"xold{g}"))
                # OpenMM constrains positions and velocities against a reference that is
                # the last constrained positions (the rejected proposal here); constraining
                # the restored positions makes them the reference again
                self.b.ops.append(Op("constrain_x"))
            else:
                flip = "-" if bk in s.momenta else ""
                self.b.ops.append(Op("perdof", "v", f"{flip}vold{g}"))
        self.b.ops.append(Op("end"))
        if self.q in s.saved:
            self.q_version += 1
        for m in s.merges:
            for o, a in zip(m.outs, m.accepted):
                self.value_version[o] = self.q_version
                self.value_name[o] = self.value_name[a]


def _parameters(program: Program) -> set[sympy.Symbol]:
    from splitsde.symbolic.symbols import Parameter

    out: set[sympy.Symbol] = set()
    for s in program.statements:
        for e in computed_expressions(s):
            out |= {x for x in e.free_symbols if isinstance(x, Parameter)}
    for sub in program.substeps:
        for e in sub.solver.update.all_expressions():
            out |= {x for x in e.free_symbols if isinstance(x, Parameter)}
    return out


def compile_openmm(
    word: str | Word | ReducedWord,
    reduction: Reduction | None,
    *,
    kT: float,
    gamma: float,
    measure_heat: bool,
    measure_shadow_work: bool,
) -> OpenMMProgram:
    """Translate ``word`` into OpenMM computations (see the module docstring).

    The program starts with the context-state update (barostats, centre-of-mass motion
    removal), then recomputes the coefficients if ``kT``, ``gamma`` or ``dt`` changed, then --
    for words with force-group kicks, on the first step only -- measures which groups hold
    forces (:func:`group_check_ops`), then runs the sub-steps."""
    sde, program = _langevin(word, reduction)
    kicks = {o.letter for o in program.word if KICK.match(o.letter) and o.letter != "B"}
    kick_groups = tuple(sorted(int(k[1:]) for k in kicks))
    measure = measure_heat or measure_shadow_work
    b = _Build()
    b.glob("kT", kT)
    b.glob("gamma", gamma)
    kinetic = _kinetic(sde)
    _Translator(program, b, kinetic, measure).run()
    for name in ("kT_used", "gamma_used", "dt_used"):
        b.glob(name, -1.0)
    b.glob("stale", 1.0)
    if measure:
        for name in ("heat", "shadow_work", "heat_step", "ke_before", "ke_after", "E_step"):
            b.glob(name)
    ops = [
        Op("update", note="barostats, CM motion removal and other context updates"),
        Op(
            "global",
            "stale",
            "1 - delta(kT - kT_used)*delta(gamma - gamma_used)*delta(dt - dt_used)",
            note="coefficients depend on kT, gamma, dt: recompute only when one changed",
        ),
        Op("if", expr="stale > 0"),
        *b.constant_ops,
        *(Op("global", f"{name}_used", name) for name in ("kT", "gamma", "dt")),
        Op("end"),
    ]
    if kick_groups:
        ops += group_check_ops(b, kick_groups)
    if measure_shadow_work:
        ops.append(Op("sum", "ke_before", kinetic, note="energy at the start of the step"))
        ops.append(Op("global", "E_step", "energy + ke_before"))
    if measure:
        ops.append(Op("global", "heat_step", "0"))
    ops += fuse_velocity_updates(b.ops)
    if measure:
        ops.append(Op("global", "heat", "heat + heat_step", note="heat and shadow work"))
    if measure_shadow_work:
        ops.append(Op("sum", "ke_after", kinetic))
        ops.append(
            Op("global", "shadow_work", "shadow_work + (energy + ke_after - E_step) - heat_step")
        )
    return OpenMMProgram(
        program, kick_groups, dict(b.globals_), tuple(b.perdof), kinetic, tuple(ops)
    )


def group_check_ops(b: _Build, kick_groups: tuple[int, ...]) -> list[Op]:
    r"""First-step measurement of the force groups, for contexts made outside the library
    (a plain ``app.Simulation``), where the system cannot be inspected from Python.

    With ``groups_checked = 0`` (a fresh integrator) the program records, for every kicked group
    :math:`k`, its energy ``group_energy_k`` and :math:`\sum f_k^2` (``group_force_k``: both are
    exactly zero for a group without forces), and :math:`\sum (f - \sum_k f_k)^2` over all
    forces (``unkicked_force``, zero up to rounding when the kicked groups hold every force)
    next to :math:`\sum f^2` (``total_force``); then sets ``groups_checked = 1``.
    :meth:`LangevinSplittingIntegrator.step` reads them after the first step and warns."""
    b.glob("groups_checked", 0.0)
    b.dof("unkicked")
    ops = [
        Op(
            "if",
            expr="groups_checked = 0",
            note="first step only: which force groups hold forces (read by step() to warn)",
        )
    ]
    for k in kick_groups:
        ops.append(Op("global", b.glob(f"group_energy_{k}"), f"energy{k}"))
        ops.append(Op("sum", b.glob(f"group_force_{k}"), f"f{k}^2"))
    ops.append(Op("perdof", "unkicked", "f"))
    ops.append(Op("sum", b.glob("total_force"), "f^2"))
    for k in kick_groups:
        ops.append(Op("perdof", "unkicked", f"unkicked - f{k}"))
    ops.append(Op("sum", b.glob("unkicked_force"), "unkicked^2"))
    ops.append(Op("global", "groups_checked", "1"))
    ops.append(Op("end"))
    return ops


def fuse_velocity_updates(ops: list[Op]) -> list[Op]:
    r"""Fewer passes over the degrees of freedom, same velocities.

    1. Drop a velocity constraint that is followed directly by an affine velocity update and
       that update's own constraint (``constrain v; v = a*v + b; constrain v``, as between the
       position correction of an ``A`` and a following ``O`` or ``B``). At fixed positions the
       velocity constraint is a linear projection :math:`P` and the update is affine, so
       :math:`P(a P v + b) = P(a v + b)`.
    2. Fuse two affine velocity updates that now follow each other into one computation,
       substituting the first into the second (the same operations in the same order), unless
       they use the forces of different groups (OpenMM evaluates one group set per
       computation).

    A projection followed by anything else (a position update, a kinetic-energy sum, a saved
    copy, a block boundary) is kept."""
    kept: list[Op] = []
    for i, op in enumerate(ops):
        nxt = ops[i + 1 : i + 3]
        if (
            op.kind == "constrain_v"
            and len(nxt) == 2
            and nxt[0].affine_v
            and nxt[1].kind == "constrain_v"
        ):
            continue
        kept.append(op)
    out: list[Op] = []
    for op in kept:
        prev = out[-1] if out else None
        # OpenMM evaluates one computation with the forces of one force-group set only
        forces = set(_FORCES.findall(op.expr)) | set(_FORCES.findall(prev.expr)) if prev else set()
        if op.affine_v and prev is not None and prev.affine_v and len(forces) <= 1:
            inner = f"({prev.expr})"
            expr = re.sub(r"\bv\b", lambda _, inner=inner: inner, op.expr)
            note = "; ".join(n for n in (prev.note, op.note) if n)
            out[-1] = Op("perdof", "v", expr, note=note, affine_v=True)
        else:
            out.append(op)
    return out
