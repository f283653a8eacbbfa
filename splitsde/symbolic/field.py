r"""Opaque fields: forces, score networks, any function the algebra cannot see into.

A :class:`Field` is declared by the blocks (and whether the time) it depends on; symbolically it
is an undefined sympy function applied to those blocks, e.g. :math:`F(q)` or
:math:`s_x(x, m, t)`. It is bound to a torch callable only when a word is lowered, and every
real call of that callable goes through the integrator's NFE counter.

A field may have several outputs computed by one call (a score network on ``(x, m)`` returns
both :math:`s_x` and :math:`s_m`): one evaluation, several components.

A field may carry a symbolic ``definition`` (for a harmonic force :math:`F(q) = -\omega^2 q`).
The exact analysis uses it, and a field with a definition needs no callable at lowering time.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import sympy
from sympy.core.function import AppliedUndef

from splitsde.symbolic.parse import as_expression
from splitsde.symbolic.symbols import Block, _check_name, t

__all__ = ["Field", "field_applications", "field_of"]


class Field:
    """An opaque function of some blocks (and possibly time), with one or more outputs.

    Parameters
    ----------
    name:
        Identifier of the field, unique within an SDE (``"F"``, ``"score"``).
    depends:
        The blocks the field reads, in the order its callable receives them.
    time:
        Whether the field also depends on time; the callable then receives ``t`` (a Python
        float) after the blocks.
    outputs:
        Names of the outputs of one call. Default: a single output named like the field.
        Outputs named after a block have that block's shape.
    like:
        For each output, the block whose shape it has (default: the block of the same name,
        otherwise the first dependency).
    definition:
        Optional symbolic definition, an expression (single output) or a mapping
        ``output -> expression`` in the dependency blocks and ``t``. Text is parsed by
        :func:`splitsde.parse_expression` with the dependencies (and ``t``) as its only names.
    """

    def __init__(
        self,
        name: str,
        depends: Sequence[Block],
        *,
        time: bool = False,
        outputs: Sequence[str | Block] | None = None,
        like: Sequence[Block] | None = None,
        definition: Any = None,
        description: str = "",
    ) -> None:
        _check_name(name, "field")
        self.name = name
        self.depends: tuple[Block, ...] = tuple(depends)
        for b in self.depends:
            if not isinstance(b, Block):
                raise TypeError(
                    f"field {name!r} depends on {b!r}, which is not a Block; "
                    "declare state blocks with splitsde.blocks(...)"
                )
        if not self.depends and not time:
            raise ValueError(f"field {name!r} depends on nothing; a constant is a Parameter")
        self.time = bool(time)
        outs = [name] if outputs is None else [str(o) for o in outputs]
        if len(set(outs)) != len(outs) or not outs:
            raise ValueError(f"field {name!r}: outputs must be distinct and non-empty, got {outs}")
        self.outputs: tuple[str, ...] = tuple(outs)
        by_name = {b.name: b for b in self.depends}
        if like is None:
            like = [by_name.get(o, self.depends[0] if self.depends else None) for o in outs]
        self.like: tuple[Block | None, ...] = tuple(like)
        if len(self.like) != len(self.outputs):
            raise ValueError(f"field {name!r}: 'like' needs one block per output")
        self.description = description
        self._functions = tuple(
            sympy.Function(
                name if outputs is None else f"{name}_{o}",
                real=True,
                splitsde_field=self,
                splitsde_output=i,
            )
            for i, o in enumerate(outs)
        )
        self.definition: dict[str, sympy.Expr] | None = None
        if definition is not None:
            self.definition = self._check_definition(definition)

    # -- symbolic use -------------------------------------------------------------------------
    @property
    def args(self) -> tuple[sympy.Expr, ...]:
        """The symbolic arguments of an application: the dependency blocks, then ``t``."""
        return (*self.depends, t) if self.time else self.depends

    def __call__(self, *args: sympy.Expr) -> sympy.Expr:
        """The (single-output) field applied to its dependencies: ``F()`` or ``F(q)``."""
        if len(self.outputs) != 1:
            raise TypeError(
                f"field {self.name!r} has outputs {self.outputs}; use field[{self.outputs[0]!r}]"
            )
        return self.apply(0, args or None)

    def __getitem__(self, output: str | Block) -> sympy.Expr:
        """One output of a multi-output field applied to its dependencies: ``s["x"]``."""
        key = str(output)
        if key not in self.outputs:
            raise KeyError(f"field {self.name!r} has no output {key!r}; outputs: {self.outputs}")
        return self.apply(self.outputs.index(key))

    def apply(self, output: int = 0, args: Sequence[sympy.Expr] | None = None) -> sympy.Expr:
        """Apply output ``output`` to ``args`` (default: the declared dependencies and time)."""
        if args is None:
            args = self.args
        args = tuple(as_expression(a, f"argument of field {self.name!r}") for a in args)
        if len(args) != len(self.args):
            raise TypeError(
                f"field {self.name!r} takes {len(self.args)} argument(s) "
                f"{tuple(map(str, self.args))}, got {len(args)}"
            )
        return self._functions[output](*args)

    def function(self, output: int = 0) -> sympy.FunctionClass:
        return self._functions[output]

    def _check_definition(self, definition: Any) -> dict[str, sympy.Expr]:
        if not isinstance(definition, Mapping):
            if len(self.outputs) != 1:
                raise ValueError(f"field {self.name!r}: give one definition per output")
            definition = {self.outputs[0]: definition}
        out: dict[str, sympy.Expr] = {}
        allowed = set(self.depends) | ({t} if self.time else set())
        for key, expr in definition.items():
            key = str(key)
            if key not in self.outputs:
                raise KeyError(f"field {self.name!r}: definition for unknown output {key!r}")
            expr = as_expression(expr, f"definition of field {self.name!r}", self.args)
            stray = {
                s
                for s in expr.free_symbols
                if (isinstance(s, Block) or s == t) and s not in allowed
            }
            if stray:
                raise ValueError(
                    f"definition of field {self.name!r} uses {sorted(map(str, stray))}, "
                    f"which it does not declare as dependencies"
                )
            out[key] = expr
        missing = set(self.outputs) - set(out)
        if missing:
            raise ValueError(f"field {self.name!r}: definition misses outputs {sorted(missing)}")
        return out

    def defined_output(self, output: int, args: Sequence[sympy.Expr]) -> sympy.Expr:
        """The symbolic definition of an output, evaluated at ``args``."""
        if self.definition is None:
            raise ValueError(f"field {self.name!r} has no symbolic definition")
        expr = self.definition[self.outputs[output]]
        return expr.xreplace(dict(zip(self.args, args)))

    def __repr__(self) -> str:
        deps = ", ".join(map(str, self.args))
        outs = "" if len(self.outputs) == 1 else f" -> {self.outputs}"
        return f"Field({self.name}({deps}){outs})"


def field_of(expr: sympy.Basic) -> tuple[Field, int] | None:
    """``(field, output index)`` if ``expr`` is an applied splitsde field, else ``None``."""
    if isinstance(expr, AppliedUndef):
        f = getattr(expr.func, "splitsde_field", None)
        if f is not None:
            return f, expr.func.splitsde_output
    return None


def field_applications(expr: sympy.Basic) -> set[sympy.Expr]:
    """All applied splitsde fields inside ``expr``."""
    return {a for a in expr.atoms(AppliedUndef) if field_of(a) is not None}
