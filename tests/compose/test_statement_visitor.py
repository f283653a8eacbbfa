"""The statement visitor is exhaustive, and every program reader refuses the kinds it cannot
handle instead of skipping them."""

from __future__ import annotations

import dataclasses
import inspect
import typing

import pytest
import sympy

from splitsde.analysis.symbolic import SymbolicError, symbolic_step
from splitsde.compose import program as program_module
from splitsde.compose.program import Draw, Eval, GroupBegin, Metropolis, Recall, Statement
from splitsde.compose.visitor import (
    STATEMENT_METHODS,
    StatementVisitor,
    UnsupportedStatementError,
    computed_expressions,
    draws_by_substep,
)
from splitsde.compose.word import WordError
from splitsde.symbolic.symbols import NoiseSymbol

#: Dataclasses of the program module that are not statements of the step.
NOT_STATEMENTS = {
    "GroupInfo",
    "HistoryInfo",
    "Merge",  # part of a Metropolis statement
    "Program",
    "ProgramCoefficient",
    "SubstepInfo",
}


def test_dispatch_table_covers_exactly_the_statement_kinds():
    kinds = {c.__name__ for c in typing.get_args(Statement)}
    assert set(STATEMENT_METHODS) == kinds
    for name in kinds:
        method = getattr(StatementVisitor, STATEMENT_METHODS[name], None)
        assert callable(method), f"StatementVisitor has no {STATEMENT_METHODS[name]} for {name}"
    # a public dataclass of the program module is either a statement or listed as not one
    public = {
        n
        for n in program_module.__all__
        if inspect.isclass(getattr(program_module, n))
        and dataclasses.is_dataclass(getattr(program_module, n))
    }
    assert public - NOT_STATEMENTS == kinds


def test_base_visitor_refuses_every_kind_naming_reader_and_kind():
    class Reader(StatementVisitor[None]):
        consumer = "the test reader"

    program = _langevin_program("{BAB}O")
    seen = set()
    for s in program.statements:
        with pytest.raises(UnsupportedStatementError, match=f"the test reader.*{type(s).__name__}"):
            Reader().visit(s)
        seen.add(type(s).__name__)
    assert {"Eval", "Draw", "Let", "Assign", "Mark", "GroupBegin", "Metropolis"} <= seen


def test_unknown_statement_kind_is_an_error():
    @dataclasses.dataclass(frozen=True)
    class Jump:
        target: int

    class Reader(StatementVisitor[None]):
        consumer = "the test reader"
        visit_eval = visit_draw = visit_recall = visit_let = StatementVisitor.skip
        visit_assign = visit_mark = visit_group_begin = visit_metropolis = StatementVisitor.skip

    with pytest.raises(UnsupportedStatementError, match=r"the test reader: unknown .* Jump"):
        Reader().visit(Jump(3))
    program = _langevin_program("BAOAB")
    with pytest.raises(UnsupportedStatementError, match="unknown statement kind Jump"):
        program.statements.append(Jump(0))
        program.listing()


def _langevin_program(word: str):
    from splitsde.backends.openmm_program import langevin_program

    return langevin_program(word)


def test_computed_expressions_and_draws_by_substep():
    program = _langevin_program("BAOAB")
    lets_assigns = [s for s in program.statements if type(s).__name__ in ("Let", "Assign")]
    exprs = [e for s in program.statements for e in computed_expressions(s)]
    assert exprs == [e for s in lets_assigns for e in getattr(s, "exprs", None) or (s.expr,)]
    ((draw, k),) = draws_by_substep(program.statements)
    assert isinstance(draw, Draw) and program.substeps[k].letter == "O"


# ---------------------------------------------------------------------------------------------
# OpenMM: kinds it cannot express are refused (they used to be skipped)
# ---------------------------------------------------------------------------------------------
def _translate(program):
    from splitsde.backends.openmm_program import _Build, _Translator

    _Translator(program, _Build(), "0.5*m*v*v", measure=False).run()


def test_openmm_translates_metropolized_words():
    pytest.importorskip("openmm")
    program = _langevin_program("{BAB}O")
    _translate(program)  # GroupBegin and Metropolis are supported


def test_openmm_refuses_a_recalled_past_value():
    program = _langevin_program("BAOAB")
    ev = next(s for s in program.statements if isinstance(s, Eval))
    past = tuple(sympy.Symbol(f"{o}_past") for o in ev.outs)
    recall = Recall(outs=past, slot=0, like=ev.outs, lag=1)
    stmts = list(program.statements)
    stmts.insert(stmts.index(ev) + 1, recall)
    with pytest.raises(WordError, match=r"OpenMM backend does not support Recall.*1 step\(s\) ago"):
        _translate(dataclasses.replace(program, statements=stmts))


def test_openmm_refuses_random_selections():
    program = _langevin_program("BAOAB")
    q = program.blocks[0]
    u = NoiseSymbol("u_sel")
    uniform = Draw(u, q, sympy.Symbol("t"), sympy.Symbol("t"), kind="uniform")
    with pytest.raises(WordError, match=r"does not support Draw.*uniform draw u_sel"):
        _translate(dataclasses.replace(program, statements=[uniform, *program.statements]))
    ev = next(s for s in program.statements if isinstance(s, Eval))
    masked = dataclasses.replace(ev, mask=(u, sympy.Integer(0), sympy.Rational(1, 2)))
    stmts = [masked if s is ev else s for s in program.statements]
    with pytest.raises(WordError, match=r"does not support Eval.*random selection"):
        _translate(dataclasses.replace(program, statements=stmts))


# ---------------------------------------------------------------------------------------------
# Symbolic analysis: Metropolized groups are refused with the analysis' own error
# ---------------------------------------------------------------------------------------------
def test_symbolic_analysis_refuses_metropolized_groups():
    program = _langevin_program("{BAB}O")
    assert any(isinstance(s, GroupBegin) for s in program.statements)
    assert any(isinstance(s, Metropolis) for s in program.statements)
    with pytest.raises(SymbolicError, match="symbolic analysis does not support GroupBegin"):
        symbolic_step(program)


def test_symbolic_analysis_refuses_recalled_values_and_selections():
    from splitsde.analysis.symbolic import _execute

    program = _langevin_program("BAOAB")
    ev = next(s for s in program.statements if isinstance(s, Eval))
    recall = Recall(outs=(sympy.Symbol("F_past"),), slot=0, like=ev.outs, lag=1)
    with pytest.raises(SymbolicError, match=r"does not support Recall.*multistep"):
        _execute(dataclasses.replace(program, statements=[recall, *program.statements]))
    q = program.blocks[0]
    uniform = Draw(NoiseSymbol("u_sel"), q, sympy.Symbol("t"), sympy.Symbol("t"), kind="uniform")
    with pytest.raises(SymbolicError, match=r"does not support Draw.*randomized"):
        _execute(dataclasses.replace(program, statements=[uniform, *program.statements]))
