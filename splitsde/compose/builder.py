r"""Building the step :class:`~splitsde.compose.program.Program` of a word, in named passes.

:class:`ProgramBuilder` compiles (SDE, word, reduction) into the straight-line program of one
step (architecture rule 4). Its passes, each a method:

1. **validation** (:meth:`~ProgramBuilder.validate`): the word's letters, flows it leaves out,
   Metropolized groups, negative weights on stochastic flows;
2. **inlining** (:meth:`~ProgramBuilder.inline`): occurrence :math:`k` with offset :math:`o_k`
   and weight :math:`w_k` instantiates its flow's solver update over its slice,
   :math:`t \mapsto t + o_k h`, :math:`h \mapsto w_k h`: noises become :class:`Draw`\ s,
   coefficients :class:`ProgramCoefficient`\ s, temporaries :class:`Let`\ s, and the update an
   :class:`Assign` followed by a :class:`Mark`;
3. **evaluation reuse** (:meth:`~ProgramBuilder.value_of`): every field application becomes an
   :class:`Eval`, or reuses an earlier one when the
   :class:`~splitsde.compose.reduce.Reduction` allows it. Each block carries a version,
   bumped by every assignment to it, so a value is provably current when its key (field,
   argument versions, time label) matches;
4. **Metropolis groups** (:meth:`~ProgramBuilder.begin_group`,
   :meth:`~ProgramBuilder.end_group`): a :class:`GroupBegin`, the energy at both ends and a
   :class:`Metropolis` statement whose merges keep field values valid after the test;
5. **history and carry** (:meth:`~ProgramBuilder.history_values`,
   :meth:`~ProgramBuilder.assign_history`, :meth:`~ProgramBuilder.mark_carry`): the
   :class:`Recall`\ s of multistep solvers and the values carried to the next step
   (first-same-as-last).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction

import sympy

from splitsde.compose.program import (
    Assign,
    Draw,
    Eval,
    GroupBegin,
    GroupInfo,
    HistoryInfo,
    Let,
    Mark,
    Merge,
    Metropolis,
    Program,
    ProgramCoefficient,
    Recall,
    Statement,
    SubstepInfo,
)
from splitsde.compose.reduce import Reduction
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
from splitsde.symbolic.update import NoiseSpec, Update

__all__ = ["ProgramBuilder", "build_program"]

Values = tuple[FieldValue, ...]


def build_program(
    sde: SDE,
    word: Word,
    reduction: Reduction | None = None,
    allow_missing: bool = False,
) -> Program:
    """Compile ``word`` over ``sde`` into a step program (symbolic)."""
    return ProgramBuilder(sde, word, reduction, allow_missing).build()


@dataclass
class _EvalRecord:
    """An evaluation (or a Metropolis merge) with its reuse key: field, arguments with their
    block versions, time label."""

    stmt: Eval
    position: int
    key: tuple
    label: sympy.Expr | None
    versions: tuple


@dataclass
class _HistoryChain:
    """The past values of one lagged field application in sub-step ``substep``; ``recalls`` are
    the statement indices of its :class:`Recall` s (slots are assigned after the program)."""

    substep: int
    field: Field
    current: Values
    lags: list[Values] = field(default_factory=list)
    recalls: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class _OpenGroup:
    """A Metropolized group being built: blocks kept for a rejection, block versions and
    energy at its start."""

    saved: tuple[Block, ...]
    start: dict[Block, int]
    energy: Temporary


class ProgramBuilder:
    """Compiles ``word`` over ``sde`` with ``reduction`` into a :class:`Program`, in the passes
    of the module docstring. The state the passes share lives in attributes; a builder builds
    one program."""

    def __init__(
        self,
        sde: SDE,
        word: Word,
        reduction: Reduction | None = None,
        allow_missing: bool = False,
    ) -> None:
        self.sde = sde
        self.word = word
        self.reduction = reduction or Reduction()
        self.allow_missing = allow_missing
        self.statements: list[Statement] = []
        self.substeps: list[SubstepInfo] = []
        self.coefficients: list[ProgramCoefficient] = []
        self.groups: list[GroupInfo] = []
        #: version of each block: bumped by every assignment to it (and a Metropolis test)
        self.versions: dict[Block, int] = {b: 0 for b in sde.blocks}
        #: evaluations and merges, in program order: what value reuse and the carry search
        self.records: list[_EvalRecord] = []
        #: the single value of each field under ``reuse="per_step"``
        self.per_step: dict[Field, Values] = {}
        self.chains: list[_HistoryChain] = []
        self._serial = 0
        self._open: _OpenGroup | None = None
        self._built = False

    def build(self) -> Program:
        """Run all passes and return the program."""
        if self._built:
            raise RuntimeError("a ProgramBuilder builds one program; make a new one")
        self._built = True
        self.validate()
        for k, occ in enumerate(self.word):
            self.inline(k, occ)
        self._check_eval_at_end()
        program = Program(
            self.sde.blocks,
            self.word,
            self.reduction,
            self.statements,
            self.substeps,
            self.coefficients,
            groups=self.groups,
        )
        if self.reduction.reuse == "exact":
            self.mark_carry(program)
        self.assign_history(program)
        return program

    # -- pass 1: validation ------------------------------------------------------------------

    def validate(self) -> None:
        """Refuse a word that cannot be compiled over the SDE."""
        sde, word = self.sde, self.word
        word.check_alphabet(sde.letters)
        missing = [letter for letter in sde.letters if letter not in word.counts]
        if missing and not self.allow_missing:
            raise WordError(
                f"word {word} leaves out flow(s) {', '.join(missing)} of the SDE; every flow "
                "must appear (pass allow_missing=True to integrate only part of the SDE)"
            )
        if word.groups:
            self._check_groups()
        for occ in word:
            if occ.weight < 0 and sde.flows[occ.letter].is_stochastic:
                raise WordError(
                    f"letter {occ.letter} has negative weight {occ.weight} but its flow is "
                    "stochastic: noise cannot run backwards in time"
                )

    def _check_groups(self) -> None:
        """A Metropolized group must be a reversible, volume-preserving proposal with an
        energy."""
        if self.sde.energy is None:
            raise WordError(
                f"word {self.word} has a Metropolized group {{ }}, which needs the energy of the "
                "SDE (SDE(..., energy=Energy(...))); this SDE declares none"
            )
        if self.reduction.reuse == "per_step":
            raise WordError(
                "a Metropolized group needs exact field values inside the proposal; use "
                "reuse='exact' or 'none', not 'per_step'"
            )
        for idx in self.word.groups:
            self._check_group(idx)

    def _check_group(self, idx: tuple[int, ...]) -> None:
        text = _group_text(self.word, idx)
        letters = [self.word[i].letter for i in idx]
        flows = [self.sde.flows[letter] for letter in letters]
        noisy = [x for x, flow in zip(letters, flows) if flow.is_stochastic]
        if noisy:
            raise WordError(
                f"group {{{text}}} contains stochastic letter(s) "
                f"{', '.join(dict.fromkeys(noisy))}; "
                "a Metropolized group must be deterministic: move them outside the braces"
            )
        mapped = [x for x, flow in zip(letters, flows) if _has_flow_map(flow.solver)]
        if mapped:
            raise WordError(
                f"group {{{text}}} has letter(s) {', '.join(dict.fromkeys(mapped))} solved by a "
                "numerical ODE method, which is not a reversible volume-preserving proposal"
            )
        timed = [x for x, flow in zip(letters, flows) if flow.solver.time != "autonomous"]
        if timed:
            raise WordError(f"group {{{text}}} has time-dependent letter(s) {', '.join(timed)}")
        runs = _weighted_runs(self.word, idx)
        if runs != runs[::-1]:
            raise WordError(
                f"group {{{text}}} is not symmetric: its proposal is not reversible under a "
                "momentum flip, so the Metropolis test would not sample the target exactly"
            )

    def _check_eval_at_end(self) -> None:
        r = self.reduction
        if r.reuse == "per_step" and not isinstance(r.eval_at, str) and r.eval_at == len(self.word):
            raise WordError(
                "eval_at equal to the number of sub-steps evaluates after the step; use 'start'"
            )

    # -- pass 2: inlining each occurrence ----------------------------------------------------

    def inline(self, k: int, occ: Occurrence) -> None:
        """Instantiate occurrence ``k``'s solver update over its slice and lower it."""
        if self._opens_group(k, occ):
            self.begin_group(occ.group, k)
        if self._pre_evaluates_at(k):
            self.pre_evaluate()
        solver = self.sde.flows[occ.letter].solver
        upd = solver.update
        t0 = t + _rational(occ.offset) * h
        s = _rational(occ.weight) * h
        rename = self._slice_names(k, occ, upd, t0, s)
        # a multistep solver: evaluate each lagged application now and recall its past values
        current, past = self.history_values(k, [e.xreplace(rename) for e in upd.all_expressions()])
        lowering = _Lowering(self, rename, current, past)
        for tmp, e in upd.lets:
            self.statements.append(Let(rename[tmp], lowering.lower(e)))
        exprs = tuple(lowering.lower(e) for e in upd.exprs)
        self.statements.append(Assign(upd.targets, exprs, k))
        for b in upd.targets:
            self.versions[b] += 1
        self.statements.append(Mark(k))
        self.substeps.append(SubstepInfo(k, occ, solver, t0, sympy.expand(t0 + s)))
        if self._closes_group(k, occ):
            self.end_group(occ.group)

    def _slice_names(
        self, k: int, occ: Occurrence, upd: Update, t0: sympy.Expr, s: sympy.Expr
    ) -> dict[sympy.Basic, sympy.Basic]:
        """Names local to sub-step ``k``: its time and step, its noises (drawn here), its
        coefficients and its temporaries."""
        rename: dict[sympy.Basic, sympy.Basic] = {t: t0, h: s}
        for xi, spec in upd.noises:
            rename[xi] = self._draw(k, xi, spec, t0, s)
        for c, d in upd.coefficients.items():
            new = Coefficient(f"c{k}_{c.name}")
            rename[c] = new
            self.coefficients.append(ProgramCoefficient(new, d, occ.offset, occ.weight))
        for tmp, _ in upd.lets:
            rename[tmp] = Temporary(f"k{k}_{tmp.name}")
        return rename

    def _draw(
        self, k: int, xi: NoiseSymbol, spec: NoiseSpec, t0: sympy.Expr, s: sympy.Expr
    ) -> NoiseSymbol:
        """Emit the draw of noise ``xi`` over its part of the slice ``[t0, t0 + s]``."""
        new = NoiseSymbol(f"{xi.name}_{k}")
        a, b = _rational(spec.start), _rational(spec.stop)
        start, stop = sympy.expand(t0 + a * s), sympy.expand(t0 + b * s)
        self.statements.append(Draw(new, spec.like, start, stop, spec.kind))
        return new

    # -- pass 3: evaluation reuse ------------------------------------------------------------

    def serial(self) -> int:
        """The next number for a fresh value's name (one counter: names stay unique)."""
        self._serial += 1
        return self._serial

    def time_label(self, f: Field, label: sympy.Expr | None) -> sympy.Expr | None:
        """The time passed to ``f``: the reduction's label if it sets one, else ``label``."""
        if not f.time:
            return None
        r = self.reduction
        if r.time_label is not None and r.applies_to(f.name):
            return t + _rational(r.time_label) * h
        return label

    def value_of(self, f: Field, args: tuple[sympy.Expr, ...], label: sympy.Expr | None) -> Values:
        """The value of ``f`` at ``args``: reused where the reduction allows, else evaluated."""
        label = self.time_label(f, label)
        r = self.reduction
        plain = tuple(args) == tuple(f.depends)
        if r.reuse == "per_step" and r.applies_to(f.name) and plain:
            if f not in self.per_step:
                self.per_step[f] = self.emit_eval(f, args, label)
            return self.per_step[f]
        if r.reuse != "none":
            found = self._current_value(f, args, label)
            if found is not None:
                return found
        return self.emit_eval(f, args, label)

    def _current_value(
        self, f: Field, args: tuple[sympy.Expr, ...], label: sympy.Expr | None
    ) -> Values | None:
        """The latest evaluation of ``f`` at the same arguments, block versions and label."""
        vers = self._versions_of(args)
        if any(v is None for v in vers):
            return None  # an argument that is not a block: not provably unchanged
        key = _reuse_key(f, args, vers, label)
        for rec in reversed(self.records):
            if rec.key == key:
                return rec.stmt.outs
        return None

    def emit_eval(self, f: Field, args: tuple[sympy.Expr, ...], label: sympy.Expr | None) -> Values:
        """A fresh evaluation of ``f``, recorded for later reuse."""
        outs = tuple(FieldValue(_value_name(f, o, str(self.serial()))) for o in f.outputs)
        full = (*args, label) if f.time else args
        stmt = Eval(f, outs, tuple(full))
        vers = self._versions_of(args)
        key = _reuse_key(f, args, vers, label)
        self.records.append(_EvalRecord(stmt, len(self.statements), key, label, vers))
        self.statements.append(stmt)
        return outs

    def _versions_of(self, args: tuple[sympy.Expr, ...]) -> tuple[int | None, ...]:
        return tuple(self.versions.get(a) if isinstance(a, Block) else None for a in args)

    def _pre_evaluates_at(self, k: int) -> bool:
        """Whether the single ``per_step`` evaluation stands before sub-step ``k``."""
        r = self.reduction
        if r.reuse != "per_step":
            return False
        if isinstance(r.eval_at, str):
            return r.eval_at == "start" and k == 0
        return r.eval_at == k

    def pre_evaluate(self) -> None:
        """Evaluate, on the current state, every field the word's solvers apply directly."""
        for occ in self.word:
            for f in _direct_fields(self.sde.flows[occ.letter].solver):
                if f not in self.per_step and self.reduction.applies_to(f.name):
                    label = self.time_label(f, t if f.time else None)
                    self.per_step[f] = self.emit_eval(f, f.depends, label)

    # -- pass 4: Metropolis groups -----------------------------------------------------------

    def _opens_group(self, k: int, occ: Occurrence) -> bool:
        return occ.group is not None and (k == 0 or self.word[k - 1].group != occ.group)

    def _closes_group(self, k: int, occ: Occurrence) -> bool:
        last = k == len(self.word) - 1
        return occ.group is not None and (last or self.word[k + 1].group != occ.group)

    def begin_group(self, g: int, first: int) -> None:
        """Open group ``g`` (first sub-step ``first``): keep the blocks it changes and the
        momenta, and the energy at its start."""
        word, energy = self.word, self.sde.energy
        idx = next(ix for ix in word.groups if ix[0] == first)
        changed = {b for i in idx for b in self.sde.flows[word[i].letter].changed}
        saved = tuple(b for b in self.sde.blocks if b in changed or b in energy.momenta)
        hook = len(word) + len(self.groups)
        self.groups.append(GroupInfo(len(self.groups), idx, _group_text(word, idx), hook))
        self.statements.append(GroupBegin(g, saved))
        self._open = _OpenGroup(saved, dict(self.versions), self.energy_now(f"E{g}_start"))

    def end_group(self, g: int) -> None:
        r"""Close group ``g``: the work :math:`W/k_BT = (E_1 - E_0)/k_BT`, the Metropolis
        test, and new versions of the kept blocks (restored or not, they may have changed)."""
        energy, opened = self.sde.energy, self._open
        e1 = self.energy_now(f"E{g}_end")
        work = Temporary(f"W{g}")
        self.statements.append(Let(work, (e1 - opened.energy) / energy.kT))
        merges = self._merges(opened)
        uniform = NoiseSymbol(f"u_{g}")
        self.statements.append(Metropolis(g, opened.saved, energy.momenta, work, uniform, merges))
        for b in opened.saved:
            self.versions[b] += 1
        self._record_merges(merges)

    def energy_now(self, name: str) -> Temporary:
        """Emit the energy per walker at the current state (fresh or provably current fields)."""
        expr = self.sde.energy.expression()
        repl = {}
        for app in sorted(field_applications(expr), key=sympy.default_sort_key):
            f, out = field_of(app)
            repl[app] = self.value_of(f, tuple(app.args[: len(f.depends)]), None)[out]
        tmp = Temporary(name)
        self.statements.append(Let(tmp, expr.xreplace(repl)))
        return tmp

    def _merges(self, opened: _OpenGroup) -> tuple[Merge, ...]:
        """Field values valid after the test: the evaluation at the group's end where accepted,
        the one at its start where rejected."""
        end = dict(self.versions)
        momenta = set(self.sde.energy.momenta)
        merges = []
        for f in dict.fromkeys(rec.stmt.field for rec in self.records):
            deps = f.depends
            if f.time or not set(deps) & set(opened.saved) or set(deps) & momenta:
                continue  # untouched by the test, or not recoverable after a momentum flip
            at_end = self._latest(f, deps, end)
            at_start = self._latest(f, deps, opened.start)
            if at_end is None or at_start is None:
                continue
            n = self.serial()
            outs = tuple(FieldValue(f"{o.name}_m{n}") for o in at_end.stmt.outs)
            merges.append(Merge(f, outs, deps, at_end.stmt.outs, at_start.stmt.outs))
        return tuple(merges)

    def _record_merges(self, merges: tuple[Merge, ...]) -> None:
        """Merged values are current after the test: reusable like evaluations."""
        for m in merges:
            vers = tuple(self.versions[b] for b in m.args)
            key = (m.field, tuple(zip(m.args, vers)), None)
            rec = _EvalRecord(m, len(self.statements), key, None, vers)  # type: ignore[arg-type]
            self.records.append(rec)

    def _latest(self, f: Field, deps: tuple, vers: dict[Block, int]) -> _EvalRecord | None:
        """The latest evaluation of ``f`` at its own dependencies with the given versions."""
        key = (f, tuple((b, vers[b]) for b in deps), None)
        for rec in reversed(self.records):
            if rec.key == key:
                return rec
        return None

    # -- pass 5: history (multistep chains) and carry ----------------------------------------

    def history_values(
        self, k: int, exprs: list[sympy.Expr]
    ) -> tuple[dict[sympy.Expr, Values], dict[tuple, FieldValue]]:
        """Evaluate every lagged field application of sub-step ``k`` at the slice start and
        emit a :class:`Recall` for each of its past values.

        Returns the current evaluation of each lagged application and the past values by
        ``(application, lag)``; all outputs of one evaluation share one history."""
        current: dict[sympy.Expr, Values] = {}
        past: dict[tuple, FieldValue] = {}
        depths = _lag_depths(exprs)
        for (f, full), d in sorted(depths.items(), key=lambda kv: (kv[0][0].name, str(kv[0][1]))):
            chain = _HistoryChain(k, f, self._lagged_current(f, full))
            apps = [f.apply(i, full) for i in range(len(f.outputs))]
            for app in apps:
                current[app] = chain.current
            for j in range(1, d + 1):
                lag_outs = self._recall(chain, j)
                for i, app in enumerate(apps):
                    past[(app, j)] = lag_outs[i]
            self.chains.append(chain)
        return current, past

    def _lagged_current(self, f: Field, full: tuple) -> Values:
        """This step's value of a lagged application (its history starts here)."""
        n_dep = len(f.depends)
        args = tuple(full[:n_dep])
        if not all(isinstance(a, Block) for a in args):
            raise WordError(
                f"a multistep solver reads past values of field {f.name} at {args}, which are "
                "not the state blocks at the start of its slice"
            )
        label = sympy.expand(full[n_dep]) if f.time else None
        return self.value_of(f, args, label)

    def _recall(self, chain: _HistoryChain, j: int) -> Values:
        """Emit the recall of ``chain``'s value ``j`` steps ago (slot assigned later)."""
        lag_outs = tuple(FieldValue(f"{o.name}_lag{j}") for o in chain.current)
        chain.lags.append(lag_outs)
        chain.recalls.append(len(self.statements))
        self.statements.append(Recall(lag_outs, -1, chain.current, j))
        return lag_outs

    def assign_history(self, program: Program) -> None:
        """Carry slots of the multistep histories: ``current, lag 1, ..., lag r-1`` after the
        first-same-as-last slots; lag ``j`` of the next step reads slot ``base + j - 1``."""
        for chain in self.chains:
            base = len(program.carry)
            lags = chain.lags
            program.carry.extend([chain.current, *lags[:-1]])
            slots = tuple(range(base, base + len(lags)))
            for j, (i, slot) in enumerate(zip(chain.recalls, slots), start=1):
                old = program.statements[i]
                program.statements[i] = Recall(old.outs, slot, old.like, j)
            program.history.append(
                HistoryInfo(chain.substep, chain.field, chain.current, tuple(lags), slots)
            )

    def mark_carry(self, program: Program) -> None:
        """First-same-as-last: carry a field value to the next step when it is provably
        current."""
        by_field: dict[Field, list[_EvalRecord]] = {}
        for rec in self.records:
            by_field.setdefault(rec.stmt.field, []).append(rec)
        for f, recs in by_field.items():
            first, last = recs[0], recs[-1]
            if not self._carries(f, first, last):
                continue
            slot = len(program.carry)
            program.carry.append(last.stmt.outs)
            i = program.statements.index(first.stmt)
            program.statements[i] = Eval(f, first.stmt.outs, first.stmt.args, slot)

    def _carries(self, f: Field, first: _EvalRecord, last: _EvalRecord) -> bool:
        """Whether ``last`` (the step's final value of ``f``) stands for ``first`` (its first
        evaluation, on the start state) at the next step: same arguments, versions final, and
        for a time-dependent field the label shifted by exactly one step."""
        n_dep = len(f.depends)
        if any(v != 0 for v in first.versions) or not all(
            isinstance(a, Block) for a in first.stmt.args[:n_dep]
        ):
            return False
        if any(v is None or v != self.versions[b] for b, v in zip(f.depends, last.versions)):
            return False
        if tuple(last.stmt.args[:n_dep]) != tuple(f.depends):
            return False
        if f.time:
            l0, l1 = first.label, last.label
            if h in l0.free_symbols or sympy.simplify(l1 - l0.xreplace({t: t + h})) != 0:
                return False
        return True


class _Lowering:
    """Lowers the expressions of one occurrence: slice-local names, past values of a multistep
    solver, per-walker selected evaluations, flow maps (one evaluation per map and arguments),
    and field applications (through :meth:`ProgramBuilder.value_of`)."""

    def __init__(
        self,
        builder: ProgramBuilder,
        rename: dict[sympy.Basic, sympy.Basic],
        current: dict[sympy.Expr, Values],
        past: dict[tuple, FieldValue],
    ) -> None:
        self.builder = builder
        self.rename = rename
        self.current = current
        self.past = past
        self.maps: dict[tuple, Values] = {}
        self.selected: dict[tuple, Values] = {}

    def lower(self, e: sympy.Expr) -> sympy.Expr:
        e = e.xreplace(self.rename)
        special = self._special(e)
        if special:
            e = e.xreplace(special)
        apps = sorted(field_applications(e), key=sympy.default_sort_key)
        if not apps:
            return e
        return e.xreplace({app: self._application(app) for app in apps})

    def _special(self, e: sympy.Expr) -> dict[sympy.Basic, sympy.Basic]:
        """Lagged applications (recalled values) and selections (masked evaluations)."""
        special: dict[sympy.Basic, sympy.Basic] = {}
        for node in lagged_applications(e):
            special[node] = self.past[(node.application, node.lag)]
        for node in sorted(selected_applications(e), key=sympy.default_sort_key):
            special[node] = self.masked(node)[field_of(node.application)[1]]
        return special

    def _application(self, app: sympy.Expr) -> sympy.Expr:
        f, out = field_of(app)
        if isinstance(f, FlowMap):
            return self.flow_map(f, app.args)[out]
        if app in self.current:
            return self.current[app][out]
        n_dep = len(f.depends)
        label = sympy.expand(app.args[n_dep]) if f.time else None
        return self.builder.value_of(f, tuple(app.args[:n_dep]), label)[out]

    def flow_map(self, f: FlowMap, args: tuple) -> Values:
        """One evaluation per flow map and sub-step (its outputs share it); never reused."""
        args = tuple(sympy.expand(a) for a in args)
        if (f, args) not in self.maps:
            n = self.builder.serial()
            outs = tuple(FieldValue(f"{f.name}_{o}_{n}") for o in f.outputs)
            self.builder.statements.append(Eval(f, outs, args))
            self.maps[(f, args)] = outs
        return self.maps[(f, args)]

    def masked(self, node: Selected) -> Values:
        """A per-walker selected evaluation: one per field, arguments and selection (its
        outputs share it), never reused across sub-steps."""
        f, _ = field_of(node.application)
        args = tuple(sympy.expand(a) for a in node.application.args)
        key = (f, args, node.mask)
        if key not in self.selected:
            b = self.builder
            outs = tuple(FieldValue(_value_name(f, o, f"sel{b.serial()}")) for o in f.outputs)
            b.statements.append(Eval(f, outs, args, mask=node.mask))
            self.selected[key] = outs
        return self.selected[key]


def _rational(x: Fraction) -> sympy.Rational:
    return sympy.Rational(x.numerator, x.denominator)


def _value_name(f: Field, output: str, tag: str) -> str:
    """Name of an output value: ``F_3``, or ``F_x_3`` for a field with several outputs."""
    return f"{f.name}{'_' + output if len(f.outputs) > 1 else ''}_{tag}"


def _reuse_key(
    f: Field, args: tuple[sympy.Expr, ...], vers: tuple[int | None, ...], label: sympy.Expr | None
) -> tuple:
    return (f, tuple(zip(args, vers)), label)


def _direct_fields(solver: Solver) -> list[Field]:
    """Fields a solver's update applies directly (not inside a flow map)."""
    out: list[Field] = []
    for app in sorted(solver.update.field_applications, key=str):
        f = field_of(app)[0]
        if not isinstance(f, FlowMap) and f not in out:
            out.append(f)
    return out


def _has_flow_map(solver: Solver) -> bool:
    return any(isinstance(field_of(a)[0], FlowMap) for a in solver.update.field_applications)


def _lag_depths(exprs: list[sympy.Expr]) -> dict[tuple[Field, tuple], int]:
    """The deepest lag read of each lagged field application, by (field, arguments)."""
    depth: dict[tuple[Field, tuple], int] = {}
    for e in exprs:
        for node in lagged_applications(e):
            f, _ = field_of(node.application)
            key = (f, node.application.args)
            depth[key] = max(depth.get(key, 0), node.lag)
    return depth


def _group_text(word: Word, idx: tuple[int, ...]) -> str:
    counts = word.counts
    return " ".join(
        word[i].letter
        if word[i].weight == Fraction(1, counts[word[i].letter])
        else f"{word[i].letter}[{word[i].weight}]"
        for i in idx
    )


def _weighted_runs(word: Word, idx: tuple[int, ...]) -> list[list]:
    """The group's letters with adjacent repeats merged, weights summed (``B[1/3] B[1/3]`` is
    ``B[2/3]``): a reversible proposal reads the same backwards."""
    items: list[list] = []
    for i in idx:
        o = word[i]
        if items and items[-1][0] == o.letter:
            items[-1][1] += o.weight
        else:
            items.append([o.letter, o.weight])
    return items
