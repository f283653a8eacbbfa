r"""A compiled word: the straight-line program of one step.

Building a :class:`Program` from (SDE, word, reduction) inlines each occurrence's solver
update over its slice (architecture rule 4), turns every field application into an explicit
:class:`Eval` (reused according to the :class:`~splitsde.compose.reduce.Reduction`), every
noise into a :class:`Draw`, and records which field values can be carried to the next step
(first-same-as-last, and the past values a multistep solver reads:
:class:`Recall`). The program is symbolic: the torch lowering
(:mod:`splitsde.compose.codegen`) and the exact analysis both read it, so they cannot drift.

Inside a program, ``t`` is the start of the step and ``h`` its length.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import sympy

from splitsde.compose.reduce import Reduction
from splitsde.compose.visitor import StatementVisitor
from splitsde.compose.word import Occurrence, Word, WordError
from splitsde.symbolic.field import Field, field_applications, field_of
from splitsde.symbolic.flowmap import FlowMap
from splitsde.symbolic.history import lagged_applications
from splitsde.symbolic.sde import SDE
from splitsde.symbolic.selection import Selected, selected_applications
from splitsde.symbolic.solve import Solver
from splitsde.symbolic.symbols import (
    Block,
    Coefficient,
    FieldValue,
    NoiseSymbol,
    Temporary,
    h,
    t,
)
from splitsde.symbolic.update import CoefficientDef

__all__ = [
    "Assign",
    "Draw",
    "Eval",
    "GroupBegin",
    "GroupInfo",
    "HistoryInfo",
    "Let",
    "Mark",
    "Merge",
    "Metropolis",
    "Program",
    "ProgramCoefficient",
    "Recall",
    "SubstepInfo",
    "build_program",
]


@dataclass(frozen=True)
class Eval:
    """Evaluate ``field`` at ``args`` (dependency values, then the time label if any).

    ``mask = (u, lo, hi)`` evaluates only for the walkers with ``lo <= u < hi`` (a uniform
    draw per walker), giving zero for the others, and skips the call when none is selected
    (see :mod:`splitsde.symbolic.selection`).
    """

    field: Field
    outs: tuple[FieldValue, ...]
    args: tuple[sympy.Expr, ...]
    carry: int | None = None
    mask: tuple[NoiseSymbol, sympy.Expr, sympy.Expr] | None = None

    @property
    def expected_calls(self) -> Fraction | int:
        """Expected evaluations per walker: 1, or ``hi - lo`` for a masked evaluation."""
        if self.mask is None:
            return 1
        return Fraction(str(self.mask[2])) - Fraction(str(self.mask[1]))

    @property
    def time_label(self) -> sympy.Expr | None:
        return self.args[-1] if self.field.time else None


@dataclass(frozen=True)
class Draw:
    """Draw a standard normal tensor shaped like ``like`` for the interval ``[start, stop]``
    (``kind="uniform"``: one uniform on ``[0, 1)`` per walker, shaped to broadcast)."""

    symbol: NoiseSymbol
    like: Block
    start: sympy.Expr
    stop: sympy.Expr
    kind: str = "normal"


@dataclass(frozen=True)
class Recall:
    """A field value from an earlier step (history slot ``slot`` of the carry), or zeros shaped
    like ``like`` on the first step of a run."""

    outs: tuple[FieldValue, ...]
    slot: int
    like: tuple[FieldValue, ...]
    lag: int


@dataclass(frozen=True)
class Let:
    symbol: Temporary
    expr: sympy.Expr


@dataclass(frozen=True)
class Assign:
    """Simultaneous update of blocks."""

    targets: tuple[Block, ...]
    exprs: tuple[sympy.Expr, ...]
    substep: int


@dataclass(frozen=True)
class Mark:
    """End of sub-step ``substep`` (observers and checks hook in here)."""

    substep: int


@dataclass(frozen=True)
class GroupBegin:
    """Start of Metropolized group ``group``: keep copies of ``saved`` for a rejection."""

    group: int
    saved: tuple[Block, ...]


@dataclass(frozen=True)
class Merge:
    """A field value valid after a Metropolis test: ``accepted`` where the walker's proposal
    was accepted, ``rejected`` (the value at the group's start) where it was rejected."""

    field: Field
    outs: tuple[FieldValue, ...]
    args: tuple[sympy.Expr, ...]
    accepted: tuple[FieldValue, ...]
    rejected: tuple[FieldValue, ...]


@dataclass(frozen=True)
class Metropolis:
    r"""End of Metropolized group ``group``: accept each walker's proposal when
    :math:`u < e^{-W/k_BT}` with ``u`` a uniform draw and ``work`` :math:`= W/k_BT`; otherwise
    restore ``saved`` and flip ``momenta``. ``merges`` keep field values consistent."""

    group: int
    saved: tuple[Block, ...]
    momenta: tuple[Block, ...]
    work: Temporary
    uniform: NoiseSymbol
    merges: tuple[Merge, ...]


Statement = Eval | Draw | Let | Assign | Mark | GroupBegin | Metropolis | Recall


@dataclass(frozen=True)
class HistoryInfo:
    """The past values of one field application that a multistep sub-step reads.

    ``current`` is this step's evaluation, ``lags[j-1]`` the value ``j`` steps ago; the carry
    holds ``current, lags[0], ..., lags[-2]`` from ``slots[0]`` on.
    """

    substep: int
    field: Field
    current: tuple[FieldValue, ...]
    lags: tuple[tuple[FieldValue, ...], ...]
    slots: tuple[int, ...]

    @property
    def depth(self) -> int:
        return len(self.lags)


@dataclass(frozen=True)
class SubstepInfo:
    """One occurrence of a letter as it runs inside a step."""

    index: int
    occurrence: Occurrence
    solver: Solver
    start: sympy.Expr
    stop: sympy.Expr

    @property
    def letter(self) -> str:
        return self.occurrence.letter


@dataclass(frozen=True)
class ProgramCoefficient:
    """A solver coefficient instantiated for one occurrence (slice ``[t+offset h, +weight h]``)."""

    symbol: Coefficient
    definition: CoefficientDef
    offset: Fraction
    weight: Fraction


@dataclass(frozen=True)
class GroupInfo:
    """A Metropolized group ``{ ... }``: its sub-steps and its hook index in the step."""

    index: int
    substeps: tuple[int, ...]
    text: str
    hook: int

    @property
    def letter(self) -> str:
        return "{" + self.text + "}"


@dataclass
class Program:
    blocks: tuple[Block, ...]
    word: Word
    reduction: Reduction
    statements: list[Statement]
    substeps: list[SubstepInfo]
    coefficients: list[ProgramCoefficient]
    carry: list[tuple[FieldValue, ...]] = field(default_factory=list)
    groups: list[GroupInfo] = field(default_factory=list)
    history: list[HistoryInfo] = field(default_factory=list)

    @property
    def uniforms(self) -> list[Metropolis]:
        """Metropolis tests, each drawing one uniform per walker, in program order."""
        return [s for s in self.statements if isinstance(s, Metropolis)]

    @property
    def fields(self) -> tuple[Field, ...]:
        """The real fields the step evaluates (those inside flow maps included)."""
        out: list[Field] = []
        for s in self.statements:
            if isinstance(s, Eval):
                inner = s.field.inner_fields if isinstance(s.field, FlowMap) else (s.field,)
                out.extend(f for f in inner if f not in out)
        return tuple(out)

    @property
    def flow_maps(self) -> tuple[FlowMap, ...]:
        """Numerically integrated flow maps (pseudo-fields) the step evaluates."""
        out: list[FlowMap] = []
        for s in self.statements:
            if isinstance(s, Eval) and isinstance(s.field, FlowMap) and s.field not in out:
                out.append(s.field)
        return tuple(out)

    @property
    def evals(self) -> list[Eval]:
        return [s for s in self.statements if isinstance(s, Eval)]

    @property
    def draws(self) -> list[Draw]:
        """Standard normal draws, in program order."""
        return [s for s in self.statements if isinstance(s, Draw) and s.kind == "normal"]

    @property
    def uniform_draws(self) -> list[Draw]:
        """Per-walker uniform draws (random selections), in program order."""
        return [s for s in self.statements if isinstance(s, Draw) and s.kind == "uniform"]

    def evaluations_per_step(self, first: bool = False) -> int | float | None:
        """Field evaluations the program makes per step and walker (``first``: without carried
        values). A masked evaluation counts with its selection probability, so a randomized
        solver reports its expected count (a float); ``None`` when an adaptive flow map makes
        the count depend on the state."""
        n: Fraction | int = 0
        for e in self.evals:
            if isinstance(e.field, FlowMap):
                inner = e.field.field_evaluations
                if inner is None:
                    return None
                n += inner
            elif e.mask is not None:
                n += e.expected_calls
            elif first or e.carry is None:
                n += 1
        return float(n) if isinstance(n, Fraction) else n

    def listing(self) -> str:
        """A readable listing of the step program."""
        lister = _Lister(self)
        lines = [line for s in self.statements for line in lister.visit(s)]
        if self.carry:
            lines.append(
                "  carry to next step: " + ", ".join(",".join(map(str, c)) for c in self.carry)
            )
        return "\n".join(lines)


class _Lister(StatementVisitor[list[str]]):
    """The lines of :meth:`Program.listing` for one statement."""

    consumer = "the program listing"

    def __init__(self, program: Program) -> None:
        self.program = program

    def visit_eval(self, s: Eval) -> list[str]:
        outs = ", ".join(map(str, s.outs))
        carry = (
            f"   [carried from the previous step if available: slot {s.carry}]"
            if s.carry is not None
            else ""
        )
        if isinstance(s.field, FlowMap):
            carry = f"   [{s.field.description or 'flow map'}]"
        elif s.mask is not None:
            u, lo, hi = s.mask
            carry = f"   [only walkers with {lo} <= {u} < {hi}; 0 elsewhere]"
        return [f"  {outs} = {s.field.name}({', '.join(map(str, s.args))}){carry}"]

    def visit_recall(self, s: Recall) -> list[str]:
        outs = ", ".join(map(str, s.outs))
        cur = ", ".join(map(str, s.like))
        return [
            f"  {outs} = value of {cur} {s.lag} step(s) ago   [history slot {s.slot}; 0 before]"
        ]

    def visit_draw(self, s: Draw) -> list[str]:
        if s.kind == "uniform":
            return [f"  {s.symbol} ~ U(0, 1) per walker"]
        return [f"  {s.symbol} ~ N(0, 1) like {s.like}   [{s.start}, {s.stop}]"]

    def visit_let(self, s: Let) -> list[str]:
        return [f"  {s.symbol} = {s.expr}"]

    def visit_assign(self, s: Assign) -> list[str]:
        return [f"  {tgt} <- {e}" for tgt, e in zip(s.targets, s.exprs)]

    def visit_group_begin(self, s: GroupBegin) -> list[str]:
        g = self.program.groups[s.group]
        kept = ", ".join(map(str, s.saved))
        return [f"  -- Metropolized group {g.letter}: keep {kept}"]

    def visit_metropolis(self, s: Metropolis) -> list[str]:
        kept = ", ".join(map(str, s.saved))
        flip = ", ".join(map(str, s.momenta))
        lines = [
            f"  {s.uniform} ~ U(0, 1) per walker; accept where {s.uniform} < exp(-{s.work}),"
            f" else restore {kept} and flip {flip or 'nothing'}"
        ]
        for m in s.merges:
            for o, a, r in zip(m.outs, m.accepted, m.rejected):
                lines.append(f"  {o} = {a} if accepted else {r}")
        return lines

    def visit_mark(self, s: Mark) -> list[str]:
        sub = self.program.substeps[s.substep]
        o = sub.occurrence
        return [
            f"  -- end of sub-step {s.substep}: {o.letter}[{o.weight}] over "
            f"[{sub.start}, {sub.stop}] ({sub.solver.method})"
        ]


@dataclass
class _EvalRecord:
    stmt: Eval
    position: int
    key: tuple
    label: sympy.Expr | None
    versions: tuple


def build_program(
    sde: SDE,
    word: Word,
    reduction: Reduction | None = None,
    allow_missing: bool = False,
) -> Program:
    """Compile ``word`` over ``sde`` into a step program (symbolic)."""
    reduction = reduction or Reduction()
    word.check_alphabet(sde.letters)
    missing = [letter for letter in sde.letters if letter not in word.counts]
    if missing and not allow_missing:
        raise WordError(
            f"word {word} leaves out flow(s) {', '.join(missing)} of the SDE; every flow must "
            "appear (pass allow_missing=True to integrate only part of the SDE)"
        )
    energy = sde.energy
    if word.groups:
        _check_groups(sde, word, reduction)
    for occ in word:
        flow = sde.flows[occ.letter]
        if occ.weight < 0 and flow.is_stochastic:
            raise WordError(
                f"letter {occ.letter} has negative weight {occ.weight} but its flow is stochastic: "
                "noise cannot run backwards in time"
            )

    statements: list[Statement] = []
    chains: list[dict[str, Any]] = []
    substeps: list[SubstepInfo] = []
    coefs: list[ProgramCoefficient] = []
    versions: dict[Block, int] = {b: 0 for b in sde.blocks}
    records: list[_EvalRecord] = []
    per_step: dict[Field, tuple[FieldValue, ...]] = {}
    counter = {"v": 0}

    def label_for(f: Field, label: sympy.Expr | None) -> sympy.Expr | None:
        if not f.time:
            return None
        if reduction.time_label is not None and reduction.applies_to(f.name):
            return (
                t
                + sympy.Rational(reduction.time_label.numerator, reduction.time_label.denominator)
                * h
            )
        return label

    def emit_eval(
        f: Field, args: tuple[sympy.Expr, ...], label: sympy.Expr | None
    ) -> tuple[FieldValue, ...]:
        outs = []
        for o in f.outputs:
            counter["v"] += 1
            outs.append(
                FieldValue(f"{f.name}{'_' + o if len(f.outputs) > 1 else ''}_{counter['v']}")
            )
        full = (*args, label) if f.time else args
        stmt = Eval(f, tuple(outs), tuple(full))
        vers = tuple(versions.get(a) if isinstance(a, Block) else None for a in args)
        key = (f, tuple((a, v) for a, v in zip(args, vers)), label)
        records.append(_EvalRecord(stmt, len(statements), key, label, vers))
        statements.append(stmt)
        return tuple(outs)

    def plain(f: Field, args: tuple[sympy.Expr, ...]) -> bool:
        return tuple(args) == tuple(f.depends)

    def value_of(
        f: Field, args: tuple[sympy.Expr, ...], label: sympy.Expr | None
    ) -> tuple[FieldValue, ...]:
        label = label_for(f, label)
        if reduction.reuse == "per_step" and reduction.applies_to(f.name) and plain(f, args):
            if f not in per_step:
                per_step[f] = emit_eval(f, args, label)
            return per_step[f]
        if reduction.reuse != "none":
            vers = tuple(versions.get(a) if isinstance(a, Block) else None for a in args)
            key = (f, tuple((a, v) for a, v in zip(args, vers)), label)
            if all(v is not None for v in vers):
                for rec in reversed(records):
                    if rec.key == key:
                        return rec.stmt.outs
        return emit_eval(f, args, label)

    def energy_now(name: str) -> Temporary:
        """Emit the energy per walker at the current state (fresh or provably current fields)."""
        expr = energy.expression()
        repl = {}
        for app in sorted(field_applications(expr), key=sympy.default_sort_key):
            f, out = field_of(app)
            repl[app] = value_of(f, tuple(app.args[: len(f.depends)]), None)[out]
        tmp = Temporary(name)
        statements.append(Let(tmp, expr.xreplace(repl)))
        return tmp

    groups: list[GroupInfo] = []
    group_state: dict[str, Any] = {}

    def begin_group(g: int, first: int) -> None:
        idx = next(ix for ix in word.groups if ix[0] == first)
        changed = {b for i in idx for b in sde.flows[word[i].letter].changed}
        saved = tuple(b for b in sde.blocks if b in changed or b in energy.momenta)
        groups.append(GroupInfo(len(groups), idx, _group_text(word, idx), len(word) + len(groups)))
        statements.append(GroupBegin(g, saved))
        group_state.update(saved=saved, start=dict(versions), energy=energy_now(f"E{g}_start"))

    def end_group(g: int) -> None:
        e1 = energy_now(f"E{g}_end")
        work = Temporary(f"W{g}")
        statements.append(Let(work, (e1 - group_state["energy"]) / energy.kT))
        saved, start = group_state["saved"], group_state["start"]
        end = dict(versions)
        merges, new_records = [], []
        for f in dict.fromkeys(rec.stmt.field for rec in records):
            deps = f.depends
            if f.time or not set(deps) & set(saved) or set(deps) & set(energy.momenta):
                continue  # untouched by the test, or not recoverable after a momentum flip
            at_end = _find(records, f, deps, end)
            at_start = _find(records, f, deps, start)
            if at_end is None or at_start is None:
                continue
            counter["v"] += 1
            outs = tuple(FieldValue(f"{o.name}_m{counter['v']}") for o in at_end.stmt.outs)
            merges.append(Merge(f, outs, deps, at_end.stmt.outs, at_start.stmt.outs))
        statements.append(
            Metropolis(g, saved, energy.momenta, work, NoiseSymbol(f"u_{g}"), tuple(merges))
        )
        for b in saved:
            versions[b] += 1
        for m in merges:
            vers = tuple(versions[b] for b in m.args)
            key = (m.field, tuple(zip(m.args, vers)), None)
            rec = _EvalRecord(m, len(statements), key, None, vers)  # type: ignore[arg-type]
            new_records.append(rec)
        records.extend(new_records)

    def pre_evaluate() -> None:
        for occ in word:
            for f in _direct_fields(sde.flows[occ.letter].solver):
                if f not in per_step and reduction.applies_to(f.name):
                    per_step[f] = emit_eval(f, f.depends, label_for(f, t if f.time else None))

    for k, occ in enumerate(word):
        if occ.group is not None and (k == 0 or word[k - 1].group != occ.group):
            begin_group(occ.group, k)
        if reduction.reuse == "per_step" and (
            (reduction.eval_at == "start" and k == 0)
            or (not isinstance(reduction.eval_at, str) and reduction.eval_at == k)
        ):
            pre_evaluate()
        solver = sde.flows[occ.letter].solver
        upd = solver.update
        t0 = t + sympy.Rational(occ.offset.numerator, occ.offset.denominator) * h
        s = sympy.Rational(occ.weight.numerator, occ.weight.denominator) * h
        rename: dict[sympy.Basic, sympy.Basic] = {t: t0, h: s}
        for xi, spec in upd.noises:
            new = NoiseSymbol(f"{xi.name}_{k}")
            rename[xi] = new
            a = sympy.Rational(spec.start.numerator, spec.start.denominator)
            b = sympy.Rational(spec.stop.numerator, spec.stop.denominator)
            statements.append(
                Draw(new, spec.like, sympy.expand(t0 + a * s), sympy.expand(t0 + b * s), spec.kind)
            )
        for c, d in upd.coefficients.items():
            new = Coefficient(f"c{k}_{c.name}")
            rename[c] = new
            coefs.append(ProgramCoefficient(new, d, occ.offset, occ.weight))
        for tmp, _ in upd.lets:
            rename[tmp] = Temporary(f"k{k}_{tmp.name}")
        maps_here: dict[tuple, tuple[FieldValue, ...]] = {}

        def flow_map(f: FlowMap, args: tuple, maps: dict = maps_here) -> tuple[FieldValue, ...]:
            """One evaluation per flow map and sub-step (its outputs share it); never reused."""
            args = tuple(sympy.expand(a) for a in args)
            if (f, args) not in maps:
                counter["v"] += 1
                outs = tuple(FieldValue(f"{f.name}_{o}_{counter['v']}") for o in f.outputs)
                statements.append(Eval(f, outs, args))
                maps[(f, args)] = outs
            return maps[(f, args)]

        # a multistep solver: evaluate each lagged application now and recall its past values
        current, past = _history_values(
            k, [e.xreplace(rename) for e in upd.all_expressions()], value_of, statements, chains
        )
        selected: dict[tuple, tuple[FieldValue, ...]] = {}

        def masked(node: Selected, selected: dict = selected) -> tuple[FieldValue, ...]:
            """A per-walker selected evaluation: one per field, arguments and selection (its
            outputs share it), never reused across sub-steps."""
            f, _ = field_of(node.application)
            args = tuple(sympy.expand(a) for a in node.application.args)
            key = (f, args, node.mask)
            if key not in selected:
                outs = []
                for o in f.outputs:
                    counter["v"] += 1
                    suffix = "_" + o if len(f.outputs) > 1 else ""
                    outs.append(FieldValue(f"{f.name}{suffix}_sel{counter['v']}"))
                statements.append(Eval(f, tuple(outs), args, mask=node.mask))
                selected[key] = tuple(outs)
            return selected[key]

        def lower(
            e: sympy.Expr,
            rename: dict = rename,
            current: dict = current,
            past: dict = past,
            masked: Any = masked,
            flow_map: Any = flow_map,
        ) -> sympy.Expr:
            e = e.xreplace(rename)
            special = {}
            for node in lagged_applications(e):
                special[node] = past[(node.application, node.lag)]
            for node in sorted(selected_applications(e), key=sympy.default_sort_key):
                special[node] = masked(node)[field_of(node.application)[1]]
            if special:
                e = e.xreplace(special)
            apps = sorted(field_applications(e), key=sympy.default_sort_key)
            if not apps:
                return e
            repl = {}
            for app in apps:
                f, out = field_of(app)
                if isinstance(f, FlowMap):
                    repl[app] = flow_map(f, app.args)[out]
                    continue
                if app in current:
                    repl[app] = current[app][out]
                    continue
                n_dep = len(f.depends)
                args = tuple(app.args[:n_dep])
                label = sympy.expand(app.args[n_dep]) if f.time else None
                repl[app] = value_of(f, args, label)[out]
            return e.xreplace(repl)

        for tmp, e in upd.lets:
            statements.append(Let(rename[tmp], lower(e)))
        exprs = tuple(lower(e) for e in upd.exprs)
        statements.append(Assign(upd.targets, exprs, k))
        for b in upd.targets:
            versions[b] += 1
        statements.append(Mark(k))
        substeps.append(SubstepInfo(k, occ, solver, t0, sympy.expand(t0 + s)))
        if occ.group is not None and (k == len(word) - 1 or word[k + 1].group != occ.group):
            end_group(occ.group)

    if (
        reduction.reuse == "per_step"
        and not isinstance(reduction.eval_at, str)
        and reduction.eval_at == len(word)
    ):
        raise WordError(
            "eval_at equal to the number of sub-steps evaluates after the step; use 'start'"
        )

    program = Program(sde.blocks, word, reduction, statements, substeps, coefs, groups=groups)
    if reduction.reuse == "exact":
        _mark_carry(program, records, versions)
    _assign_history(program, chains)
    return program


def _direct_fields(solver: Solver) -> list[Field]:
    """Fields a solver's update applies directly (not inside a flow map)."""
    out: list[Field] = []
    for app in sorted(solver.update.field_applications, key=str):
        f = field_of(app)[0]
        if not isinstance(f, FlowMap) and f not in out:
            out.append(f)
    return out


def _history_values(
    k: int,
    exprs: list[sympy.Expr],
    value_of: Any,
    statements: list[Statement],
    chains: list[dict[str, Any]],
) -> tuple[dict[sympy.Expr, tuple[FieldValue, ...]], dict[tuple, FieldValue]]:
    """Evaluate every lagged field application of sub-step ``k`` at the slice start and emit a
    :class:`Recall` for each of its past values (slots are assigned after the whole program).

    Returns the current evaluation of each lagged application and the past values by
    ``(application, lag)``; all outputs of one evaluation share one history."""
    depth: dict[tuple[Field, tuple], int] = {}
    for e in exprs:
        for node in lagged_applications(e):
            f, _ = field_of(node.application)
            key = (f, node.application.args)
            depth[key] = max(depth.get(key, 0), node.lag)
    current: dict[sympy.Expr, tuple[FieldValue, ...]] = {}
    past: dict[tuple, FieldValue] = {}
    for (f, full), d in sorted(depth.items(), key=lambda kv: (kv[0][0].name, str(kv[0][1]))):
        n_dep = len(f.depends)
        args = tuple(full[:n_dep])
        if not all(isinstance(a, Block) for a in args):
            raise WordError(
                f"a multistep solver reads past values of field {f.name} at {args}, which are "
                "not the state blocks at the start of its slice"
            )
        label = sympy.expand(full[n_dep]) if f.time else None
        outs = value_of(f, args, label)
        apps = [f.apply(i, full) for i in range(len(f.outputs))]
        for app in apps:
            current[app] = outs
        chain = {"substep": k, "field": f, "current": outs, "lags": [], "recalls": []}
        for j in range(1, d + 1):
            lag_outs = tuple(FieldValue(f"{o.name}_lag{j}") for o in outs)
            chain["lags"].append(lag_outs)
            chain["recalls"].append(len(statements))
            statements.append(Recall(lag_outs, -1, outs, j))
            for i, app in enumerate(apps):
                past[(app, j)] = lag_outs[i]
        chains.append(chain)
    return current, past


def _assign_history(program: Program, chains: list[dict[str, Any]]) -> None:
    """Carry slots of the multistep histories: ``current, lag 1, ..., lag r-1`` after the
    first-same-as-last slots; lag ``j`` of the next step reads slot ``base + j - 1``."""
    for chain in chains:
        base = len(program.carry)
        lags = chain["lags"]
        program.carry.extend([chain["current"], *lags[:-1]])
        slots = tuple(range(base, base + len(lags)))
        for j, (i, slot) in enumerate(zip(chain["recalls"], slots), start=1):
            old = program.statements[i]
            program.statements[i] = Recall(old.outs, slot, old.like, j)
        program.history.append(
            HistoryInfo(chain["substep"], chain["field"], chain["current"], tuple(lags), slots)
        )


def _find(records: list[_EvalRecord], f: Field, deps: tuple, vers: dict) -> _EvalRecord | None:
    """The latest evaluation of ``f`` at its own dependencies with the given block versions."""
    key = (f, tuple((b, vers[b]) for b in deps), None)
    for rec in reversed(records):
        if rec.key == key:
            return rec
    return None


def _group_text(word: Word, idx: tuple[int, ...]) -> str:
    counts = word.counts
    return " ".join(
        word[i].letter
        if word[i].weight == Fraction(1, counts[word[i].letter])
        else f"{word[i].letter}[{word[i].weight}]"
        for i in idx
    )


def _check_groups(sde: SDE, word: Word, reduction: Reduction) -> None:
    """A Metropolized group must be a reversible, volume-preserving proposal with an energy."""
    if sde.energy is None:
        raise WordError(
            f"word {word} has a Metropolized group {{ }}, which needs the energy of the SDE "
            "(SDE(..., energy=Energy(...))); this SDE declares none"
        )
    if reduction.reuse == "per_step":
        raise WordError(
            "a Metropolized group needs exact field values inside the proposal; use "
            "reuse='exact' or 'none', not 'per_step'"
        )
    for idx in word.groups:
        text = _group_text(word, idx)
        noisy = [word[i].letter for i in idx if sde.flows[word[i].letter].is_stochastic]
        if noisy:
            raise WordError(
                f"group {{{text}}} contains stochastic letter(s) "
                f"{', '.join(dict.fromkeys(noisy))}; "
                "a Metropolized group must be deterministic: move them outside the braces"
            )
        mapped = [
            word[i].letter
            for i in idx
            if any(
                isinstance(field_of(a)[0], FlowMap)
                for a in sde.flows[word[i].letter].solver.update.field_applications
            )
        ]
        if mapped:
            raise WordError(
                f"group {{{text}}} has letter(s) {', '.join(dict.fromkeys(mapped))} solved by a "
                "numerical ODE method, which is not a reversible volume-preserving proposal"
            )
        timed = [
            word[i].letter for i in idx if sde.flows[word[i].letter].solver.time != "autonomous"
        ]
        if timed:
            raise WordError(f"group {{{text}}} has time-dependent letter(s) {', '.join(timed)}")
        items: list[list] = []
        for i in idx:
            o = word[i]
            if items and items[-1][0] == o.letter:
                items[-1][1] += o.weight
            else:
                items.append([o.letter, o.weight])
        if items != items[::-1]:
            raise WordError(
                f"group {{{text}}} is not symmetric: its proposal is not reversible under a "
                "momentum flip, so the Metropolis test would not sample the target exactly"
            )


def _mark_carry(program: Program, records: list[_EvalRecord], final: dict[Block, int]) -> None:
    """First-same-as-last: carry a field value to the next step when it is provably current."""
    by_field: dict[Field, list[_EvalRecord]] = {}
    for rec in records:
        by_field.setdefault(rec.stmt.field, []).append(rec)
    for f, recs in by_field.items():
        first, last = recs[0], recs[-1]
        if any(v != 0 for v in first.versions) or not all(
            isinstance(a, Block) for a in first.stmt.args[: len(f.depends)]
        ):
            continue
        if any(v is None or v != final[b] for b, v in zip(f.depends, last.versions)):
            continue
        if tuple(last.stmt.args[: len(f.depends)]) != tuple(f.depends):
            continue
        if f.time:
            l0, l1 = first.label, last.label
            if h in l0.free_symbols or sympy.simplify(l1 - l0.xreplace({t: t + h})) != 0:
                continue
        slot = len(program.carry)
        program.carry.append(last.stmt.outs)
        i = program.statements.index(first.stmt)
        program.statements[i] = Eval(first.stmt.field, first.stmt.outs, first.stmt.args, slot)
