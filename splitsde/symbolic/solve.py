r"""Derive a solver for a sub-flow: exact where the algebra allows, approximate otherwise.

The classifier writes the drift of the changed blocks :math:`z` as

.. math:: f(z, y, t) = A(t)\,z + \sum_k v_k(t)\,u_k + \text{(nonlinear atoms)},

where :math:`y` are the blocks the flow does not change, each *atom* :math:`u_k` is a product of
state-dependent factors (a block of :math:`y`, a field of :math:`y`, a constant 1) and
:math:`v_k(t)` collects its state-free coefficients. Then

* **shear** (:math:`A = 0`, every atom free of :math:`z`): exact,
  :math:`z \leftarrow z + \sum_k (\int v_k)\,u_k + (\int g^2)^{1/2}\xi`;
* **linear** (:math:`A(t) = c(t) A_0`, atoms free of :math:`z`, additive noise): exact via
  :math:`\Phi = e^{A_0 \Delta C}`, :math:`\Delta C = \int_t^{t+h} c`, the Van Loan covariance
  and the forced responses :math:`\int \Phi(t+h, \tau) v_k(\tau)\,d\tau`;
* time integrals in closed form by sympy where possible, Gauss--Legendre quadrature otherwise;
* **exponential Euler** when a linear part exists but some atom depends on :math:`z` (or on
  time through an opaque field): the linear part stays exact, the atom is frozen at the start
  of the slice (weak order 1);
* **Euler--Maruyama** for everything else (weak order 1).

References: exact splitting of Langevin dynamics, Leimkuhler & Matthews, *Molecular Dynamics*
(Springer 2015), ch. 7; exponential integrators, Hochbruck & Ostermann, *Acta Numerica* 19
(2010); Van Loan, *IEEE TAC* 23 (1978).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import sympy

from splitsde.symbolic.field import Field, field_applications, field_of
from splitsde.symbolic.flowmap import FlowMap
from splitsde.symbolic.numeric import (
    forced_response,
    gauss_legendre,
    phi1,
    psd_cholesky,
    van_loan,
)
from splitsde.symbolic.parse import as_expression
from splitsde.symbolic.spellings import lambdify as _spell_lambdify
from splitsde.symbolic.symbols import (
    Block,
    Coefficient,
    NoiseSymbol,
    Parameter,
    Temporary,
    h,
    t,
)
from splitsde.symbolic.update import (
    CoefficientDef,
    CoefficientSymbols,
    NoiseSpec,
    NumericCoefficients,
    Update,
)

__all__ = [
    "Auto",
    "Custom",
    "EulerMaruyama",
    "Exact",
    "ExponentialEuler",
    "Solver",
    "SolverStrategy",
    "noise_symbol",
]

#: Gauss--Legendre nodes used when a time integral has no closed form.
QUADRATURE_NODES = 16


@dataclass(frozen=True)
class TimeIntegration:
    """How time integrals of coefficients are computed: sympy closed forms first (unless
    ``closed_form`` is false), Gauss--Legendre quadrature with ``nodes`` nodes otherwise."""

    nodes: int = QUADRATURE_NODES
    closed_form: bool = True

    def __post_init__(self) -> None:
        if self.nodes < 1:
            raise ValueError("quadrature needs at least one node")

    @property
    def label(self) -> str:
        return f"Gauss-Legendre quadrature ({self.nodes} nodes)"


_tau = sympy.Dummy("tau", real=True)


def noise_symbol(block: Block) -> NoiseSymbol:
    r"""The standard normal :math:`\xi_b` of block ``b`` inside a solver's update."""
    return NoiseSymbol(f"xi_{block.name}")


# ---------------------------------------------------------------------------------------------
# The derived solver
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Solver:
    """A derived (or user-chosen) solver of one sub-flow.

    Attributes
    ----------
    method:
        ``"shear"``, ``"linear"``, ``"exponential Euler"``, ``"Euler-Maruyama"``, ...
    exact:
        Whether the update reproduces the sub-flow's law exactly over any slice.
    reason:
        Why this method (and why it is exact or not).
    weak_order:
        Local weak error :math:`O(h^{p+1})`, i.e. weak order :math:`p`; ``None`` if exact.
    strong_order:
        Strong order where one is known; ``None`` if exact or unknown.
    time:
        How time dependence is treated: ``"autonomous"``, ``"closed form (sympy)"``,
        ``"Gauss-Legendre quadrature (n nodes)"``, ``"frozen at slice start"``.
    update:
        The symbolic update (the single source of truth for lowering and analysis).
    """

    method: str
    exact: bool
    reason: str
    update: Update
    weak_order: int | None = None
    strong_order: float | None = None
    time: str = "autonomous"
    notes: tuple[str, ...] = field(default=())

    @property
    def fields(self) -> tuple[Field, ...]:
        """Fields this solver evaluates (inside its flow maps too)."""
        out: list[Field] = []
        for app in sorted(self.update.field_applications, key=str):
            f = field_of(app)[0]
            for g in f.inner_fields if isinstance(f, FlowMap) else (f,):
                if g not in out:
                    out.append(g)
        return tuple(out)

    def display_expressions(self) -> list[tuple[sympy.Expr, sympy.Expr]]:
        """``(target, readable expression)`` pairs; numeric coefficients stay as symbols."""
        out = []
        for tgt, e in zip(self.update.targets, self.update.exprs):
            terms: dict[sympy.Expr, sympy.Expr] = {}
            for term in sympy.Add.make_args(e):
                syms = _state_symbols(term) + [
                    s for s in term.free_symbols if isinstance(s, NoiseSymbol)
                ]
                coef, atom = term.as_independent(*syms, as_Add=False) if syms else (term, 1)
                terms[atom] = terms.get(atom, 0) + coef
            d = sympy.Add(*[_tidy(self.update.display(c)) * a for a, c in terms.items()])
            out.append((tgt, d))
        return out

    def formula(self) -> str:
        """The update as readable text (sympy pretty printing), one line per block."""
        lines = []
        for name, e in self.update.lets:
            lines.append(f"{name} = {sympy.sstr(e)}")
        for tgt, d in self.display_expressions():
            lines.append(f"{tgt} <- {sympy.sstr(d)}")
        defs = self._numeric_definitions()
        return "\n".join(lines + defs)

    def pretty(self) -> str:
        """The update as a sympy pretty-printed block."""
        parts = []
        for tgt, d in self.display_expressions():
            parts.append(sympy.pretty(sympy.Eq(sympy.Symbol(f"{tgt}'"), d), use_unicode=True))
        return "\n".join(parts + self._numeric_definitions())

    def latex(self) -> str:
        """The update in LaTeX (an ``aligned`` environment)."""
        rows = [
            rf"{sympy.latex(tgt)} &\leftarrow {sympy.latex(d)}"
            for tgt, d in self.display_expressions()
        ]
        return r"\begin{aligned}" + r"\\ ".join(rows) + r"\end{aligned}"

    def _numeric_definitions(self) -> list[str]:
        out = []
        groups: dict[int, list[str]] = {}
        for c, d in self.update.coefficients.items():
            if d.numeric is not None:
                groups.setdefault(id(d.numeric), [d.numeric.method]).append(str(c))
            elif d.method != "closed form":
                shown = d.display if d.display is not None else d.expr
                out.append(f"  where {c} = {shown}  [{d.method}]")
        for method, *names in groups.values():
            out.append(f"  where {', '.join(names)}: float64 {method}")
        return out

    def describe(self) -> str:
        order = "exact" if self.exact else f"weak order {self.weak_order}"
        fields_ = ", ".join(f.name for f in self.fields) or "none"
        lines = [
            f"{self.method} ({order}); time: {self.time}; fields evaluated: {fields_}",
            f"  why: {self.reason}",
            *(f"  note: {n}" for n in self.notes),
            *("  " + line for line in self.formula().splitlines()),
        ]
        return "\n".join(lines)

    def __repr__(self) -> str:
        order = "exact" if self.exact else f"weak order {self.weak_order}"
        return f"Solver({self.method}, {order}, time={self.time!r})"

    def _repr_latex_(self) -> str:
        return "$" + self.latex() + "$"


def _tidy(e: sympy.Expr) -> sympy.Expr:
    """A readable form of a state-free coefficient (display only)."""
    if e.has(phi1):
        e = e.rewrite(sympy.exp)
    if e.has(sympy.Integral) or any(isinstance(s, Coefficient) for s in e.free_symbols):
        return e
    if isinstance(e, sympy.Pow) and e.exp == sympy.Rational(1, 2):
        return sympy.sqrt(_tidy(e.base))
    try:
        r = sympy.factor_terms(sympy.expand(sympy.cancel(e), power_exp=False))
    except Exception:  # pragma: no cover - display only
        return e
    if r.has(sympy.I) and not e.has(sympy.I):
        return e
    return r if sympy.count_ops(r) <= sympy.count_ops(e) else e


class SolverStrategy(Protocol):
    """Anything with ``derive(flow) -> Solver``: the derived default or a user's choice."""

    def derive(self, flow: Any) -> Solver: ...


# ---------------------------------------------------------------------------------------------
# Structure of a flow's drift
# ---------------------------------------------------------------------------------------------
def _is_state(expr: sympy.Basic) -> bool:
    return any(isinstance(s, Block | Temporary) for s in expr.free_symbols) or bool(
        field_applications(expr)
    )


def _expand(expr: sympy.Expr) -> sympy.Expr:
    return sympy.expand(expr, power_base=False, power_exp=False, log=False)


@dataclass
class _LinearForm:
    changed: tuple[Block, ...]
    A: sympy.Matrix
    atoms: list[sympy.Expr]
    v: list[list[sympy.Expr]]  # v[k][i]: coefficient of atom k in the drift of changed block i
    approximate: dict[sympy.Expr, str]
    noise: list[sympy.Expr]
    multiplicative: str | None


def _linear_form(flow: Any) -> _LinearForm:
    Z = flow.changed
    zset = set(Z)
    n = len(Z)
    A = sympy.zeros(n, n)
    atoms: list[sympy.Expr] = []
    v: list[list[sympy.Expr]] = []
    approx: dict[sympy.Expr, str] = {}
    for i, b in enumerate(Z):
        drift = flow.drift.get(b, sympy.Integer(0))
        for term in sympy.Add.make_args(_expand(drift)):
            if term == 0:
                continue
            syms = _state_symbols(term)
            if syms:
                coef, state = term.as_independent(*syms, as_Add=False)
            else:
                coef, state = term, sympy.Integer(1)
            if state in zset:
                A[i, Z.index(state)] += coef
                continue
            if state not in atoms:
                atoms.append(state)
                v.append([sympy.Integer(0)] * n)
            k = atoms.index(state)
            v[k][i] += coef
    for u in atoms:
        reads = {s for s in u.free_symbols if isinstance(s, Block)}
        if reads & zset:
            approx[u] = (
                f"drift depends nonlinearly on changed block(s) "
                f"{', '.join(sorted(map(str, reads & zset)))} through {u}"
            )
        elif t in u.free_symbols:
            timed = [a for a in field_applications(u) if t in a.free_symbols]
            what = f"time-dependent field {timed[0]}" if timed else f"{u} (not separable in t)"
            approx[u] = f"{what} frozen at the start of the slice"
    noise = [flow.noise.get(b, sympy.Integer(0)) for b in Z]
    mult = None
    for b, g in zip(Z, noise):
        if _is_state(g):
            mult = f"noise of block {b} depends on the state (multiplicative noise)"
    return _LinearForm(Z, A, atoms, v, approx, noise, mult)


def _state_symbols(expr: sympy.Expr) -> list[sympy.Basic]:
    syms: list[sympy.Basic] = [s for s in expr.free_symbols if isinstance(s, Block | Temporary)]
    syms.extend(field_applications(expr))
    return syms


def _time_factor(e: sympy.Expr) -> sympy.Expr:
    """The time-dependent factor of ``e`` (``beta(t)`` in ``-Gamma*beta(t)/2``)."""
    if t not in e.free_symbols:
        return sympy.Integer(1)
    return sympy.factor(e).as_independent(t, as_Add=False)[1]


def _clock(A: sympy.Matrix) -> tuple[sympy.Expr, sympy.Matrix] | None:
    """Write ``A(t) = c(t) A0`` with ``A0`` free of ``t``; ``None`` if impossible."""
    if all(t not in e.free_symbols for e in A):
        return sympy.Integer(1), A
    ref = next(e for e in A if t in e.free_symbols)
    c = _time_factor(ref)
    A0 = A.applyfunc(lambda e: sympy.cancel(e / c))
    if any(t in e.free_symbols for e in A0):
        return None
    return c, A0


# ---------------------------------------------------------------------------------------------
# Time integrals
# ---------------------------------------------------------------------------------------------
def _quadrature_sum(integrand_in_tau: sympy.Expr, nodes: int) -> sympy.Expr:
    x, w = gauss_legendre(nodes)
    return h * sympy.Add(
        *[
            sympy.Float(wi, 17) * integrand_in_tau.xreplace({_tau: t + sympy.Float(xi, 17) * h})
            for xi, wi in zip(x, w)
        ]
    )


def _tau_integral(integrand: sympy.Expr, ti: TimeIntegration) -> tuple[sympy.Expr, str]:
    r""":math:`\int_t^{t+h} f(\tau)\,d\tau` in closed form if sympy finds one, else quadrature."""
    if ti.closed_form:
        try:
            r = sympy.integrate(integrand, (_tau, t, t + h), manual=True)
            if not r.has(sympy.Integral) and not r.has(sympy.I) and r.is_finite is not False:
                return r, "closed form (sympy)"
        except Exception:  # sympy may raise on exotic integrands; fall back to quadrature
            pass
    return _quadrature_sum(integrand, ti.nodes), ti.label


def _time_integral(v: sympy.Expr, ti: TimeIntegration) -> tuple[sympy.Expr, str]:
    r""":math:`\int_t^{t+h} v(\tau)\,d\tau`; ``v`` is written in ``t``."""
    if v == 0:
        return sympy.Integer(0), "autonomous"
    if t not in v.free_symbols:
        return v * h, "autonomous"
    return _tau_integral(v.xreplace({t: _tau}), ti)


def _shifted(expr_th: sympy.Expr) -> sympy.Expr:
    """An expression in (t, h) re-read as a function of the slice [tau, t+h]."""
    return expr_th.xreplace({t: _tau, h: t + h - _tau})


def _worst_time(kinds: list[str]) -> str:
    for key in ("frozen", "Gauss", "closed"):
        for k in kinds:
            if k.startswith(key):
                return k
    return "autonomous"


# ---------------------------------------------------------------------------------------------
# The linear family: shear, linear exact, exponential Euler
# ---------------------------------------------------------------------------------------------
def _scalar_update(
    b: Block,
    a: sympy.Expr,
    atoms: list[sympy.Expr],
    v: list[sympy.Expr],
    g: sympy.Expr,
    ti: TimeIntegration,
    coefs: dict[Coefficient, CoefficientDef],
) -> tuple[sympy.Expr, list[str]]:
    """Closed-form (or quadrature) update of one block with scalar rate ``a(t)``."""
    times: list[str] = []
    xi = noise_symbol(b)

    def named(value: sympy.Expr, kind: str, display: sympy.Expr, label: str) -> sympy.Expr:
        if kind.startswith("Gauss"):
            c = Coefficient(f"{label}_{b.name}")
            coefs[c] = CoefficientDef(expr=value, display=display, method=kind)
            return c
        return value

    if a == 0:
        new = b
        for u, vk in zip(atoms, v):
            if vk == 0:
                continue
            val, kind = _time_integral(vk, ti)
            times.append(kind)
            disp = sympy.Integral(vk.xreplace({t: _tau}), (_tau, t, t + h))
            new += named(val, kind, disp, f"I{len(times)}") * u
        if g != 0:
            var, kind = _time_integral(g**2, ti)
            times.append(kind)
            disp = sympy.Integral((g**2).xreplace({t: _tau}), (_tau, t, t + h))
            new += sympy.sqrt(named(var, kind, disp, "Q")) * xi
        return new, times

    c = _time_factor(a)
    a0 = sympy.cancel(a / c)
    dC, kind = _time_integral(c, ti)
    times.append(kind)
    phi = sympy.exp(a0 * dC)
    new = phi * b
    for u, vk in zip(atoms, v):
        if vk == 0:
            continue
        w = sympy.cancel(vk / c)
        if t not in w.free_symbols:
            psi = sympy.factor_terms(w * dC) * phi1(a0 * dC)
        else:
            integrand = sympy.exp(a0 * _shifted(dC)) * vk.xreplace({t: _tau})
            val, kind = _tau_integral(integrand, ti)
            times.append(kind)
            psi = named(val, kind, sympy.Integral(integrand, (_tau, t, t + h)), f"Psi{len(times)}")
        new += psi * u
    if g != 0:
        kappa = sympy.cancel(g**2 / c)
        if t not in kappa.free_symbols:
            q = sympy.factor_terms(kappa * dC) * phi1(2 * a0 * dC)
        else:
            integrand = sympy.exp(2 * a0 * _shifted(dC)) * (g**2).xreplace({t: _tau})
            val, kind = _tau_integral(integrand, ti)
            times.append(kind)
            q = named(val, kind, sympy.Integral(integrand, (_tau, t, t + h)), "Q")
        new += sympy.sqrt(q) * xi
    return new, times


def _lambdify(args: list[sympy.Basic], expr: sympy.Expr):
    return _spell_lambdify(args, expr, "numpy")


class _NumericLinear:
    r"""Float64 :math:`\Phi`, forced responses and noise factor of a coupled linear flow.

    Solves :math:`dz = (c(t) A_0 z + \sum_k v_k(t) u_k)\,dt + G(t)\,dW` over a slice with
    ``A0`` possibly frozen at the slice start (then it may depend on ``t``).
    """

    def __init__(
        self,
        A0: sympy.Matrix,
        dC: sympy.Expr,
        noise_sq: list[sympy.Expr],
        clock: sympy.Expr,
        v: list[list[sympy.Expr]],
        nodes: int,
    ) -> None:
        self.n = A0.shape[0]
        exprs = [*A0, dC, *noise_sq, *(e for vk in v for e in vk)]
        self.params = sorted(
            {s for e in exprs for s in e.free_symbols if isinstance(s, Parameter)}, key=str
        )
        P = self.params
        self._A0 = _lambdify([t, *P], A0)
        self._dC = _lambdify([t, h, *P], dC)
        self.nodes = nodes
        self.kappa = [sympy.cancel(g2 / clock) for g2 in noise_sq]
        self.noise_clock = all(t not in k.free_symbols for k in self.kappa)
        self._kappa = _lambdify([*P], sympy.Matrix(self.kappa))
        self._g2 = _lambdify([t, *P], sympy.Matrix(noise_sq))
        self.has_noise = any(g != 0 for g in noise_sq)
        self.w = [[sympy.cancel(e / clock) for e in vk] for vk in v]
        self.atom_clock = [all(t not in e.free_symbols for e in wk) for wk in self.w]
        self._w = [_lambdify([*P], sympy.Matrix(wk)) for wk in self.w]
        self._v = [_lambdify([t, *P], sympy.Matrix(vk)) for vk in v]
        self.autonomous = all(t not in e.free_symbols for e in exprs)
        keys: list[Any] = [("Phi", i, j) for i in range(self.n) for j in range(self.n)]
        keys += [("Psi", k, i) for k in range(len(v)) for i in range(self.n)]
        if self.has_noise:
            keys += [("L", i, j) for i in range(self.n) for j in range(i + 1)]
        self.keys = tuple(keys)

    @staticmethod
    def _bcast(x: Any, shape: tuple[int, ...]) -> np.ndarray:
        return np.broadcast_to(np.asarray(x, dtype=np.float64), shape)

    def evaluate(self, t0: np.ndarray, s: np.ndarray, pv: Mapping[Any, Any]) -> dict:
        n, m = self.n, t0.shape
        try:
            p = [float(pv[q]) for q in self.params]
        except TypeError as exc:
            raise TypeError(
                "a coupled linear flow needs scalar parameters "
                f"({', '.join(map(str, self.params))}); got a tensor"
            ) from exc
        A0 = np.stack([self._bcast(self._A0(tt, *p), (n, n)) for tt in t0.ravel()]).reshape(
            *m, n, n
        )
        dC = self._bcast(self._dC(t0, s, *p), m)
        phi = _batched_expm(A0 * dC[..., None, None])
        out: dict[Any, np.ndarray] = {}
        for i in range(n):
            for j in range(n):
                out[("Phi", i, j)] = phi[..., i, j]
        x, wq = gauss_legendre(self.nodes)
        need_quad = (self.has_noise and not self.noise_clock) or not all(self.atom_clock)
        if need_quad:
            tau = t0[..., None] + x * s[..., None]
            dCi = self._bcast(self._dC(tau, t0[..., None] + s[..., None] - tau, *p), tau.shape)
            phi_i = _batched_expm(A0[..., None, :, :] * dCi[..., None, None])
        for k in range(len(self.w)):
            if self.atom_clock[k]:
                wk = self._bcast(self._w[k](*p), (n, 1))[:, 0]
                psi = forced_response_batched(A0, wk, dC)
            else:
                vk = np.stack(
                    [self._bcast(self._v[k](tt, *p), (n, 1))[:, 0] for tt in tau.ravel()]
                ).reshape(*tau.shape, n)
                psi = np.einsum("...qij,...qj,q->...i", phi_i, vk, wq) * s[..., None]
            for i in range(n):
                out[("Psi", k, i)] = psi[..., i]
        if self.has_noise:
            if self.noise_clock:
                K = np.diag(self._bcast(self._kappa(*p), (n, 1))[:, 0])
                q = _batched_van_loan(A0, K, dC)
            else:
                g2 = np.stack(
                    [self._bcast(self._g2(tt, *p), (n, 1))[:, 0] for tt in tau.ravel()]
                ).reshape(*tau.shape, n)
                q = (
                    np.einsum("...qik,...qk,...qjk,q->...ij", phi_i, g2, phi_i, wq)
                    * s[..., None, None]
                )
            L = psd_cholesky(q)
            for i in range(n):
                for j in range(i + 1):
                    out[("L", i, j)] = L[..., i, j]
        return out


def _batched_expm(a: np.ndarray) -> np.ndarray:
    import scipy.linalg

    return scipy.linalg.expm(a)


def _batched_van_loan(A0: np.ndarray, K: np.ndarray, dC: np.ndarray) -> np.ndarray:
    out = np.empty((*dC.shape, *K.shape))
    flatA = A0.reshape(-1, *K.shape)
    flatT = dC.reshape(-1)
    res = np.empty((flatT.size, *K.shape))
    for i in range(flatT.size):
        res[i] = van_loan(flatA[i], K, flatT[i])[1]
    out[...] = res.reshape(out.shape)
    return out


def forced_response_batched(A0: np.ndarray, w: np.ndarray, dC: np.ndarray) -> np.ndarray:
    flatA = A0.reshape(-1, *A0.shape[-2:])
    flatT = dC.reshape(-1)
    res = np.stack([forced_response(flatA[i], w, flatT[i]) for i in range(flatT.size)])
    return res.reshape(*dC.shape, w.shape[0])


def _linear_family_update(
    lf: _LinearForm, frozen: bool, ti: TimeIntegration
) -> tuple[Update, str, list[str]]:
    """Update of ``dz = A z + sum_k v_k u_k + G dW`` with atoms frozen at the slice start."""
    Z, n = lf.changed, len(lf.changed)
    coefs: dict[Coefficient, CoefficientDef] = {}
    noises = tuple((noise_symbol(b), NoiseSpec(b)) for b, g in zip(Z, lf.noise) if g != 0)
    notes: list[str] = []
    diagonal = all(lf.A[i, j] == 0 for i in range(n) for j in range(n) if i != j)
    if diagonal:
        exprs, times = [], []
        for i, b in enumerate(Z):
            e, tk = _scalar_update(
                b, lf.A[i, i], lf.atoms, [vk[i] for vk in lf.v], lf.noise[i], ti, coefs
            )
            exprs.append(e)
            times += tk
        return (
            Update(tuple(Z), tuple(exprs), noises, coefficients=coefs),
            _worst_time(times),
            notes,
        )

    clock = None if frozen else _clock(lf.A)
    if clock is None:
        # coefficients without a common clock: freeze the whole linear part at the slice start
        A0, c = lf.A, sympy.Integer(1)
        dC, time = h, "frozen at slice start"
        noise_sq = [g**2 for g in lf.noise]
        v = [list(vk) for vk in lf.v]
        notes.append("linear coefficients frozen at the start of the slice")
    else:
        c, A0 = clock
        dC, time = _time_integral(c, ti)
        noise_sq = [g**2 for g in lf.noise]
        v = [list(vk) for vk in lf.v]
        if c != 1:
            notes.append(f"common clock c(t) = {c}")
    num = _NumericLinear(A0, dC, noise_sq, c, v, ti.nodes)
    if any(t in k.free_symbols for k in num.kappa) or not all(num.atom_clock):
        time = _worst_time([time, ti.label])
    group = NumericCoefficients(
        num.keys,
        num.evaluate,
        method="matrix exponential + Van Loan" + ("" if time == "autonomous" else f"; {time}"),
        autonomous=num.autonomous,
    )

    coef = CoefficientSymbols(group, defs=coefs)

    xi = [noise_symbol(b) for b in Z]
    exprs = []
    for i, b in enumerate(Z):
        e = sympy.Add(*[coef(("Phi", i, j), f"Phi_{b.name}{z.name}") * z for j, z in enumerate(Z)])
        for k, u in enumerate(lf.atoms):
            e += coef(("Psi", k, i), f"Psi{k}_{b.name}") * u
        if num.has_noise:
            e += sympy.Add(
                *[coef(("L", i, j), f"L_{b.name}{Z[j].name}") * xi[j] for j in range(i + 1)]
            )
        exprs.append(e)
    if num.has_noise:
        noises = tuple((noise_symbol(b), NoiseSpec(b)) for b in Z)
    notes.append(f"A0 = {sympy.sstr(A0.tolist())}")
    return Update(tuple(Z), tuple(exprs), noises, coefficients=coefs), time, notes


# ---------------------------------------------------------------------------------------------
# Strategies
# ---------------------------------------------------------------------------------------------
def _names(blocks_: Any) -> str:
    return ", ".join(str(b) for b in blocks_)


@dataclass(frozen=True)
class EulerMaruyama:
    r"""Euler--Maruyama over the slice: :math:`z \leftarrow z + h f(z, t) + \sqrt{h}\,g(z,t)\,\xi`.

    Weak order 1; strong order 1 for additive noise, 1/2 otherwise.
    Reference: Kloeden & Platen, *Numerical Solution of SDEs* (Springer 1992), ch. 9 and 14.
    """

    reason: str = "chosen by the user"

    def derive(self, flow: Any) -> Solver:
        Z = flow.changed
        exprs, noises = [], []
        for b in Z:
            e = b + h * flow.drift.get(b, sympy.Integer(0))
            if b in flow.noise:
                xi = noise_symbol(b)
                noises.append((xi, NoiseSpec(b)))
                e += sympy.sqrt(h) * flow.noise[b] * xi
            exprs.append(e)
        additive = not any(_is_state(g) for g in flow.noise.values())
        time_dep = any(t in e.free_symbols for e in flow.expressions)
        return Solver(
            method="Euler-Maruyama",
            exact=False,
            reason=self.reason,
            update=Update(tuple(Z), tuple(exprs), tuple(noises)),
            weak_order=1,
            strong_order=1.0 if additive else 0.5,
            time="frozen at slice start" if time_dep else "autonomous",
        )


@dataclass(frozen=True)
class ExponentialEuler:
    r"""Exponential Euler: the linear part exact, the remaining drift frozen at the slice start.

    .. math:: z \leftarrow \Phi z + \Big(\int_t^{t+h}\Phi(t+h,\tau)\,d\tau\Big) N(z, t)
              + L\xi, \qquad \Phi = e^{A_0 \Delta C}, \; L L^\top = Q_{\mathrm{Van\,Loan}}

    Weak order 1 (exact when nothing is frozen). Reference: Hochbruck & Ostermann,
    *Exponential integrators*, Acta Numerica 19 (2010) 209--286.
    """

    nodes: int = QUADRATURE_NODES
    closed_form: bool = True

    def derive(self, flow: Any) -> Solver:
        lf = _linear_form(flow)
        if lf.multiplicative:
            raise ValueError(f"exponential Euler needs additive noise: {lf.multiplicative}")
        ti = TimeIntegration(self.nodes, self.closed_form)
        upd, time, notes = _linear_family_update(lf, frozen=False, ti=ti)
        exact = not lf.approximate and time != "frozen at slice start"
        reasons = list(lf.approximate.values())
        if any(t in u.free_symbols for u in lf.atoms):
            time = "frozen at slice start"
        return Solver(
            method="exponential Euler",
            exact=exact,
            reason="; ".join(reasons) or "no nonlinear part: exact",
            update=upd,
            weak_order=None if exact else 1,
            strong_order=None if exact else 1.0,
            time=time,
            notes=tuple(notes),
        )


@dataclass(frozen=True)
class Auto:
    """The derived solver: exact (shear or linear) when possible, approximate otherwise.

    ``closed_form=False`` integrates every time-dependent coefficient by Gauss--Legendre
    quadrature with ``nodes`` nodes instead of asking sympy for a closed form.
    """

    nodes: int = QUADRATURE_NODES
    closed_form: bool = True

    def derive(self, flow: Any) -> Solver:
        ti = TimeIntegration(self.nodes, self.closed_form)
        lf = _linear_form(flow)
        Z = _names(lf.changed)
        if lf.multiplicative:
            return EulerMaruyama(reason=lf.multiplicative).derive(flow)
        linear_zero = all(e == 0 for e in lf.A)
        if linear_zero and lf.approximate:
            return EulerMaruyama(reason="; ".join(lf.approximate.values())).derive(flow)
        clock = None if linear_zero else _clock(lf.A)
        if not linear_zero and (lf.approximate or clock is None):
            reasons = list(lf.approximate.values())
            if clock is None:
                reasons.append("linear coefficients without a common clock (frozen)")
            upd, time, notes = _linear_family_update(lf, frozen=clock is None, ti=ti)
            if lf.approximate and any(t in u.free_symbols for u in lf.approximate):
                time = "frozen at slice start"
            return Solver(
                method="exponential Euler",
                exact=False,
                reason="; ".join(reasons),
                update=upd,
                weak_order=1,
                strong_order=1.0,
                time=time,
                notes=tuple(notes),
            )
        upd, time, notes = _linear_family_update(lf, frozen=False, ti=ti)
        if linear_zero:
            method = "shear"
            if not flow.drift:
                reason = f"additive noise only: the increment of {Z} is Gaussian"
            else:
                reason = f"the drift of {Z} does not depend on {Z}"
        else:
            method = "linear"
            c = clock[0] if clock else 1
            how = "constant coefficients" if c == 1 else f"common clock c(t) = {c}"
            reason = f"linear in {Z} with {how} and additive noise"
        return Solver(
            method=method, exact=True, reason=reason, update=upd, time=time, notes=tuple(notes)
        )


@dataclass(frozen=True)
class Exact:
    """Demand the exact solver; raise with the classifier's reason if there is none."""

    nodes: int = QUADRATURE_NODES
    closed_form: bool = True

    def derive(self, flow: Any) -> Solver:
        s = Auto(self.nodes, self.closed_form).derive(flow)
        if not s.exact:
            raise ValueError(f"no exact solver for {flow!r}: {s.reason}")
        return s


@dataclass(frozen=True)
class Custom:
    """A user-supplied update, with its declared orders.

    ``updates`` maps each changed block to its new value in terms of blocks, fields, ``t`` (slice
    start), ``h`` (slice length), parameters and noise symbols from
    :func:`noise_symbol` (``xi_<block>``, a standard normal shaped like that block).
    """

    updates: Mapping[Block, Any]
    weak_order: int | None
    exact: bool = False
    name: str = "custom"
    strong_order: float | None = None
    reason: str = "supplied by the user"

    def derive(self, flow: Any) -> Solver:
        from splitsde.symbolic.check import check_expression

        targets = tuple(self.updates)
        for b in targets:
            if b not in flow.changed:
                raise ValueError(f"custom solver updates block {b}, which the flow does not change")
        exprs = []
        noise_syms: dict[NoiseSymbol, NoiseSpec] = {}
        by_name = {b.name: b for b in flow.reads + flow.changed}
        for b in targets:
            e = as_expression(self.updates[b], f"custom update of {b}")
            for s in e.free_symbols:
                if isinstance(s, NoiseSymbol):
                    like = by_name.get(s.name.removeprefix("xi_"))
                    if like is None:
                        raise ValueError(f"custom solver: noise {s} names no block")
                    noise_syms[s] = NoiseSpec(like)
            plain = e.xreplace({s: 0 for s in noise_syms}).xreplace({h: 1})
            check_expression(plain, f"custom update of {b}")
            exprs.append(e)
        if not self.exact and self.weak_order is None:
            raise ValueError("a custom approximate solver must declare its weak order")
        return Solver(
            method=self.name,
            exact=self.exact,
            reason=self.reason,
            update=Update(targets, tuple(exprs), tuple(noise_syms.items())),
            weak_order=None if self.exact else self.weak_order,
            strong_order=self.strong_order,
            time="as written",
        )


# ---------------------------------------------------------------------------------------------
# Method-table rows (see splitsde.base.methods)
