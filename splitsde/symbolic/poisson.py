r"""The Poisson midpoint method: one step that behaves like ``K`` steps of a fine chain.

Take any *base* solver whose update over a slice is affine in the state, the field values at
the slice start and its Gaussian noise (exponential Euler -- the Langevin Monte Carlo step
when the flow has no linear part, its Ornstein--Uhlenbeck-exact version for underdamped
Langevin -- or the DDPM/DDIM(:math:`\eta`) step of a diffusion model):

.. math:: z \mapsto a\,z + b\,u(z, t) + c\,\xi + d .

Its chain of ``K`` fine steps of length :math:`\delta = h/K` is
:math:`z_{i+1} = a_i z_i + b_i u(z_i, t_i) + c_i Z_i + d_i`. The Poisson midpoint step keeps
the fine chain's Gaussians :math:`Z_0, \dots, Z_{K-1}` but evaluates the field only at the start
and at randomly selected midpoints of the *frozen-drift* chain

.. math:: \hat z_0 = z, \qquad \hat z_{i+1} = a_i \hat z_i + b_i\,u(z, t) + c_i Z_i + d_i,

.. math:: z^+ = \hat z_K + \sum_{i=1}^{K-1} S_i\,B_i\,\big(u(\hat z_i, t + i\delta) - u(z, t)\big),
          \qquad S_i = K\,a_{K-1}\cdots a_{i+1}\,b_i,

with :math:`B_i = \mathbf 1[i \in I]`: **Option 1** selects every :math:`i` independently with
probability :math:`1/K` (Bernoulli), **Option 2** one :math:`i` uniformly. Since
:math:`P(i \in I) = 1/K`, the correction is unbiased for the fine chain's drift differences.
(:math:`i = 0` is never evaluated: :math:`\hat z_0 = z`.) The selections are uniform draws of
the run's noise source (program order), the evaluations are per-walker selected
(:mod:`splitsde.symbolic.selection`): a walker costs :math:`1 + (K-1)/K = 2 - 1/K` evaluations
per step in expectation for both options. With a constant field the step *is* the fine chain.

**Variance reduction** (``variance_reduction=True``, reconstructed): the random selection adds
a variance the fine chain does not have, per element
:math:`V = \operatorname{Var}_B \sum_i S_i B_i \Delta u_i`; its estimate from the evaluated
points, :math:`\hat V = (1 - 1/K)\sum_i B_i (S_i \Delta u_i)^2`, is taken out of the injected
Gaussian noise: its part :math:`G = \sum_m (a_{K-1}\cdots a_{m+1}) c_m Z_m` (variance :math:`Q`)
is scaled by :math:`\sqrt{\max(0, 1 - \hat V/Q)}` per element.

Reference: Kandasamy & Nagaraj, *The Poisson midpoint method for Langevin dynamics: provably
efficient discretization for diffusion models*, NeurIPS 2024 (no official code; implemented from
the equations above, see ``docs/diffusion-poisson.md``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np
import sympy

from splitsde.symbolic.field import field_of
from splitsde.symbolic.selection import Indicator, Selected
from splitsde.symbolic.solve import ExponentialEuler, Solver, SolverStrategy
from splitsde.symbolic.spellings import lambdify as spell_lambdify
from splitsde.symbolic.symbols import Block, Coefficient, NoiseSymbol, Parameter, Temporary, h, t
from splitsde.symbolic.update import (
    CoefficientDef,
    CoefficientSymbols,
    NoiseSpec,
    NumericCoefficients,
    Update,
)

__all__ = ["PoissonMidpoint"]


@dataclass
class _AffineBase:
    """A base update written as ``a z + b u + c xi + d`` with symbolic entries."""

    blocks: tuple[Block, ...]
    apps: list[sympy.Expr]
    noises: list[tuple[NoiseSymbol, NoiseSpec]]
    a: list[list[sympy.Expr]]
    b: list[list[sympy.Expr]]
    c: list[list[sympy.Expr]]
    d: list[sympy.Expr]
    coefficients: Mapping[Coefficient, CoefficientDef]


def _affine_base(solver: Solver, what: str) -> _AffineBase:
    upd = solver.update
    if upd.lets:
        raise ValueError(f"{what}: the base solver {solver.method} uses temporaries (stages)")
    Z = tuple(upd.targets)
    apps = sorted(upd.field_applications, key=sympy.default_sort_key)
    for app in apps:
        f, _ = field_of(app)
        n = len(f.depends)
        if tuple(app.args[:n]) != tuple(f.depends) or (f.time and app.args[n] != t):
            raise ValueError(f"{what}: the base solver evaluates {app} away from the slice start")
    noises = [(xi, spec) for xi, spec in upd.noises if spec.kind == "normal"]
    dummies = [sympy.Dummy(f"u{k}") for k in range(len(apps))]
    xs = [xi for xi, _ in noises]
    variables = [*Z, *dummies, *xs]
    zero = dict.fromkeys(variables, sympy.Integer(0))
    a, b, c, d = [], [], [], []
    for e in upd.exprs:
        e = sympy.expand(e.xreplace(dict(zip(apps, dummies))), power_base=False, log=False)
        rows = []
        for v in variables:
            g = sympy.diff(e, v)
            if any(s in g.free_symbols for s in variables):
                raise ValueError(
                    f"{what}: the base solver {solver.method} is not affine in the state, the "
                    f"field values and the noise ({v} enters nonlinearly)"
                )
            rows.append(g)
        a.append(rows[: len(Z)])
        b.append(rows[len(Z) : len(Z) + len(apps)])
        c.append(rows[len(Z) + len(apps) :])
        d.append(e.xreplace(zero))
    return _AffineBase(Z, apps, noises, a, b, c, d, upd.coefficients)


class _BaseValues:
    """Float64 values of the base update's affine entries on sub-slices."""

    def __init__(self, base: _AffineBase) -> None:
        self.base = base
        entries = [
            *(e for row in base.a for e in row),
            *(e for row in base.b for e in row),
            *(e for row in base.c for e in row),
            *base.d,
        ]
        coefs = sorted(
            {s for e in entries for s in e.free_symbols if isinstance(s, Coefficient)}, key=str
        )
        self.coefs = coefs
        defs = [base.coefficients[c] for c in coefs]
        params = {s for e in entries for s in e.free_symbols if isinstance(s, Parameter)}
        for dd in defs:
            if dd.expr is not None:
                params |= {s for s in dd.expr.free_symbols if isinstance(s, Parameter)}
        self.P = sorted(params, key=str)
        self._defs = [
            (
                dd,
                spell_lambdify([t, h, *self.P], dd.expr, "numpy") if dd.expr is not None else None,
            )
            for dd in defs
        ]
        self._entries = spell_lambdify([t, h, *self.P, *coefs], entries, "numpy")
        self.n, self.nu, self.nxi = len(base.blocks), len(base.apps), len(base.noises)

    def at(
        self, t0: np.ndarray, s: np.ndarray, params: Mapping[Parameter, Any]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``a (m, n, n)``, ``b (m, n, nu)``, ``c (m, n, nxi)``, ``d (m, n)`` on slices."""
        pv = [float(params[p]) for p in self.P]
        m = t0.shape[0]
        vals, groups = [], {}
        with np.errstate(all="ignore"):
            for dd, fn in self._defs:
                if fn is not None:
                    v = fn(t0, s, *pv)
                else:
                    key = id(dd.numeric)
                    if key not in groups:
                        groups[key] = dd.numeric.evaluate(t0, s, params)
                    v = groups[key][dd.key]
                vals.append(np.broadcast_to(np.asarray(v, np.float64), (m,)))
            raw = self._entries(t0, s, *pv, *vals)
        flat = [np.broadcast_to(np.asarray(v, np.float64), (m,)) for v in raw]
        n, nu, nxi = self.n, self.nu, self.nxi
        k = 0

        def take(rows: int, cols: int) -> np.ndarray:
            nonlocal k
            out = np.stack(flat[k : k + rows * cols], axis=-1).reshape(m, rows, cols)
            k += rows * cols
            return out

        a, b, c = take(n, n), take(n, nu), take(n, nxi)
        d = take(n, 1)[..., 0]
        return a, b, c, d


@dataclass(frozen=True)
class PoissonMidpoint:
    r"""The Poisson midpoint method with ``K`` virtual sub-steps of the ``base`` solver.

    Parameters
    ----------
    K:
        Sub-steps per step (:math:`K \ge 1`; ``K = 1`` is the base solver).
    option:
        1 (every midpoint with probability :math:`1/K`) or 2 (one midpoint, uniformly).
    base:
        The fine-step solver strategy (default: exponential Euler -- LMC without a linear
        part); its update must be affine in the state, the field values and the noise.
    variance_reduction:
        Take the estimated selection variance out of the injected noise (see the module
        docstring).
    """

    K: int
    option: int = 1
    base: SolverStrategy = field(default_factory=ExponentialEuler)
    variance_reduction: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.K, bool) or int(self.K) != self.K or self.K < 1:
            raise ValueError(f"the Poisson midpoint method needs K >= 1 sub-steps, got {self.K!r}")
        if self.option not in (1, 2):
            raise ValueError(
                f"option must be 1 (Bernoulli 1/K) or 2 (one uniform midpoint), got {self.option!r}"
            )

    @property
    def expected_evaluations(self) -> float:
        """Field evaluations per step and walker, in expectation: :math:`2 - 1/K`."""
        return 2.0 - 1.0 / self.K

    def derive(self, flow: Any) -> Solver:
        what = f"Poisson midpoint (K = {self.K}, option {self.option})"
        base_solver = self.base.derive(flow)
        base = _affine_base(base_solver, what)
        step = _MidpointStep(self, base, _BaseValues(base), base_solver.method)
        u0 = step.field_at_start()
        zhat, gauss = step.frozen_chain(u0)
        sel_terms = step.selections(u0, zhat)
        exprs = step.corrected(zhat, gauss, sel_terms)
        upd = Update(
            base.blocks,
            tuple(exprs),
            (*step.noises, *step.uniforms),
            tuple(step.lets),
            step.coef.defs,
        )
        K = self.K
        notes = [
            f"approximates {K} steps of {base_solver.method} with step h/{K}",
            f"field evaluations per step and walker: 2 - 1/K = {self.expected_evaluations:g} "
            "in expectation",
        ]
        if self.variance_reduction:
            notes.append("variance reduction: estimated selection variance removed from the noise")
        return Solver(
            method=what,
            exact=False,
            reason=f"randomized midpoints of {K} frozen-drift sub-steps of {base_solver.method}",
            update=upd,
            weak_order=base_solver.weak_order or 1,
            time=step.group.method,
            notes=tuple(notes),
        )

    @staticmethod
    def _at(app: sympy.Expr, blocks: tuple[Block, ...], states: list, label: Any) -> sympy.Expr:
        """``app`` evaluated at the temporaries ``states`` (and time ``label``)."""
        f, out = field_of(app)
        n = len(f.depends)
        args = [states[blocks.index(a)] if a in blocks else a for a in app.args[:n]]
        if f.time:
            args.append(label)
        return f.apply(out, args)

    def _midpoint_terms(
        self,
        base: _AffineBase,
        u0: list[Temporary],
        states: list,
        i: int,
        u: NoiseSymbol,
        lo: sympy.Expr,
        hi: sympy.Expr,
        coef: Any,
    ) -> tuple[list[sympy.Expr], list[sympy.Expr]]:
        """The correction terms of midpoint ``i`` per block (selected where lo <= u < hi)."""
        n, nu = len(base.blocks), len(base.apps)
        label = t + sympy.Rational(i, self.K) * h
        ind = Indicator(u, lo, hi)
        evals = [
            Selected(self._at(app, base.blocks, states, label), u, lo, hi) for app in base.apps
        ]
        terms = []
        for r in range(n):
            terms.append(
                sum(
                    (coef(("S", i, r, k)) * (evals[k] - ind * u0[k]) for k in range(nu)),
                    sympy.Integer(0),
                )
            )
        return terms, [ind] * n

    def _coefficients(
        self, values: _BaseValues, t0: np.ndarray, s: np.ndarray, params: Mapping[Parameter, Any]
    ) -> dict[Any, np.ndarray]:
        K, n, nu, nxi = self.K, values.n, values.nu, values.nxi
        m = t0.shape[0]
        delta = s / K
        subs = [values.at(t0 + i * delta, delta, params) for i in range(K)]
        out: dict[Any, np.ndarray] = {}
        for i, (a, b, c, d) in enumerate(subs):
            for r in range(n):
                for cc in range(n):
                    out[("a", i, r, cc)] = a[:, r, cc]
                for k in range(nu):
                    out[("b", i, r, k)] = b[:, r, k]
                for j in range(nxi):
                    out[("c", i, r, j)] = c[:, r, j]
                out[("d", i, r)] = d[:, r]
        # S_i = K a_{K-1} ... a_{i+1} b_i and the Gaussian variance Q = sum_m |A_m c_m|^2
        prod = np.broadcast_to(np.eye(n), (m, n, n)).copy()
        Q = np.zeros((m, n))
        for i in range(K - 1, -1, -1):
            a, b, c, _ = subs[i]
            if i >= 1:
                S = K * np.einsum("mrc,mck->mrk", prod, b)
                for r in range(n):
                    for k in range(nu):
                        out[("S", i, r, k)] = S[:, r, k]
            Q += np.sum(np.einsum("mrc,mcj->mrj", prod, c) ** 2, axis=-1)
            prod = np.einsum("mrc,mcd->mrd", prod, a)
        for r in range(n):
            out[("Q", r)] = np.where(Q[:, r] > 0, Q[:, r], 1.0)  # no noise: nothing to scale
        return out


class _MidpointStep:
    r"""The symbolic update of one Poisson midpoint step, assembled in named parts.

    The parts, in order: the Gaussians of the :math:`K` fine steps (:meth:`__init__`), the
    field at the slice start (:meth:`field_at_start`), the frozen-drift chain
    :math:`\hat Z_{i+1} = a_i \hat Z_i + b_i u_0 + c_i \xi_i + d_i`
    (:meth:`frozen_chain`), the randomly selected midpoint corrections
    :math:`S_i (u(\hat Z_i) - u_0)` (:meth:`selections`) and the corrected, optionally
    variance-reduced, end state (:meth:`corrected`). Every coefficient is one entry of a
    single numeric group evaluated in float64 per slice.
    """

    def __init__(
        self, spec: PoissonMidpoint, base: _AffineBase, values: _BaseValues, method: str
    ) -> None:
        self.spec, self.base = spec, base
        K, n, nu, nxi = spec.K, values.n, values.nu, values.nxi
        self.K, self.n, self.nu, self.nxi = K, n, nu, nxi
        memo: dict[tuple, dict] = {}

        def evaluate(t0: np.ndarray, s: np.ndarray, params: Mapping[Parameter, Any]) -> dict:
            # the same grid is evaluated again by every probe of the exact moment analysis
            key = (
                t0.tobytes(),
                s.tobytes(),
                tuple(sorted((p.name, float(v)) for p, v in params.items() if np.ndim(v) == 0)),
            )
            if key not in memo:
                if len(memo) > 4:
                    memo.clear()
                memo[key] = spec._coefficients(values, t0, s, params)
            return memo[key]

        self.group = NumericCoefficients(
            self._keys(), evaluate, method=f"{K} sub-steps of {method}", autonomous=False
        )
        self.coef = CoefficientSymbols(self.group, lambda key: "P_" + "_".join(map(str, key)))
        self.lets: list[tuple[Temporary, sympy.Expr]] = []
        self.uniforms: list[tuple[NoiseSymbol, NoiseSpec]] = []
        # Gaussians of the K fine steps (each standing for its part of the slice)
        self.noises: list[tuple[NoiseSymbol, NoiseSpec]] = []
        self.fine_noises: list[list[NoiseSymbol]] = []
        for i in range(K):
            row = []
            for xi, nspec in base.noises:
                sym = NoiseSymbol(f"{xi.name}_s{i}")
                self.noises.append((sym, NoiseSpec(nspec.like, Fraction(i, K), Fraction(i + 1, K))))
                row.append(sym)
            self.fine_noises.append(row)

    def _keys(self) -> tuple[tuple, ...]:
        K, n, nu, nxi = self.K, self.n, self.nu, self.nxi
        keys = [("S", i, r, k) for i in range(1, K) for r in range(n) for k in range(nu)]
        keys += [("Q", r) for r in range(n)]
        for i in range(K):
            keys += [("a", i, r, c) for r in range(n) for c in range(n)]
            keys += [("b", i, r, k) for r in range(n) for k in range(nu)]
            keys += [("c", i, r, j) for r in range(n) for j in range(nxi)]
            keys += [("d", i, r) for r in range(n)]
        return tuple(keys)

    def _sum(self, terms: Any) -> sympy.Expr:
        return sum(terms, sympy.Integer(0))

    def field_at_start(self) -> list[Temporary]:
        """The field at the slice start, evaluated once: :math:`u_0`."""
        u0 = []
        for k, app in enumerate(self.base.apps):
            tmp = Temporary(f"u0_{k}")
            self.lets.append((tmp, app))
            u0.append(tmp)
        return u0

    def frozen_chain(
        self, u0: list[Temporary]
    ) -> tuple[list[list[sympy.Expr]], list[list[sympy.Expr]]]:
        """The frozen-drift chain :math:`\\hat Z_0, \\dots, \\hat Z_K` and, with variance
        reduction, its Gaussian part."""
        Z, n, nu, nxi, coef = self.base.blocks, self.n, self.nu, self.nxi, self.coef
        zhat: list[list[sympy.Expr]] = [list(Z)]
        gauss: list[list[sympy.Expr]] = [[sympy.Integer(0)] * n]
        for i in range(self.K):
            new, newg = [], []
            for r in range(n):
                e = self._sum(coef(("a", i, r, c)) * zhat[i][c] for c in range(n))
                e += self._sum(coef(("b", i, r, k)) * u0[k] for k in range(nu))
                noise = self._sum(coef(("c", i, r, j)) * self.fine_noises[i][j] for j in range(nxi))
                e += noise + coef(("d", i, r))
                tmp = Temporary(f"zh{i + 1}_{Z[r].name}")
                self.lets.append((tmp, e))
                new.append(tmp)
                if self.spec.variance_reduction:
                    g = self._sum(coef(("a", i, r, c)) * gauss[i][c] for c in range(n))
                    gt = Temporary(f"g{i + 1}_{Z[r].name}")
                    self.lets.append((gt, g + noise))
                    newg.append(gt)
            zhat.append(new)
            gauss.append(newg)
        return zhat, gauss

    def _uniform(self, name: str) -> NoiseSymbol:
        u = NoiseSymbol(name)
        self.uniforms.append((u, NoiseSpec(self.base.blocks[0], kind="uniform")))
        return u

    def selections(
        self, u0: list[Temporary], zhat: list[list[sympy.Expr]]
    ) -> list[tuple[list[sympy.Expr], list[sympy.Expr]]]:
        """The selected midpoint corrections ``(S_i Δu_i, indicator)`` per midpoint: option 1
        draws one uniform per midpoint (Bernoulli :math:`1/K`); option 2 one uniform per step,
        with a single selected evaluation when the field does not depend on time."""
        K, spec = self.K, self.spec
        autonomous = not any(field_of(a)[0].time for a in self.base.apps)
        if spec.option == 1:
            terms = []
            for i in range(1, K):
                u = self._uniform(f"sel_{i}")
                lo, hi = sympy.Integer(0), sympy.Rational(1, K)
                terms.append(spec._midpoint_terms(self.base, u0, zhat[i], i, u, lo, hi, self.coef))
            return terms
        if autonomous and K > 1:
            return self._one_selected_evaluation(u0, zhat)
        u = NoiseSymbol("sel")
        if K > 1:
            self.uniforms.append((u, NoiseSpec(self.base.blocks[0], kind="uniform")))
        return [
            spec._midpoint_terms(
                self.base,
                u0,
                zhat[i],
                i,
                u,
                sympy.Rational(i, K),
                sympy.Rational(i + 1, K),
                self.coef,
            )
            for i in range(1, K)
        ]

    def _one_selected_evaluation(
        self, u0: list[Temporary], zhat: list[list[sympy.Expr]]
    ) -> list[tuple[list[sympy.Expr], list[sympy.Expr]]]:
        """Option 2 on an autonomous field: the selected state first, then one evaluation."""
        K, n, nu, Z = self.K, self.n, self.nu, self.base.blocks
        u = self._uniform("sel")
        ind = [Indicator(u, sympy.Rational(i, K), sympy.Rational(i + 1, K)) for i in range(K)]
        zsel = []
        for r in range(n):
            tmp = Temporary(f"zsel_{Z[r].name}")
            self.lets.append((tmp, self._sum(ind[i] * zhat[i][r] for i in range(1, K))))
            zsel.append(tmp)
        picked = Indicator(u, sympy.Rational(1, K), sympy.Integer(1))
        evals = [
            Selected(self.spec._at(app, Z, zsel, None), u, sympy.Rational(1, K), sympy.Integer(1))
            for app in self.base.apps
        ]
        out = []
        for i in range(1, K):
            S = [[self.coef(("S", i, r, k)) for k in range(nu)] for r in range(n)]
            terms = [
                self._sum(S[r][k] * ind[i] * (evals[k] - picked * u0[k]) for k in range(nu))
                for r in range(n)
            ]
            out.append((terms, [ind[i]] * n))
        return out

    def corrected(
        self,
        zhat: list[list[sympy.Expr]],
        gauss: list[list[sympy.Expr]],
        sel_terms: list[tuple[list[sympy.Expr], list[sympy.Expr]]],
    ) -> list[sympy.Expr]:
        """The end state :math:`\\hat Z_K + \\sum_i S_i \\Delta u_i`, with variance reduction
        the Gaussian part scaled by :math:`\\sqrt{(1 - (1 - 1/K)\\hat v / Q)_+}`."""
        n, K = self.n, self.K
        corr = [sympy.Integer(0)] * n
        for terms, _ in sel_terms:
            corr = [corr[r] + terms[r] for r in range(n)]
        exprs = []
        for r in range(n):
            e = zhat[K][r] + corr[r]
            if self.spec.variance_reduction and sel_terms:
                vhat = self._sum(term[r] ** 2 for term, _ in sel_terms)
                ratio = 1 - (1 - sympy.Rational(1, K)) * vhat / self.coef(("Q", r))
                scale = sympy.sqrt((ratio + sympy.Abs(ratio)) / 2)
                e += (scale - 1) * gauss[K][r]
            exprs.append(e)
        return exprs
