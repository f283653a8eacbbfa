r"""One exhaustive walk over the statements of a step :class:`~splitsde.compose.program.Program`.

Every reader of the step program (the torch lowering, the listing, the OpenMM translation, the
exact analyses, the run-time shape checks) subclasses :class:`StatementVisitor` and overrides a
``visit_<kind>`` method for each statement kind it understands. The base class answers every
kind it is not told about with :class:`UnsupportedStatementError`, naming the reader and the
kind, so a new statement kind -- or an old one reaching a reader that never met it -- is refused
where it arrives instead of being skipped. A reader that deliberately has nothing to do for a
kind says so with :meth:`StatementVisitor.skip`.

Dispatch is on the statement's class name (this module sits below
:mod:`splitsde.compose.program`, which uses it for its listing); :data:`STATEMENT_METHODS` is
the table, and a test checks it against the statement kinds the program module defines.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar, Generic, NoReturn, TypeVar

from splitsde.base.errors import SplitsdeError

__all__ = [
    "STATEMENT_METHODS",
    "StatementVisitor",
    "UnsupportedStatementError",
    "computed_expressions",
    "draws_by_substep",
]

R = TypeVar("R")

#: Statement class name -> visitor method. Exactly the kinds of ``program.Statement``.
STATEMENT_METHODS: dict[str, str] = {
    "Eval": "visit_eval",
    "Draw": "visit_draw",
    "Recall": "visit_recall",
    "Let": "visit_let",
    "Assign": "visit_assign",
    "Mark": "visit_mark",
    "GroupBegin": "visit_group_begin",
    "Metropolis": "visit_metropolis",
}


class UnsupportedStatementError(SplitsdeError, ValueError):
    """A reader of a step program met a statement kind it does not support."""


class StatementVisitor(Generic[R]):
    """Base of every reader of a step program: ``visit(s)`` calls ``visit_<kind>(s)``.

    Subclasses set :attr:`consumer` (how errors name the reader) and may set :attr:`error` (the
    exception type a refusal raises, e.g. the reader's own error class)."""

    consumer: ClassVar[str] = "this program reader"
    error: ClassVar[type[Exception]] = UnsupportedStatementError

    def visit(self, stmt: Any) -> R:
        name = STATEMENT_METHODS.get(type(stmt).__name__)
        if name is None:
            raise UnsupportedStatementError(
                f"{self.consumer}: unknown statement kind {type(stmt).__name__} ({stmt!r})"
            )
        return getattr(self, name)(stmt)

    def walk(self, statements: Iterable[Any]) -> list[R]:
        """Visit every statement in order; the results in a list."""
        return [self.visit(s) for s in statements]

    def refuse(self, stmt: Any, reason: str = "") -> NoReturn:
        """Raise :attr:`error` naming the reader, the statement kind and ``reason``."""
        raise self.error(
            f"{self.consumer} does not support {type(stmt).__name__} statements"
            + (f": {reason}" if reason else f" ({stmt!r})")
        )

    def skip(self, stmt: Any) -> Any:
        """For kinds a reader deliberately ignores: do nothing (returns ``None``)."""
        return None

    def visit_eval(self, stmt: Any) -> R:
        self.refuse(stmt)

    def visit_draw(self, stmt: Any) -> R:
        self.refuse(stmt)

    def visit_recall(self, stmt: Any) -> R:
        self.refuse(stmt)

    def visit_let(self, stmt: Any) -> R:
        self.refuse(stmt)

    def visit_assign(self, stmt: Any) -> R:
        self.refuse(stmt)

    def visit_mark(self, stmt: Any) -> R:
        self.refuse(stmt)

    def visit_group_begin(self, stmt: Any) -> R:
        self.refuse(stmt)

    def visit_metropolis(self, stmt: Any) -> R:
        self.refuse(stmt)


class _Computed(StatementVisitor[tuple]):
    """The right-hand sides a statement computes (``Let`` and ``Assign``; none elsewhere)."""

    consumer = "the computed-expression listing"

    def visit_let(self, stmt: Any) -> tuple:
        return (stmt.expr,)

    def visit_assign(self, stmt: Any) -> tuple:
        return tuple(stmt.exprs)

    def _none(self, stmt: Any) -> tuple:
        return ()

    visit_eval = visit_draw = visit_recall = visit_mark = _none
    visit_group_begin = visit_metropolis = _none


_COMPUTED = _Computed()


def computed_expressions(stmt: Any) -> tuple:
    """The expressions ``stmt`` computes: a ``Let``'s value, an ``Assign``'s new block values;
    ``()`` for every other statement kind."""
    return _COMPUTED.visit(stmt)


class _DrawSubsteps(StatementVisitor[None]):
    """Every ``Draw`` with the index of the sub-step it belongs to (the sub-step a ``Mark``
    closes next)."""

    consumer = "the draw listing"

    def __init__(self) -> None:
        self.out: list[tuple[Any, int]] = []
        self.substep = 0

    def visit_draw(self, stmt: Any) -> None:
        self.out.append((stmt, self.substep))

    def visit_mark(self, stmt: Any) -> None:
        self.substep = stmt.substep + 1

    # a Metropolis test draws its uniform itself, outside any sub-step
    visit_eval = visit_recall = visit_let = visit_assign = StatementVisitor.skip
    visit_group_begin = visit_metropolis = StatementVisitor.skip


def draws_by_substep(statements: Iterable[Any]) -> list[tuple[Any, int]]:
    """``(draw, sub-step index)`` for every ``Draw`` statement (normal and uniform), in program
    order."""
    v = _DrawSubsteps()
    v.walk(statements)
    return v.out
