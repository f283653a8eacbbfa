r"""Symbolic expressions of the state lowered to one torch function.

Some consumers need a flow's *vector field* rather than a solver's update: the torchsde view
of an SDE (drift :math:`f(z, t)` and noise :math:`g(z, t)`) and the flow maps that integrate a
deterministic flow numerically (:mod:`splitsde.symbolic.flowmap`). This module lowers a list
of expressions in blocks, parameters, ``t`` and fields with the same machinery as the step
programs (:mod:`splitsde.compose.codegen`): state-free sub-expressions are hoisted into float64
coefficients (architecture rule 8), the rest is printed as torch code by the step printer, and
every field application becomes one call of a given callable -- which counts it (rule 6).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import sympy
import torch

from splitsde.compose.codegen import _Hoister, _Printer
from splitsde.symbolic.field import Field, field_applications, field_of
from splitsde.symbolic.parse import as_expression
from splitsde.symbolic.spellings import lambdify as _spell_lambdify
from splitsde.symbolic.symbols import (
    Block,
    Coefficient,
    FieldValue,
    Parameter,
    Temporary,
    h,
    t,
)

__all__ = ["ExpressionFunction", "lower_expressions"]


def broadcast_like(value: Any, like: torch.Tensor) -> torch.Tensor:
    """``value`` (a tensor or a number) as a tensor with the shape, dtype and device of
    ``like`` (state-free expressions such as an additive noise come out as numbers)."""
    if isinstance(value, torch.Tensor) and value.shape == like.shape:
        return value
    v = torch.as_tensor(value, dtype=like.dtype, device=like.device)
    return torch.broadcast_to(v, like.shape)


class ExpressionFunction:
    """``fn(inputs, t) -> [tensor per expression]``: the lowered expressions.

    ``inputs`` are the values of the input blocks (in the order given to
    :func:`lower_expressions`), ``t`` the time as a Python float. Each result has the shape of
    the input block named by ``like``.
    """

    def __init__(
        self,
        source: str,
        fn: Callable[..., list[torch.Tensor]],
        coefficients: list[tuple[Coefficient, sympy.Expr]],
        coefficient_fns: list[Callable[..., Any]],
        param_values: list[float],
        fields: tuple[Field, ...],
    ) -> None:
        self.source = source
        self._fn = fn
        self.coefficients = coefficients
        self._coef_fns = coefficient_fns
        self._pv = param_values
        self.fields = fields
        timed = [t in e.free_symbols for _, e in coefficients]
        self._timed = timed
        self._constant = self._evaluate(0.0) if not any(timed) else None

    def _evaluate(self, time: float) -> list[float]:
        out = []
        for (_, e), fn in zip(self.coefficients, self._coef_fns):
            with np.errstate(all="ignore"):
                v = float(fn(time, *self._pv))
            if not math.isfinite(v):
                raise ValueError(f"coefficient {sympy.sstr(e)} is not finite at t = {time:.6g}")
            out.append(v)
        return out

    def __call__(self, inputs: Sequence[torch.Tensor], time: float) -> list[torch.Tensor]:
        coefs = self._constant if self._constant is not None else self._evaluate(float(time))
        return self._fn(tuple(inputs), float(time), coefs)


def lower_expressions(
    exprs: Sequence[sympy.Expr],
    inputs: Sequence[Block],
    params: Mapping[Parameter, Any],
    fields: Mapping[Field, Callable[..., Any]],
    like: Sequence[Block],
) -> ExpressionFunction:
    """Lower ``exprs`` (in the blocks ``inputs``, parameters, ``t`` and fields) to torch.

    ``params`` maps parameters to numbers (float64 coefficients) or tensors (kept as tensors and
    broadcast against the blocks); ``fields`` maps every field the expressions apply to the
    callable that evaluates it (and counts the evaluation); ``like`` gives, per expression, the
    input block whose shape the result has. Each distinct field application is evaluated once
    per call.
    """
    inputs = tuple(inputs)
    if len(like) != len(exprs):
        raise ValueError("give one 'like' block per expression")
    for b in like:
        if b not in inputs:
            raise ValueError(f"'like' block {b} is not an input")
    exprs = [as_expression(e, "lower_expressions") for e in exprs]
    if any(h in e.free_symbols for e in exprs):
        raise ValueError("a vector field cannot depend on the step length h")
    used = set().union(*(e.free_symbols for e in exprs)) if exprs else set()
    stray = {b for b in used if isinstance(b, Block) and b not in inputs}
    if stray:
        raise ValueError(f"expressions read block(s) {sorted(map(str, stray))} not among inputs")

    names: dict[sympy.Basic, str] = {t: "t"}
    for b in inputs:
        names[b] = f"b_{b.name}"
    scalar_ps = sorted(
        (p for p in params if not isinstance(params[p], torch.Tensor)), key=lambda p: p.name
    )
    tensor_subs: dict[Parameter, Temporary] = {}
    namespace: dict[str, Any] = {"torch": torch, "math": math, "_like": broadcast_like}
    for p, v in params.items():
        if isinstance(v, torch.Tensor):
            sym = Temporary(f"P_{p.name}")
            tensor_subs[p] = sym
            names[sym] = f"P_{p.name}"
            namespace[f"P_{p.name}"] = v
    missing = {
        s for s in used if isinstance(s, Parameter) and s not in params and s not in tensor_subs
    }
    if missing:
        raise ValueError(f"missing value(s) for parameter(s) {sorted(map(str, missing))}")

    # one call per distinct field application
    calls: list[tuple[Field, tuple[sympy.Expr, ...], tuple[FieldValue, ...]]] = []
    repl: dict[sympy.Expr, sympy.Expr] = {}
    seen: dict[tuple, tuple[FieldValue, ...]] = {}
    apps = sorted(set().union(*(field_applications(e) for e in exprs)), key=sympy.default_sort_key)
    for app in apps:
        f, out = field_of(app)
        if f not in fields:
            raise ValueError(f"no callable for field {f.name}")
        key = (f, app.args)
        if key not in seen:
            outs = tuple(FieldValue(f"{f.name}_{o}_{len(calls)}") for o in f.outputs)
            seen[key] = outs
            calls.append((f, tuple(app.args), outs))
            for o in outs:
                names[o] = f"v{len(names)}"
        repl[app] = seen[key][out]

    hz = _Hoister()
    lowered = [hz.hoist(e.xreplace(tensor_subs).xreplace(repl)) for e in exprs]
    coefficients = [(c, e) for c, e, _ in hz.order]
    for i, (c, _) in enumerate(coefficients):
        names[c] = f"_C[{i}]"
    coef_fns = [_spell_lambdify([t, *scalar_ps], e, "numpy") for _, e in coefficients]
    pr = _Printer(names)
    field_list: list[Field] = []
    lines = [
        "def _vector_field(_inputs, t, _C):",
        f"    {', '.join(names[b] for b in inputs)}, = _inputs",
    ]
    for f, args, outs in calls:
        if f not in field_list:
            field_list.append(f)
        i = field_list.index(f)
        namespace[f"_f{i}"] = fields[f]
        lhs = ", ".join(names[o] for o in outs) + ("," if len(outs) > 1 else "")
        lines.append(f"    {lhs} = _f{i}({', '.join(pr(a) for a in args)})")
    results = ", ".join(f"_like({pr(e)}, {names[b]})" for e, b in zip(lowered, like))
    lines.append(f"    return [{results}]")
    source = "\n".join(lines)
    exec(compile(source, "<splitsde vector field>", "exec"), namespace)
    return ExpressionFunction(
        source,
        namespace["_vector_field"],
        coefficients,
        coef_fns,
        [float(params[p]) for p in scalar_ps],
        tuple(field_list),
    )
