r"""Exact symbolic analysis of a word on a linear SDE, read from the step program.

:func:`symbolic_step` executes the compiled :class:`~splitsde.compose.program.Program` of a
word -- the very statements that are lowered to torch (architecture rule 1) -- with sympy:
blocks are scalar symbols (every coefficient acts elementwise), every :class:`Draw` is a
standard normal symbol, every :class:`Eval` is replaced by the field's symbolic definition
(:attr:`splitsde.Field.definition`, e.g. :math:`F(q) = -\omega^2 q`) and every closed-form
solver coefficient by its expression over its slice. The result is the exact one-step map

.. math:: y \mapsto \Phi(h)\,y + c(h) + N(h)\,\xi, \qquad Q(h) = N N^\top,

as formulas in :math:`h` and the parameters. From it:

* :func:`stationary_moments` -- the scheme's stationary mean and covariance as formulas
  (the discrete Lyapunov equation :math:`\Sigma = \Phi\Sigma\Phi^\top + Q` solved exactly);
* :func:`continuous_generator` / :func:`stationary_exact` -- the SDE's own linear drift,
  diffusion and stationary law, from the flows and the field definitions;
* :func:`leading_term` -- order and coefficient of the leading term in :math:`h` of a bias
  (sympy series);
* :func:`finite_time_order` -- the exact finite-time weak order for quadratic observables,
  from the modified generator of the moment recursion (below).

**Finite-time weak order.** Mean :math:`m` and second moment :math:`S = E[yy^\top]` of the
chain obey the linear recursion :math:`z_{n+1} = \mathcal M(h) z_n` on
:math:`z = (1, m, \mathrm{vech}\,S)`, and those of the SDE obey :math:`\dot z = \mathcal L z`.
With the modified generator :math:`\tilde{\mathcal L}(h) = h^{-1}\log \mathcal M(h)
= \mathcal L + h^p \mathcal E_p + O(h^{p+1})`, the chain's moments at :math:`T = nh` are
exactly those of :math:`\dot z = \tilde{\mathcal L} z`, so every quadratic observable has
weak error :math:`h^p \int_0^T \ell^\top e^{\mathcal L (T-s)} \mathcal E_p e^{\mathcal L s}
z_0\,ds + O(h^{p+1})`: the weak order is :math:`p` (for generic observables and initial
laws). The series are computed exactly (rational arithmetic when the coefficients are
rational). Reference: the backward-error view of splitting methods, Hairer, Lubich & Wanner,
*Geometric Numerical Integration* (Springer 2006), ch. IX; for Langevin splittings,
Leimkuhler & Matthews, *Molecular Dynamics* (Springer 2015), ch. 7.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from functools import cached_property
from typing import Any

import numpy as np
import sympy
from sympy.polys.matrices import DomainMatrix

from splitsde.analysis.affine import AffineMap, NotAffineError
from splitsde.base.errors import SplitsdeError
from splitsde.compose.builder import build_program
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
from splitsde.compose.visitor import StatementVisitor
from splitsde.runtime.layout import StateLayout
from splitsde.symbolic.field import field_applications, field_of
from splitsde.symbolic.numeric import phi1
from splitsde.symbolic.sde import SDE
from splitsde.symbolic.spellings import lambdify as _spell_lambdify
from splitsde.symbolic.symbols import Block, NoiseSymbol, Parameter, h, t

__all__ = [
    "FiniteTimeOrder",
    "LeadingTerm",
    "SymbolicError",
    "SymbolicStep",
    "continuous_generator",
    "finite_time_order",
    "leading_term",
    "moment_generator",
    "moment_map",
    "stationary_exact",
    "stationary_moments",
    "symbolic_step",
]


class SymbolicError(SplitsdeError, ValueError):
    """The program cannot be executed symbolically (no field definition, numeric coefficient)."""


# ---------------------------------------------------------------------------------------------
# Executing the program
# ---------------------------------------------------------------------------------------------
def _program_of(
    source: Any, word: Any, reduction: Reduction | None, allow_missing: bool
) -> Program:
    if isinstance(source, Program):
        if word is not None:
            raise ValueError("give either a Program or an SDE and a word, not both")
        return source
    program = getattr(source, "program", None)
    if isinstance(program, Program):  # an Integrator
        if word is not None:
            raise ValueError("an integrator already has its word")
        return program
    sde = source.sde if hasattr(source, "sde") and isinstance(source.sde, SDE) else source
    if not isinstance(sde, SDE):
        raise TypeError(
            f"cannot analyse {type(source).__name__}: give an Integrator, a Program, "
            "a System or an SDE with a word"
        )
    if word is None:
        raise ValueError("give the word to analyse")
    from splitsde.compose.presets import word as parse_word

    if isinstance(word, ReducedWord):
        reduction = reduction or word.reduction
        word = word.word
    return build_program(sde, parse_word(word), reduction, allow_missing)


def _slice_definition(pc: Any) -> sympy.Expr:
    d = pc.definition
    if d.expr is None:
        raise SymbolicError(
            f"coefficient {pc.symbol} is computed numerically ({d.method}); the symbolic "
            "analysis needs closed forms -- use the numeric analysis (splitsde.analysis."
            "affine_step), which probes the compiled step"
        )
    off = sympy.Rational(pc.offset.numerator, pc.offset.denominator)
    w = sympy.Rational(pc.weight.numerator, pc.weight.denominator)
    return d.expr.xreplace({t: t + off * h, h: w * h})


_ONE_STEP_ONLY = (
    "the symbolic analysis covers one-step schemes with Gaussian noise; this program carries "
    "past field values (a multistep solver) or draws random selections -- use "
    "splitsde.analysis.propagate (multistep) or splitsde.analysis.propagate_moments (randomized)"
)


class _Executor(StatementVisitor[None]):
    """Runs the statements with sympy: block expressions, values of temporaries and field
    outputs, and the normal draws in program order."""

    consumer = "the symbolic analysis"
    error = SymbolicError

    def __init__(self, program: Program) -> None:
        self.env: dict[sympy.Basic, sympy.Expr] = {b: b for b in program.blocks}
        self.values: dict[sympy.Basic, sympy.Expr] = {
            pc.symbol: _slice_definition(pc) for pc in program.coefficients
        }
        self.draws: list[NoiseSymbol] = []

    def now(self, e: sympy.Expr) -> sympy.Expr:
        return e.xreplace({**self.env, **self.values})

    def visit_eval(self, s: Eval) -> None:
        if s.mask is not None:
            self.refuse(s, _ONE_STEP_ONLY)
        f = s.field
        if f.definition is None:
            raise SymbolicError(
                f"field {f.name} has no symbolic definition; give one "
                f"(Field({f.name!r}, ..., definition=...)) or use the numeric analysis"
            )
        args = tuple(self.now(a) for a in s.args)
        for i, out in enumerate(s.outs):
            self.values[out] = f.defined_output(i, args)

    def visit_recall(self, s: Recall) -> None:
        self.refuse(s, _ONE_STEP_ONLY)

    def visit_draw(self, s: Draw) -> None:
        if s.kind == "uniform":
            self.refuse(s, _ONE_STEP_ONLY)
        self.draws.append(s.symbol)

    def visit_let(self, s: Let) -> None:
        self.values[s.symbol] = self.now(s.expr)

    def visit_assign(self, s: Assign) -> None:
        new = [self.now(e) for e in s.exprs]
        for b, e in zip(s.targets, new):
            self.env[b] = e

    visit_mark = StatementVisitor.skip

    def _metropolized(self, s: GroupBegin | Metropolis) -> None:
        self.refuse(
            s,
            "a Metropolized group's accept/reject step is not an affine map of the state and "
            "the noise; analyse the word without its { } group",
        )

    visit_group_begin = visit_metropolis = _metropolized


def _execute(program: Program) -> tuple[dict[Block, sympy.Expr], list[NoiseSymbol]]:
    """Run the statements with sympy; return the blocks' final expressions and the draws."""
    run = _Executor(program)
    run.walk(program.statements)
    return {b: run.env[b] for b in program.blocks}, run.draws


def _affine_parts(
    exprs: Sequence[sympy.Expr], blocks: Sequence[Block], noises: Sequence[NoiseSymbol], what: str
) -> tuple[sympy.Matrix, sympy.Matrix, sympy.Matrix]:
    vars_ = [*blocks, *noises]
    zero = dict.fromkeys(vars_, sympy.Integer(0))
    D, K = len(blocks), len(noises)
    Phi, N, c = sympy.zeros(D, D), sympy.zeros(D, K), sympy.zeros(D, 1)
    for i, e in enumerate(exprs):
        e = sympy.expand(
            e, power_base=False, power_exp=False, log=False, mul=True, multinomial=True
        )
        c[i] = e.xreplace(zero)
        for j, v in enumerate(vars_):
            d = sympy.diff(e, v)
            if d.free_symbols & set(vars_) or field_applications(d):
                raise NotAffineError(
                    f"the step is not affine: the exact analysis applies to linear problems "
                    f"({what}: the update of {blocks[i]} is nonlinear in {v})"
                )
            if j < D:
                Phi[i, j] = d
            else:
                N[i, j - D] = d
    return Phi, c, N


@dataclass(frozen=True)
class SymbolicStep:
    r"""The exact one-step map :math:`y \mapsto \Phi y + c + N\xi` as sympy matrices.

    ``blocks`` orders the rows/columns of ``Phi``; ``noises`` the columns of ``noise`` (one
    standard normal per draw of the program, in program order). Inside, ``t`` is the step
    start and ``h`` the step length.
    """

    blocks: tuple[Block, ...]
    noises: tuple[NoiseSymbol, ...]
    Phi: sympy.Matrix
    c: sympy.Matrix
    noise: sympy.Matrix
    word: str
    program: Program = field(repr=False, compare=False)

    @cached_property
    def cov(self) -> sympy.Matrix:
        r""":math:`Q = N N^\top` (square roots of variances cancel)."""
        Q = self.noise * self.noise.T
        return Q.applyfunc(lambda e: sympy.expand(e, power_base=False, power_exp=False))

    @property
    def dim(self) -> int:
        return len(self.blocks)

    @property
    def parameters(self) -> tuple[Parameter, ...]:
        syms: set[sympy.Basic] = set()
        for M in (self.Phi, self.c, self.noise):
            syms |= M.free_symbols
        return tuple(sorted((s for s in syms if isinstance(s, Parameter)), key=str))

    @property
    def autonomous(self) -> bool:
        return all(t not in M.free_symbols for M in (self.Phi, self.c, self.noise))

    def subs(self, values: Mapping[str | sympy.Symbol, Any]) -> SymbolicStep:
        """The step with some parameters (by name or symbol), ``h`` or ``t`` substituted;
        numbers are made exact (``nsimplify``) so the series stay rational."""
        rep = _substitution(self, values)
        return SymbolicStep(
            self.blocks,
            self.noises,
            self.Phi.xreplace(rep),
            self.c.xreplace(rep),
            self.noise.xreplace(rep),
            self.word,
            self.program,
        )

    def numeric(
        self, values: Mapping[str | sympy.Symbol, Any], step: float, t0: float = 0.0
    ) -> AffineMap:
        """Float64 :class:`~splitsde.analysis.affine.AffineMap` at parameter ``values`` and
        step ``step`` (scalar blocks), for comparison with the probed compiled step."""
        rep = _substitution(self, values, exact=False)
        rep[h] = sympy.Float(step, 17)
        rep[t] = sympy.Float(t0, 17)
        mats = []
        for M in (self.Phi, self.c, self.noise):
            M = M.xreplace(rep)
            free = M.free_symbols
            if free:
                raise ValueError(f"missing values for {sorted(map(str, free))}")
            fn = _spell_lambdify([], M, "numpy")
            mats.append(np.asarray(fn(), dtype=np.float64))
        layout = StateLayout(tuple(b.name for b in self.blocks), ((),) * len(self.blocks))
        return AffineMap(
            mats[0],
            mats[1].reshape(-1),
            mats[2].reshape(self.dim, -1),
            layout,
            float(t0),
            float(step),
        )


def _substitution(
    step: SymbolicStep, values: Mapping[str | sympy.Symbol, Any], exact: bool = True
) -> dict[sympy.Symbol, sympy.Expr]:
    by_name: dict[str, sympy.Symbol] = {p.name: p for p in step.parameters}
    by_name.update({"h": h, "t": t})
    rep: dict[sympy.Symbol, sympy.Expr] = {}
    for k, v in values.items():
        name = k if isinstance(k, str) else k.name
        if name not in by_name:
            continue  # parameters the step does not use (mass of a decoupled block, say)
        if isinstance(v, sympy.Basic):
            rep[by_name[name]] = v
        elif exact:
            rep[by_name[name]] = _exact_number(v)
        else:
            rep[by_name[name]] = sympy.Float(float(v), 17)
    return rep


def _named_substitution(M: sympy.Matrix, values: Mapping[str | sympy.Symbol, Any]) -> dict:
    """Exact substitution for the parameters of ``M`` named in ``values``."""
    by_name = {s.name: s for s in M.free_symbols if isinstance(s, Parameter)}
    out = {}
    for k, v in values.items():
        name = k if isinstance(k, str) else k.name
        if name in by_name:
            out[by_name[name]] = v if isinstance(v, sympy.Basic) else _exact_number(v)
    return out


def _exact_number(v: Any) -> sympy.Expr:
    """A float as an exact rational (``0.1 -> 1/10``), an int as an integer."""
    if isinstance(v, int | Fraction):
        return sympy.Rational(v)
    return sympy.nsimplify(float(v), rational=True)


def symbolic_step(
    source: Any,
    word: Any = None,
    *,
    reduction: Reduction | None = None,
    allow_missing: bool = False,
) -> SymbolicStep:
    r"""Execute a word's step program symbolically: :math:`(\Phi, c, N)` exact in ``h`` and the
    parameters.

    ``source`` is an :class:`~splitsde.runtime.integrator.Integrator` (its program), a
    :class:`~splitsde.compose.program.Program`, or an SDE / System together with ``word``.
    Fields must carry symbolic definitions; coefficients must have closed forms (or
    quadrature sums). Raises :class:`~splitsde.analysis.affine.NotAffineError` for a
    nonlinear problem.
    """
    program = _program_of(source, word, reduction, allow_missing)
    finals, draws = _execute(program)
    exprs = [finals[b] for b in program.blocks]
    Phi, c, N = _affine_parts(exprs, program.blocks, draws, f"word {program.word}")
    return SymbolicStep(tuple(program.blocks), tuple(draws), Phi, c, N, str(program.word), program)


# ---------------------------------------------------------------------------------------------
# Exact rational-function algebra in exponentials of h
# ---------------------------------------------------------------------------------------------
def _exp_generators(exprs: Sequence[sympy.Expr]) -> tuple[dict[sympy.Expr, sympy.Expr], dict]:
    """Rewrite ``exp(r*a)`` atoms (rational ``r``) as integer powers of one symbol per ``a``."""
    atoms: set[sympy.Expr] = set()
    for e in exprs:
        atoms |= e.atoms(sympy.exp)
    groups: dict[sympy.Expr, list[tuple[sympy.Rational, sympy.Expr]]] = {}
    for a in atoms:
        r, rest = a.args[0].as_coeff_Mul()
        if not r.is_Rational:
            r, rest = sympy.Integer(1), a.args[0]
        groups.setdefault(rest, []).append((r, a))
    forward: dict[sympy.Expr, sympy.Expr] = {}
    back: dict[sympy.Symbol, sympy.Expr] = {}
    for k, (rest, items) in enumerate(
        sorted(groups.items(), key=lambda kv: sympy.default_sort_key(kv[0]))
    ):
        g = Fraction(0)
        for r, _ in items:
            g = Fraction(
                math.gcd(g.numerator * r.q, int(r.p) * g.denominator), g.denominator * int(r.q)
            )
        g = abs(g) or Fraction(1)
        E = sympy.Symbol(f"_E{k}", positive=True)
        back[E] = sympy.exp(sympy.Rational(g.numerator, g.denominator) * rest)
        for r, a in items:
            n = Fraction(int(r.p), int(r.q)) / g
            forward[a] = E ** int(n)
    return forward, back


def _solve_linear(A: sympy.Matrix, b: sympy.Matrix) -> sympy.Matrix:
    """Exact solution of ``A x = b`` in the fraction field of the entries' symbols."""
    dA = DomainMatrix.from_list_sympy(*A.shape, A.tolist())
    db = DomainMatrix.from_list_sympy(*b.shape, b.tolist())
    dA, db = dA.unify(db)
    K = dA.domain
    if not K.is_Field:
        K = K.get_field()
        dA, db = dA.convert_to(K), db.convert_to(K)
    x = dA.lu_solve(db)
    return x.to_Matrix()


def _tidy(e: sympy.Expr) -> sympy.Expr:
    """A readable canonical form of a rational function (in exponentials of h)."""
    return sympy.factor(sympy.cancel(e))


def stationary_moments(
    step: SymbolicStep, *, simplify: bool = True
) -> tuple[sympy.Matrix, sympy.Matrix]:
    r"""The scheme's exact stationary mean :math:`(I - \Phi)^{-1} c` and covariance (the
    solution of :math:`\Sigma = \Phi\Sigma\Phi^\top + Q`) as formulas in ``h`` and the
    parameters, valid wherever the scheme is stable (:math:`\rho(\Phi) < 1`)."""
    D = step.dim
    Phi = step.Phi.applyfunc(lambda e: e.rewrite(sympy.exp) if e.has(phi1) else e)
    Q = step.cov.applyfunc(lambda e: e.rewrite(sympy.exp) if e.has(phi1) else e)
    c = step.c.applyfunc(lambda e: e.rewrite(sympy.exp) if e.has(phi1) else e)
    fwd, back = _exp_generators([*Phi, *Q, *c])
    Phi, Q, c = (M.xreplace(fwd) for M in (Phi, Q, c))
    # covariance: unknowns s_ij (i <= j)
    idx = [(i, j) for i in range(D) for j in range(i, D)]
    S_sym = {ij: sympy.Symbol(f"_s{ij[0]}_{ij[1]}") for ij in idx}
    S = sympy.Matrix(D, D, lambda i, j: S_sym[(min(i, j), max(i, j))])
    R = S - Phi * S * Phi.T - Q
    eqs = [sympy.expand(R[i, j]) for i, j in idx]
    A, b = sympy.linear_eq_to_matrix(eqs, [S_sym[ij] for ij in idx])
    sol = _solve_linear(A, b)
    cov = sympy.zeros(D, D)
    for k, (i, j) in enumerate(idx):
        v = sol[k].xreplace(back)
        v = _tidy(v) if simplify else v
        cov[i, j] = cov[j, i] = v
    if all(e == 0 for e in c):
        mean = sympy.zeros(D, 1)
    else:
        m = _solve_linear(sympy.eye(D) - Phi, c)
        mean = m.applyfunc(lambda e: _tidy(e.xreplace(back)) if simplify else e.xreplace(back))
    return mean, cov


# ---------------------------------------------------------------------------------------------
# The SDE itself
# ---------------------------------------------------------------------------------------------
def continuous_generator(
    sde: SDE, blocks: Sequence[Block] | None = None
) -> tuple[sympy.Matrix, sympy.Matrix, sympy.Matrix]:
    r"""The SDE's linear drift :math:`A`, offset :math:`b` and diffusion :math:`K = GG^\top`
    (:math:`dy = (Ay + b)\,dt + G\,dW`), from the flows with field definitions substituted.

    Raises :class:`~splitsde.analysis.affine.NotAffineError` for nonlinear drifts or
    multiplicative noise.
    """
    blocks = tuple(blocks or sde.blocks)
    drift = sde.drift
    exprs = []
    for b in blocks:
        e = drift[b]
        for app in field_applications(e):
            f = field_of(app)[0]
            if f.definition is None:
                raise SymbolicError(f"field {f.name} has no symbolic definition")
        e = e.xreplace(
            {
                app: field_of(app)[0].defined_output(field_of(app)[1], app.args)
                for app in field_applications(e)
            }
        )
        exprs.append(e)
    A, b, _ = _affine_parts(exprs, blocks, [], "the SDE's drift")
    var = sde.noise_variance
    K = sympy.diag(*[var[b] for b in blocks])
    if K.free_symbols & set(blocks):
        raise NotAffineError("the SDE has multiplicative noise: not linear-Gaussian")
    return A, b, K


def stationary_exact(
    sde: SDE, blocks: Sequence[Block] | None = None, *, simplify: bool = True
) -> tuple[sympy.Matrix, sympy.Matrix]:
    r"""The SDE's stationary mean :math:`-A^{-1}b` and covariance solving
    :math:`A\Sigma + \Sigma A^\top + K = 0` (when :math:`A` is Hurwitz)."""
    A, b, K = continuous_generator(sde, blocks)
    D = A.shape[0]
    idx = [(i, j) for i in range(D) for j in range(i, D)]
    S_sym = {ij: sympy.Symbol(f"_s{ij[0]}_{ij[1]}") for ij in idx}
    S = sympy.Matrix(D, D, lambda i, j: S_sym[(min(i, j), max(i, j))])
    R = A * S + S * A.T + K
    M, rhs = sympy.linear_eq_to_matrix(
        [sympy.expand(R[i, j]) for i, j in idx], [S_sym[ij] for ij in idx]
    )
    sol = _solve_linear(M, rhs)
    cov = sympy.zeros(D, D)
    for k, (i, j) in enumerate(idx):
        cov[i, j] = cov[j, i] = _tidy(sol[k]) if simplify else sol[k]
    mean = sympy.zeros(D, 1) if all(e == 0 for e in b) else -_solve_linear(A, b)
    return mean, cov


# ---------------------------------------------------------------------------------------------
# Series in h
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LeadingTerm:
    r"""``coefficient * h**order`` is the leading term of a bias; ``order`` is ``None`` when the
    bias vanishes identically (exact)."""

    order: int | None
    coefficient: sympy.Expr

    @property
    def exact(self) -> bool:
        return self.order is None

    def __str__(self) -> str:
        if self.order is None:
            return "0 (exact)"
        return f"{sympy.sstr(self.coefficient)}*h**{self.order}"


def leading_term(bias: sympy.Expr, *, max_order: int = 8) -> LeadingTerm:
    r"""Order and coefficient of the leading term of ``bias`` as :math:`h \to 0`.

    The bias is written as a rational function of :math:`h`, the parameters and the
    exponentials :math:`e^{a h}` (algebraically independent of :math:`h`), so "identically
    zero" is decided exactly (``order=None``); otherwise numerator and denominator are
    expanded in :math:`h` and divided as power series. A bias with no term up to
    ``max_order`` raises (no claim is made from a truncated series).
    """
    e = bias.rewrite(sympy.exp) if bias.has(phi1) else sympy.sympify(bias)
    fwd, back = _exp_generators([e])
    num, den = sympy.fraction(sympy.cancel(sympy.together(e.xreplace(fwd))))
    if num == 0:
        return LeadingTerm(None, sympy.Integer(0))
    num, den = num.xreplace(back), den.xreplace(back)
    d = _truncate(den, max_order)
    v = next((k for k, c in enumerate(d) if sympy.cancel(c) != 0), None)
    if v is None:
        raise ValueError("the bias is singular at h = 0")
    n = _truncate(num, max_order + v)
    d = _truncate(den, max_order + v)
    u = next((k for k, c in enumerate(n) if sympy.cancel(c) != 0), None)
    if u is None or u - v > max_order:
        raise ValueError(f"no nonzero term up to h**{max_order}; raise max_order")
    if u < v:
        raise ValueError("the bias diverges as h -> 0")
    return LeadingTerm(u - v, sympy.factor(sympy.cancel(n[u] / d[v])))


def _atom_series(a: sympy.Expr, order: int) -> list[sympy.Expr] | None:
    """Taylor coefficients in ``h`` of ``exp(x)`` / ``phi1(x)`` with ``x = kappa*h``."""
    x = a.args[0]
    kappa = sympy.cancel(x / h)
    if h in kappa.free_symbols:
        return None
    if isinstance(a, phi1):
        return [kappa**j / sympy.factorial(j + 1) for j in range(order + 1)]
    return [kappa**j / sympy.factorial(j) for j in range(order + 1)]


def _trunc_mul(a: list[sympy.Expr], b: list[sympy.Expr], order: int) -> list[sympy.Expr]:
    out = [sympy.Integer(0)] * (order + 1)
    for i, ai in enumerate(a):
        if ai == 0:
            continue
        for j in range(order + 1 - i):
            if b[j] != 0:
                out[i + j] += ai * b[j]
    return out


def _truncate(e: sympy.Expr, order: int) -> list[sympy.Expr]:
    """Coefficients of ``h**0 .. h**order`` of an expression analytic at ``h = 0``.

    ``exp(kappa h)`` and ``phi1(kappa h)`` atoms become generators of a polynomial whose
    monomials are expanded as truncated products of the atoms' Taylor series (fast and exact);
    anything else falls back to ``sympy.series``.
    """
    atoms = sorted(e.atoms(sympy.exp, phi1), key=sympy.default_sort_key)
    series = [_atom_series(a, order) for a in atoms]
    if any(sr is None for sr in series):
        s = sympy.expand(sympy.series(e, h, 0, order + 1).removeO())
        return [s.coeff(h, k) for k in range(order + 1)]
    gens = [sympy.Dummy(f"g{i}") for i in range(len(atoms))]
    body = sympy.expand(e.xreplace(dict(zip(atoms, gens))))
    try:
        poly = sympy.Poly(body, h, *gens)
    except sympy.PolynomialError:
        s = sympy.expand(sympy.series(e, h, 0, order + 1).removeO())
        return [s.coeff(h, k) for k in range(order + 1)]
    powers: dict[tuple[int, int], list[sympy.Expr]] = {}

    def power(i: int, k: int) -> list[sympy.Expr]:
        if k == 0:
            return [sympy.Integer(1)] + [sympy.Integer(0)] * order
        if (i, k) not in powers:
            powers[(i, k)] = _trunc_mul(power(i, k - 1), series[i], order)
        return powers[(i, k)]

    out = [sympy.Integer(0)] * (order + 1)
    for monom, coef in poly.terms():
        a = monom[0]
        if a > order:
            continue
        term = [sympy.Integer(0)] * (order + 1)
        term[a] = coef
        for i, k in enumerate(monom[1:]):
            if k:
                term = _trunc_mul(term, power(i, k), order)
        out = [x + y for x, y in zip(out, term)]
    return [sympy.expand(c) for c in out]


def _series_matrix(M: sympy.Matrix, order: int) -> list[sympy.Matrix]:
    """``M(h) = sum_k C_k h**k`` truncated: the list ``[C_0, ..., C_order]``."""
    out = [sympy.zeros(*M.shape) for _ in range(order + 1)]
    for i in range(M.shape[0]):
        for j in range(M.shape[1]):
            for k, c in enumerate(_truncate(M[i, j], order)):
                out[k][i, j] = c
    return out


def _series_mul(a: list[sympy.Matrix], b: list[sympy.Matrix]) -> list[sympy.Matrix]:
    n = len(a)
    out = [sympy.zeros(a[0].shape[0], b[0].shape[1]) for _ in range(n)]
    for i in range(n):
        if a[i].is_zero_matrix:
            continue
        for j in range(n - i):
            out[i + j] += a[i] * b[j]
    return [m.applyfunc(sympy.expand) for m in out]


def _moment_basis(D: int) -> list[tuple[int, int]]:
    return [(i, j) for i in range(D) for j in range(i, D)]


def moment_map(Phi: Any, c: Any, Q: Any) -> sympy.Matrix:
    r"""The matrix :math:`\mathcal M` of :math:`z \mapsto z'` on
    :math:`z = (1, m, \mathrm{vech}\,S)`, :math:`S = E[yy^\top]`:
    :math:`m' = \Phi m + c`, :math:`S' = \Phi S \Phi^\top + \Phi m c^\top + c m^\top \Phi^\top
    + cc^\top + Q`."""
    Phi, c, Q = sympy.Matrix(Phi), sympy.Matrix(c), sympy.Matrix(Q)
    D = Phi.shape[0]
    m = sympy.Matrix(sympy.symbols(f"_m0:{D}"))
    idx = _moment_basis(D)
    s = {ij: sympy.Symbol(f"_S{ij[0]}_{ij[1]}") for ij in idx}
    S = sympy.Matrix(D, D, lambda i, j: s[(min(i, j), max(i, j))])
    m1 = Phi * m + c
    S1 = Phi * S * Phi.T + Phi * m * c.T + c * m.T * Phi.T + c * c.T + Q
    outs = [*m1, *[S1[i, j] for i, j in idx]]
    return _linear_operator(outs, [*m, *[s[ij] for ij in idx]], constant_row=True)


def _moment_map_series(
    Phi: list[sympy.Matrix], c: list[sympy.Matrix], Q: list[sympy.Matrix], order: int
) -> list[sympy.Matrix]:
    """Truncated series of :func:`moment_map` from truncated series of its inputs."""
    hs = sum((P * h**k for k, P in enumerate(Phi)), sympy.zeros(*Phi[0].shape))
    cs = sum((C * h**k for k, C in enumerate(c)), sympy.zeros(*c[0].shape))
    qs = sum((S * h**k for k, S in enumerate(Q)), sympy.zeros(*Q[0].shape))
    M = moment_map(hs, cs, qs)
    out = [sympy.zeros(*M.shape) for _ in range(order + 1)]
    for i in range(M.shape[0]):
        for j in range(M.shape[1]):
            e = M[i, j]
            if e == 0:
                continue
            p = sympy.Poly(e, h)
            for (k,), coef in p.terms():
                if k <= order:
                    out[k][i, j] = coef.as_expr() if hasattr(coef, "as_expr") else coef
    return out


def moment_generator(A: Any, b: Any, K: Any) -> sympy.Matrix:
    r"""The generator :math:`\mathcal L` of :math:`\dot z = \mathcal L z` for the SDE
    :math:`dy = (Ay + b)dt + G dW`: :math:`\dot m = Am + b`,
    :math:`\dot S = AS + SA^\top + bm^\top + mb^\top + K` (:math:`K = GG^\top`)."""
    A, b, K = sympy.Matrix(A), sympy.Matrix(b), sympy.Matrix(K)
    D = A.shape[0]
    m = sympy.Matrix(sympy.symbols(f"_m0:{D}"))
    idx = _moment_basis(D)
    s = {ij: sympy.Symbol(f"_S{ij[0]}_{ij[1]}") for ij in idx}
    S = sympy.Matrix(D, D, lambda i, j: s[(min(i, j), max(i, j))])
    dm = A * m + b
    dS = A * S + S * A.T + b * m.T + m * b.T + K
    outs = [*dm, *[dS[i, j] for i, j in idx]]
    return _linear_operator(outs, [*m, *[s[ij] for ij in idx]], constant_row=False)


def _linear_operator(
    outs: list[sympy.Expr], vars_: list[sympy.Symbol], constant_row: bool
) -> sympy.Matrix:
    n = 1 + len(vars_)
    L = sympy.zeros(n, n)
    if constant_row:
        L[0, 0] = 1
    zero = dict.fromkeys(vars_, 0)
    for r, e in enumerate(outs, start=1):
        e = sympy.expand(e)
        L[r, 0] = e.xreplace(zero)
        for k, v in enumerate(vars_, start=1):
            L[r, k] = e.coeff(v)
    return L


@dataclass(frozen=True)
class FiniteTimeOrder:
    r"""Exact finite-time weak order for quadratic observables.

    ``order`` is :math:`p` (``None``: the scheme reproduces the moments exactly at every
    :math:`h`, to the computed order); ``error_generator`` is :math:`\mathcal E_p`, the leading
    term of :math:`\tilde{\mathcal L}(h) - \mathcal L` on :math:`z = (1, m, \mathrm{vech}\,S)`;
    ``generator`` is :math:`\mathcal L`; ``consistent`` says whether
    :math:`\tilde{\mathcal L}(0) = \mathcal L`.
    """

    order: int | None
    error_generator: sympy.Matrix
    generator: sympy.Matrix
    modified: list[sympy.Matrix] = field(repr=False)
    consistent: bool = True

    def error_at(
        self,
        T: float,
        z0: np.ndarray,
        observable: np.ndarray,
        values: Mapping[str, float] | None = None,
    ) -> float:
        r"""Leading coefficient :math:`C` of the weak error :math:`C h^p` of the linear
        functional ``observable`` of ``z`` at time ``T`` from ``z0`` (numeric):
        :math:`C = \ell^\top \int_0^T e^{\mathcal L(T-s)}\mathcal E_p e^{\mathcal L s}ds\,z_0`
        (one block-triangular matrix exponential)."""
        import scipy.linalg

        rep = {}
        if values:
            syms = {
                s.name: s for s in (self.generator.free_symbols | self.error_generator.free_symbols)
            }
            rep = {syms[k]: sympy.Float(float(v), 17) for k, v in values.items() if k in syms}
        L = np.asarray(self.generator.xreplace(rep).evalf(), dtype=np.float64)
        E = np.asarray(self.error_generator.xreplace(rep).evalf(), dtype=np.float64)
        n = L.shape[0]
        big = np.zeros((2 * n, 2 * n))
        big[:n, :n] = L
        big[:n, n:] = E
        big[n:, n:] = L
        block = scipy.linalg.expm(big * T)[:n, n:]
        return float(np.asarray(observable) @ block @ np.asarray(z0))


def _series_log(M: list[sympy.Matrix]) -> list[sympy.Matrix]:
    """``log(M(h))`` for ``M(0) = I`` as a truncated series."""
    n = len(M)
    I = sympy.eye(M[0].shape[0])
    if not (M[0] - I).applyfunc(sympy.cancel).is_zero_matrix:
        raise ValueError("the moment map is not the identity at h = 0: the scheme is inconsistent")
    X = [sympy.zeros(*I.shape)] + [m for m in M[1:]]
    out = [sympy.zeros(*I.shape) for _ in range(n)]
    power = X
    for j in range(1, n):
        sign = sympy.Rational((-1) ** (j + 1), j)
        for k in range(n):
            out[k] += sign * power[k]
        power = _series_mul(power, X)
    return [m.applyfunc(sympy.expand) for m in out]


def finite_time_order(
    step: SymbolicStep,
    sde: SDE,
    *,
    max_order: int = 3,
    values: Mapping[str | sympy.Symbol, Any] | None = None,
) -> FiniteTimeOrder:
    r"""The exact finite-time weak order of ``step`` for quadratic observables (see the module
    docstring), computed from series of :math:`\log\mathcal M(h)` up to :math:`h^{p+1}` with
    :math:`p \le` ``max_order``.

    ``sde`` is the SDE whose flows the word splits (its drift and noise give
    :math:`\mathcal L`). Exact (rational) when the step's coefficients are; parameters stay
    symbolic otherwise, unless ``values`` fixes some of them (made exact rationals, which is
    much faster; the order is then the order at those parameter values).
    """
    if not step.autonomous:
        raise SymbolicError("the finite-time order series needs an autonomous step (no t)")
    A, b, K = continuous_generator(sde, step.blocks)
    Lc = moment_generator(A, b, K)
    if values:
        rep = _substitution(step, values)
        rep.update({s: v for s, v in _named_substitution(Lc, values).items() if s not in rep})
        step = step.subs({k.name: v for k, v in rep.items()})
        Lc = Lc.xreplace(rep)
    n = max_order + 1
    Ms = _moment_map_series(
        _series_matrix(step.Phi, n), _series_matrix(step.c, n), _series_matrix(step.cov, n), n
    )
    logM = _series_log(Ms)
    # modified generator: log M / h = sum_k logM[k+1] h^k
    mod = [logM[k + 1] for k in range(n)]
    diff0 = (mod[0] - Lc).applyfunc(sympy.cancel)
    consistent = diff0.is_zero_matrix
    if not consistent:
        return FiniteTimeOrder(0, diff0, Lc, mod, consistent=False)
    for p in range(1, max_order + 1):
        Ep = mod[p].applyfunc(sympy.cancel)
        if not Ep.is_zero_matrix:
            return FiniteTimeOrder(p, Ep, Lc, mod)
    return FiniteTimeOrder(None, sympy.zeros(*Lc.shape), Lc, mod)
