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

import sympy

from splitsde.compose.reduce import Reduction
from splitsde.compose.visitor import StatementVisitor
from splitsde.compose.word import Occurrence, Word
from splitsde.symbolic.field import Field
from splitsde.symbolic.flowmap import FlowMap
from splitsde.symbolic.solve import Solver
from splitsde.symbolic.symbols import (
    Block,
    Coefficient,
    FieldValue,
    NoiseSymbol,
    Temporary,
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


