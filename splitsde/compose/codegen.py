r"""Lowering a step :class:`~splitsde.compose.program.Program` to torch.

Two things happen here, once per run (not per step):

1. **Coefficients.** Every state-free sub-expression of the program (``exp(-gamma h)``,
   ``h/(2M)``, matrix-exponential entries, quadratures) is hoisted into a coefficient and
   evaluated in float64 for every step of the grid (once in total when the grid is uniform and
   the flows autonomous), then cast once to the state dtype (architecture rule 8).
2. **Code.** The program becomes the Python source of one function ``_step`` made of torch
   calls. A block update of the form :math:`y \leftarrow a y + \sum_i b_i x_i` becomes in-place
   ``y.mul_(a); y.add_(x_i, alpha=b_i)`` -- the same operations a hand-written loop performs.
   The source is generated from the program's sympy trees, whose symbol names the library
   itself assigns; no user text reaches it.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import sympy
import torch

from splitsde.base.errors import SplitsdeError
from splitsde.compose.program import (
    Assign,
    Draw,
    Eval,
    GroupBegin,
    Let,
    Mark,
    Metropolis,
    Program,
    Recall,
)
from splitsde.compose.visitor import StatementVisitor
from splitsde.symbolic.energy import ElementSum
from splitsde.symbolic.selection import Indicator
from splitsde.symbolic.spellings import lambdify as _spell_lambdify
from splitsde.symbolic.spellings import spelling
from splitsde.symbolic.symbols import (
    Block,
    Coefficient,
    FieldValue,
    NoiseSymbol,
    Parameter,
    Temporary,
    h,
    t,
)

__all__ = ["CoefficientTable", "LoweredStep", "hoist_program", "indicator", "lower", "select_mask"]

_TENSOR = (Block, FieldValue, NoiseSymbol, Temporary)


def _is_tensor(e: sympy.Basic) -> bool:
    return any(isinstance(s, _TENSOR) for s in e.free_symbols)


# ---------------------------------------------------------------------------------------------
# Hoisting
# ---------------------------------------------------------------------------------------------
class _Hoister:
    def __init__(self) -> None:
        self.defs: dict[sympy.Expr, Coefficient] = {}
        self.order: list[tuple[Coefficient, sympy.Expr, int]] = []
        self.substep = -1

    def coef(self, e: sympy.Expr) -> sympy.Expr:
        if e.is_Number:
            return e
        if isinstance(e, Coefficient):
            return e
        c = self.defs.get(e)
        if c is None:
            c = Coefficient(f"d{len(self.order)}")
            self.defs[e] = c
            self.order.append((c, e, self.substep))
        return c

    def hoist(self, e: sympy.Expr) -> sympy.Expr:
        if not _is_tensor(e):
            return self.coef(e)
        if isinstance(e, sympy.Add | sympy.Mul):
            const = [a for a in e.args if not _is_tensor(a)]
            var = [self.hoist(a) for a in e.args if _is_tensor(a)]
            if const:
                c = self.coef(e.func(*const))
                if not (isinstance(e, sympy.Add) and c == 0) and not (
                    isinstance(e, sympy.Mul) and c == 1
                ):
                    var.insert(0, c)
            if len(var) == 1:
                return var[0]
            return e.func(*var, evaluate=False)
        if e.args:
            return e.func(*[self.hoist(a) for a in e.args], evaluate=False)
        return e


@dataclass
class HoistedProgram:
    """The program's statements with state-free sub-expressions replaced by coefficients."""

    program: Program
    statements: list[Any]
    hoisted: list[tuple[Coefficient, sympy.Expr, int]]


def _linear_combination(e: sympy.Expr) -> sympy.Expr:
    r"""``e`` as :math:`\sum_i c_i T_i` (state-free :math:`c_i`, one tensor symbol each) when it is
    linear in its tensor symbols, else ``e`` unchanged.

    Euler-type updates arrive as :math:`y + h\,(a y + b x + c v)`; collected per tensor they
    lower to in-place ``y.mul_(); y.add_(x, alpha=...)`` instead of a chain of temporaries.
    """
    if not isinstance(e, sympy.Add | sympy.Mul):
        return e
    ex = sympy.expand(e, power_base=False, power_exp=False, log=False, multinomial=False)
    terms: dict[sympy.Expr, sympy.Expr] = {}
    for term in sympy.Add.make_args(ex):
        factors = sympy.Mul.make_args(term)
        tensors = [a for a in factors if _is_tensor(a)]
        if len(tensors) != 1 or not isinstance(tensors[0], _TENSOR):
            return e
        coef = sympy.Mul(*[a for a in factors if not _is_tensor(a)])
        terms[tensors[0]] = terms.get(tensors[0], sympy.Integer(0)) + coef
    return sympy.Add(*[c * s for s, c in terms.items()])


class _HoistStatements(StatementVisitor[Any]):
    """Each statement with its state-free sub-expressions replaced by coefficients."""

    consumer = "the coefficient hoisting of the torch lowering"

    def __init__(self) -> None:
        self.hz = _Hoister()

    def visit_let(self, s: Let) -> Let:
        return Let(s.symbol, self.hz.hoist(s.expr))

    def visit_assign(self, s: Assign) -> Assign:
        self.hz.substep = s.substep
        exprs = tuple(self.hz.hoist(_linear_combination(e)) for e in s.exprs)
        return Assign(s.targets, exprs, s.substep)

    def _unchanged(self, s: Any) -> Any:
        # bounds of draws and masks, and evaluation arguments, are printed as they are
        return s

    visit_eval = visit_draw = visit_recall = visit_mark = _unchanged
    visit_group_begin = visit_metropolis = _unchanged


def hoist_program(program: Program) -> HoistedProgram:
    v = _HoistStatements()
    out = v.walk(program.statements)
    return HoistedProgram(program, out, v.hz.order)


# ---------------------------------------------------------------------------------------------
# Coefficients in float64
# ---------------------------------------------------------------------------------------------
class CoefficientError(SplitsdeError, ValueError):
    """A coefficient is not finite (or not computable) for the given parameters and grid."""


class CoefficientTable:
    """Float64 values of every coefficient of a hoisted program, per step of a grid."""

    def __init__(self, hp: HoistedProgram, params: Mapping[Parameter, Any]) -> None:
        self.hp = hp
        self.params = dict(params)
        self.prog_coefs = hp.program.coefficients
        self.symbols: list[Coefficient] = [pc.symbol for pc in self.prog_coefs] + [
            c for c, _, _ in hp.hoisted
        ]
        P = sorted(self.params, key=str)
        self._P = P
        self._expr_fns = {}
        for pc in self.prog_coefs:
            d = pc.definition
            if d.expr is not None:
                self._expr_fns[pc.symbol] = _spell_lambdify([t, h, *P], d.expr, "numpy")
        prog_syms = [pc.symbol for pc in self.prog_coefs]
        self._hoisted_fns = [
            _spell_lambdify([t, h, *P, *prog_syms], e, "numpy") for _, e, _ in hp.hoisted
        ]
        self.history = max(
            (pc.definition.numeric.history for pc in self.prog_coefs if pc.definition.numeric),
            default=0,
        )
        self.autonomous = self._autonomous()

    def _autonomous(self) -> bool:
        for pc in self.prog_coefs:
            d = pc.definition
            if d.numeric is not None and not d.numeric.autonomous:
                return False
            if d.expr is not None and t in d.expr.free_symbols:
                return False
        return all(t not in e.free_symbols for _, e, _ in self.hp.hoisted)

    def _param_values(self) -> list[Any]:
        vals = []
        for p in self._P:
            v = self.params[p]
            if isinstance(v, torch.Tensor):
                v = v.detach().to("cpu", torch.float64).numpy()
                if v.ndim == 0:
                    v = float(v)
            vals.append(v)
        return vals

    def evaluate(self, t_: np.ndarray, h_: np.ndarray) -> list[np.ndarray]:
        """Coefficient values for steps starting at ``t_`` with lengths ``h_`` (1-D arrays).

        Returns one array per coefficient with leading dimension ``len(t_)`` (trailing
        dimensions from tensor-valued parameters).
        """
        t_ = np.asarray(t_, np.float64)
        h_ = np.asarray(h_, np.float64)
        pv = self._param_values()
        scalar = all(np.ndim(v) == 0 for v in pv)
        if scalar:
            return self._evaluate_rows(t_, h_, pv, slice(None))
        rows = [self._evaluate_rows(t_, h_, pv, slice(i, i + 1)) for i in range(len(t_))]
        return [np.concatenate([r[k] for r in rows], axis=0) for k in range(len(self.symbols))]

    @staticmethod
    def _past_starts(t_: np.ndarray, h_: np.ndarray, offset: float, depth: int) -> np.ndarray:
        """``(n, depth)``: the start of the same slice 1..depth steps earlier (NaN before the
        first step of the grid)."""
        starts = t_ + offset * h_
        out = np.full((len(t_), depth), np.nan)
        for j in range(1, depth + 1):
            out[j:, j - 1] = starts[:-j] if j < len(t_) else starts[:0]
        return out

    def _evaluate_rows(
        self, t_full: np.ndarray, h_full: np.ndarray, pv: list[Any], rows: slice
    ) -> list[np.ndarray]:
        t_, h_ = t_full[rows], h_full[rows]
        n = len(t_)
        pmap = dict(zip(self._P, pv))

        values: dict[Coefficient, np.ndarray] = {}
        groups: dict[tuple[int, Any, Any], dict] = {}
        for pc in self.prog_coefs:
            t0 = t_ + float(pc.offset) * h_
            s = float(pc.weight) * h_
            d = pc.definition
            if d.expr is not None:
                with np.errstate(all="ignore"):
                    values[pc.symbol] = self._expand(self._expr_fns[pc.symbol](t0, s, *pv), n)
            else:
                key = (id(d.numeric), pc.offset, pc.weight)
                if key not in groups:
                    if d.numeric.history:
                        past = self._past_starts(
                            t_full, h_full, float(pc.offset), d.numeric.history
                        )[rows]
                        groups[key] = d.numeric.evaluate(t0, s, pmap, past)
                    else:
                        groups[key] = d.numeric.evaluate(t0, s, pmap)
                values[pc.symbol] = self._expand(groups[key][d.key], n)
        prog_vals = [values[pc.symbol] for pc in self.prog_coefs]
        out = [values[pc.symbol] for pc in self.prog_coefs]
        for fn in self._hoisted_fns:
            with np.errstate(all="ignore"):
                out.append(self._expand(fn(t_, h_, *pv, *prog_vals), n))
        return [np.asarray(o, dtype=np.float64) for o in out]

    @staticmethod
    def _expand(v: Any, n: int) -> np.ndarray:
        a = np.asarray(v, dtype=np.float64)
        if a.ndim == 0:
            return np.full((n,), float(a))
        if a.shape[0] != n:
            return np.broadcast_to(a, (n, *a.shape)).copy()
        return a

    def check_finite(self, values: list[np.ndarray], t_: np.ndarray, h_: np.ndarray) -> None:
        for sym, v in zip(self.symbols, values):
            bad = ~np.isfinite(v)
            if bad.any():
                names = self.describe_symbols()
                i = int(np.argwhere(bad.reshape(len(v), -1).any(axis=1))[0, 0])
                raise CoefficientError(
                    f"coefficient {names[sym]} is not finite at step start t={t_[i]:.6g}, "
                    f"h={h_[i]:.6g} with parameters "
                    + ", ".join(f"{p}={_short(self.params[p])}" for p in self._P)
                )

    def describe_symbols(self) -> dict[Coefficient, str]:
        program = self.hp.program
        names: dict[Coefficient, str] = {}
        for pc in self.prog_coefs:
            names[pc.symbol] = f"{pc.symbol.name} ({pc.definition.method})"
        for c, e, k in self.hp.hoisted:
            where = f" in sub-step {k} ({program.substeps[k].letter})" if k >= 0 else ""
            names[c] = f"{sympy.sstr(e)}{where}"
        return names


def _short(v: Any) -> str:
    if isinstance(v, torch.Tensor) and v.numel() > 1:
        return f"tensor{tuple(v.shape)}"
    return f"{float(v):.6g}"


# ---------------------------------------------------------------------------------------------
# Source generation
# ---------------------------------------------------------------------------------------------
#: Library functions the step namespace binds (elementary functions: :mod:`~splitsde.symbolic.
#: spellings`).
_HELPERS = {ElementSum: "_esum", Indicator: "_ind"}


class _Printer:
    def __init__(self, names: Mapping[sympy.Basic, str]) -> None:
        self.names = names

    def __call__(self, e: sympy.Basic) -> str:
        if e in self.names:
            return self.names[e]
        if e.is_Integer:
            return str(int(e))
        if e.is_Number or e.is_NumberSymbol:
            return repr(float(e))
        if isinstance(e, sympy.Add):
            return "(" + " + ".join(self(a) for a in e.args) + ")"
        if isinstance(e, sympy.Mul):
            args = list(e.args)
            if args and args[0] == -1:
                return (
                    "(-" + self(sympy.Mul(*args[1:], evaluate=False)) + ")"
                    if len(args) > 1
                    else "-1"
                )
            return "(" + " * ".join(self(a) for a in args) + ")"
        if isinstance(e, sympy.Pow):
            b, x = e.args
            tensor = _is_tensor(b)
            if x == sympy.Rational(1, 2):
                return f"{spelling('torch' if tensor else 'math', 'sqrt')}({self(b)})"
            if x == -1:
                return f"torch.reciprocal({self(b)})" if tensor else f"(1.0 / {self(b)})"
            if x == 2:
                return f"torch.square({self(b)})" if tensor else f"({self(b)} ** 2)"
            return f"({self(b)} ** {self(x)})"
        args = ", ".join(self(a) for a in e.args)
        helper = _HELPERS.get(e.func)
        if helper is not None:
            return f"{helper}({args})"
        if isinstance(e, sympy.Function):
            # state-free calls were hoisted into float64 coefficients: this one acts on tensors
            return f"{spelling('torch', e.func.__name__)}({args})"
        raise NotImplementedError(f"cannot lower {e} ({e.func}) to torch")


def _split(term: sympy.Expr) -> tuple[sympy.Expr, sympy.Expr]:
    """``(coefficient part, tensor part)`` of a hoisted product."""
    if isinstance(term, sympy.Mul):
        c = [a for a in term.args if not _is_tensor(a)]
        v = [a for a in term.args if _is_tensor(a)]
        cc = c[0] if len(c) == 1 else sympy.Mul(*c) if c else sympy.Integer(1)
        vv = v[0] if len(v) == 1 else sympy.Mul(*v, evaluate=False)
        return cc, vv
    return sympy.Integer(1), term


@dataclass
class LoweredStep:
    """Generated step functions and what they need at run time."""

    source: str
    fast: Callable
    checked: Callable
    hooked: Callable
    n_draws: int
    n_uniforms: int = 0


def lower(
    hp: HoistedProgram,
    tensor_coefficients: set[Coefficient],
    *,
    inplace: bool = True,
    draws_take_times: bool = False,
    namespace: Mapping[str, Any],
) -> LoweredStep:
    """Generate the step source for a hoisted program and compile its three variants.

    The compiled source is kept on ``hp`` per (tensor coefficients, ``inplace``,
    ``draws_take_times``): a run of the same program only binds its ``namespace`` (fields,
    draws, checks) to it."""
    program = hp.program
    key = (frozenset(tensor_coefficients), inplace, draws_take_times)
    compiled = hp.__dict__.setdefault("_compiled", {})
    if key not in compiled:
        source = _step_source(hp, tensor_coefficients, inplace, draws_take_times)
        compiled[key] = (source, compile(source, "<splitsde step>", "exec"))
    source, code = compiled[key]
    ns: dict[str, Any] = {"torch": torch, "math": __import__("math")}
    ns.update(namespace)
    exec(code, ns)
    return LoweredStep(
        source,
        ns["_step_fast"],
        ns["_step_checked"],
        ns["_step_hooked"],
        len(program.draws),
        len(program.uniforms),
    )


def _step_source(
    hp: HoistedProgram,
    tensor_coefficients: set[Coefficient],
    inplace: bool,
    draws_take_times: bool,
) -> str:
    """The Python source of ``_step_fast``, ``_step_checked`` and ``_step_hooked``."""
    program = hp.program
    names: dict[sympy.Basic, str] = {t: "t", h: "h"}
    for b in program.blocks:
        names[b] = f"b_{b.name}"
    coef_syms = [pc.symbol for pc in program.coefficients] + [c for c, _, _ in hp.hoisted]
    for i, c in enumerate(coef_syms):
        names[c] = f"c{i}"
    _Namer(names).walk(hp.statements)
    pr = _Printer(names)

    def body(mode: str) -> list[str]:
        writer = _BodyWriter(
            program, names, pr, mode, tensor_coefficients, inplace, draws_take_times
        )
        writer.walk(hp.statements)
        return writer.lines

    blocks = ", ".join(names[b] for b in program.blocks)
    head = [f"    {blocks}, = _state"]
    if coef_syms:
        head.append(f"    {', '.join(names[c] for c in coef_syms)}, = _C")
    carry = ", ".join(
        "(" + ", ".join(names[o] for o in outs) + ",)" if len(outs) > 1 else names[outs[0]]
        for outs in program.carry
    )
    ret = f"    return ({blocks},), ({carry}{',' if program.carry else ''})"
    src = []
    for mode in ("fast", "checked", "hooked"):
        src.append(f"def _step_{mode}(_state, _C, _carry, t, h):")
        src.extend(head)
        src.extend("    " + x for x in body(mode))
        src.append(ret)
        src.append("")
    return "\n".join(src)


class _Namer(StatementVisitor[None]):
    """Python names for the values the statements define (``v`` field values, ``n`` draws,
    ``k`` temporaries, ``u`` Metropolis uniforms), in program order."""

    consumer = "the torch lowering (naming)"

    def __init__(self, names: dict[sympy.Basic, str]) -> None:
        self.names = names
        self.counter = itertools.count()

    def _outs(self, s: Eval | Recall) -> None:
        for o in s.outs:
            self.names[o] = f"v{next(self.counter)}"

    visit_eval = visit_recall = _outs

    def visit_draw(self, s: Draw) -> None:
        self.names[s.symbol] = f"n{next(self.counter)}"

    def visit_let(self, s: Let) -> None:
        self.names[s.symbol] = f"k{next(self.counter)}"

    def visit_metropolis(self, s: Metropolis) -> None:
        self.names[s.uniform] = f"u{s.group}"
        for m in s.merges:
            for o in m.outs:
                self.names[o] = f"v{next(self.counter)}"

    # blocks, saved copies and sub-step ends define no new value
    visit_assign = visit_mark = visit_group_begin = StatementVisitor.skip


class _BodyWriter(StatementVisitor[None]):
    """The source lines of one step variant (``mode``: fast, checked or hooked)."""

    consumer = "the torch lowering"

    def __init__(
        self,
        program: Program,
        names: Mapping[sympy.Basic, str],
        pr: _Printer,
        mode: str,
        tensor_coefficients: set[Coefficient],
        inplace: bool,
        draws_take_times: bool,
    ) -> None:
        self.program = program
        self.names = names
        self.pr = pr
        self.mode = mode
        self.tensor_coefficients = tensor_coefficients
        self.inplace = inplace
        self.draws_take_times = draws_take_times
        self.field_index = {f: i for i, f in enumerate(program.fields)}
        self.map_index = {f: i for i, f in enumerate(program.flow_maps)}
        self.lines: list[str] = []
        self.draw_i = 0
        self.uniform_i = 0
        self.upcoming = 0  # the sub-step an evaluation serves (for error messages)

    def visit_eval(self, s: Eval) -> None:
        names, pr, L = self.names, self.pr, self.lines
        if s.field in self.map_index:
            # a flow map counts the real fields it evaluates itself
            outs = ", ".join(names[o] for o in s.outs) + ("," if len(s.outs) > 1 else "")
            args = ", ".join(pr(a) for a in s.args)
            L.append(f"{outs} = _map{self.map_index[s.field]}({args})")
            return
        i = self.field_index[s.field]
        if s.mask is not None:
            L.extend(_masked_eval(s, i, names, pr, self.mode, self.upcoming))
            return
        outs = ", ".join(names[o] for o in s.outs)
        call = f"_f{i}({', '.join(pr(a) for a in s.args)})"
        lines = [f"{outs} = {call}", f"_nfe[{i}] += 1"]
        if self.mode == "checked":
            deps = ", ".join(pr(a) for a in s.args[: len(s.field.depends)])
            dep_tuple = f"({deps}{',' if deps else ''})"
            lines.append(f"_check_field({i}, ({outs},), {dep_tuple}, {self.upcoming})")
        if s.carry is not None:
            L.append("if _carry is None:")
            L.extend("    " + x for x in lines)
            L.append("else:")
            L.append(f"    {outs} = _carry[{s.carry}]")
        else:
            L.extend(lines)

    def visit_recall(self, s: Recall) -> None:
        names = self.names
        for o, cur in zip(s.outs, s.like):
            self.lines.append(
                f"{names[o]} = torch.zeros_like({names[cur]}) if _carry is None "
                f"else _carry[{s.slot}]" + ("" if len(s.outs) == 1 else f"[{s.outs.index(o)}]")
            )

    def visit_draw(self, s: Draw) -> None:
        if s.kind == "uniform":
            self.lines.append(f"{self.names[s.symbol]} = _uniform{self.uniform_i}()")
            self.uniform_i += 1
            return
        args = f"{self.pr(s.start)}, {self.pr(s.stop)}" if self.draws_take_times else ""
        self.lines.append(f"{self.names[s.symbol]} = _draw{self.draw_i}({args})")
        self.draw_i += 1

    def visit_let(self, s: Let) -> None:
        self.lines.append(f"{self.names[s.symbol]} = {self.pr(s.expr)}")

    def visit_assign(self, s: Assign) -> None:
        names = self.names
        self.lines.extend(_assign(s, names, self.pr, self.tensor_coefficients, self.inplace))
        if self.mode == "checked":
            tg = ", ".join(names[b] for b in s.targets)
            bn = ", ".join(repr(b.name) for b in s.targets)
            self.lines.append(f"_check_state({s.substep}, ({bn},), ({tg},))")

    def visit_mark(self, s: Mark) -> None:
        self.upcoming = s.substep + 1
        if self.mode != "fast":
            state = ", ".join(self.names[b] for b in self.program.blocks)
            self.lines.append(f"_hook({s.substep}, ({state},))")

    def visit_group_begin(self, s: GroupBegin) -> None:
        self.lines.extend(f"_s{s.group}_{b.name} = {self.names[b]}.clone()" for b in s.saved)

    def visit_metropolis(self, s: Metropolis) -> None:
        self.lines.extend(_metropolis(s, self.names, self.inplace))
        if self.mode != "fast":
            state = ", ".join(self.names[b] for b in self.program.blocks)
            self.lines.append(f"_hook({len(self.program.substeps) + s.group}, ({state},))")


def _masked_eval(
    s: Eval,
    i: int,
    names: Mapping[sympy.Basic, str],
    pr: _Printer,
    mode: str,
    upcoming: int,
) -> list[str]:
    """A field evaluated only on the selected walkers (one counted call, none if no walker is
    selected); the others get zero."""
    u, lo, hi = s.mask
    m = f"_m{names[s.outs[0]]}"
    n_dep = len(s.field.depends)
    args = [f"({pr(a)})[{m}]" if _is_tensor(a) else pr(a) for a in s.args[:n_dep]]
    args += [pr(a) for a in s.args[n_dep:]]
    like = [names[b] for b in s.field.like]
    outs = [names[o] for o in s.outs]
    L = [f"{m} = _select_mask({names[u]}, {pr(lo)}, {pr(hi)})", f"if bool({m}.any()):"]
    raw = f"_r{names[s.outs[0]]}"
    L.append(f"    {raw} = _f{i}({', '.join(args)})")
    L.append(f"    _nfe[{i}] += 1")
    if len(outs) == 1:
        L.append(f"    {raw} = ({raw},)")
    for k, (o, lk) in enumerate(zip(outs, like)):
        L.append(f"    {o} = torch.zeros_like({lk})")
        L.append(f"    {o}[{m}] = {raw}[{k}]")
    if mode == "checked":
        deps = ", ".join(args[:n_dep])
        L.append(
            f"    _check_field({i}, ({', '.join(outs)},), ({deps}{',' if deps else ''}), "
            f"{upcoming})"
        )
    L.append("else:")
    L.extend(f"    {o} = torch.zeros_like({lk})" for o, lk in zip(outs, like))
    return L


def select_mask(u: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    """Walkers (a ``(batch,)`` boolean mask) whose uniform draw lies in ``[lo, hi)``."""
    flat = u.reshape(u.shape[0], -1)[:, 0]
    return (flat >= lo) & (flat < hi)


def indicator(u: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    """``1[lo <= u < hi]`` as a tensor of ``u``'s dtype (broadcasts like ``u``)."""
    return ((u >= lo) & (u < hi)).to(u.dtype)


def _metropolis(s: Metropolis, names: Mapping[sympy.Basic, str], inplace: bool) -> list[str]:
    r"""Accept where :math:`\log u < -W/k_BT` (a NaN work rejects); else restore and flip."""
    g = s.group
    a = f"_a{g}"
    L = [
        f"{names[s.uniform]} = _udraw{g}()",
        f"{a} = torch.log({names[s.uniform]}) < -{names[s.work]}",
        f"_accepted[{g}].add_({a})",
    ]
    if inplace:
        L.append(f"_r{g} = ~{a}")
        for b in s.saved:
            src = f"_s{g}_{b.name}[_r{g}]" + (".neg()" if b in s.momenta else "")
            L.append(f"{names[b]}[_r{g}] = {src}")
    else:
        for b in s.saved:
            src = f"_s{g}_{b.name}.neg()" if b in s.momenta else f"_s{g}_{b.name}"
            L.append(f"{names[b]} = _select({a}, {names[b]}, {src})")
    for m in s.merges:
        for o, acc, rej in zip(m.outs, m.accepted, m.rejected):
            L.append(f"{names[o]} = _select({a}, {names[acc]}, {names[rej]})")
    return L


def element_sum(x: torch.Tensor) -> torch.Tensor:
    """Per-walker sum over all non-batch axes (the lowering of :class:`ElementSum`)."""
    return x.reshape(x.shape[0], -1).sum(-1)


def select_walkers(mask: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a`` for walkers where ``mask`` holds, ``b`` elsewhere (mask of shape ``(batch,)``)."""
    return torch.where(mask.reshape(mask.shape[0], *([1] * (a.ndim - 1))), a, b)


def _assign(
    s: Assign,
    names: Mapping[sympy.Basic, str],
    pr: _Printer,
    tensor_coefs: set[Coefficient],
    inplace: bool,
) -> list[str]:
    L: list[str] = []
    n = len(s.targets)
    new_names = []
    for k, (y, e) in enumerate(zip(s.targets, s.exprs)):
        last = k == n - 1
        if inplace and last:
            code = _inplace(y, e, names, pr, tensor_coefs)
            if code is not None:
                L.extend(code)
                new_names.append(None)
                continue
        rhs = pr(e)
        if inplace and isinstance(e, _TENSOR):
            rhs += ".clone()"
        tmp = f"_new{k}" if n > 1 else names[y]
        L.append(f"{tmp} = {rhs}")
        new_names.append(tmp if n > 1 else None)
    for y, tmp in zip(s.targets, new_names):
        if tmp is not None:
            L.append(f"{names[y]} = {tmp}")
    return L


def _inplace(
    y: Block,
    e: sympy.Expr,
    names: Mapping[sympy.Basic, str],
    pr: _Printer,
    tensor_coefs: set[Coefficient],
) -> list[str] | None:
    terms = sympy.Add.make_args(e)
    split = [_split(term) for term in terms]
    own = [i for i, (_, v) in enumerate(split) if v == y]
    if len(own) != 1:
        return None
    others = [sv for i, sv in enumerate(split) if i != own[0]]
    if any(y in v.free_symbols for _, v in others):
        return None
    yn = names[y]
    c_own = split[own[0]][0]
    L = []
    if c_own != 1:
        L.append(f"{yn}.mul_({pr(c_own)})")
    for c, v in others:
        vc = pr(v)
        if c == 1:
            L.append(f"{yn}.add_({vc})")
        elif c == -1:
            L.append(f"{yn}.sub_({vc})")
        elif isinstance(c, Coefficient) and c in tensor_coefs:
            L.append(f"{yn}.addcmul_({vc}, {pr(c)})")
        elif c.is_Number or isinstance(c, Coefficient):
            L.append(f"{yn}.add_({vc}, alpha={pr(c)})")
        else:
            L.append(f"{yn}.add_({pr(c)} * {vc})")
    return L
