r"""Float64 kernel quantities: the affine coefficients of an exact linear solver update, and
tables of perturbation-kernel terms at the times a sampling plan evaluates its score.

A derived solver of a linear flow with additive noise updates the changed blocks as

.. math:: z \leftarrow \Phi(t, h)\, z + L(t, h)\, \xi, \qquad \xi \sim N(0, I),

where :math:`\Phi` and :math:`L` are built from the solver's own coefficient definitions
(closed forms, matrix exponentials, Van Loan integrals, quadratures). :class:`AffineUpdate`
reads :math:`\Phi` and :math:`L` off the symbolic :class:`~splitsde.symbolic.update.Update` by
differentiation and evaluates them in float64, vectorised over many slices. This is how the
diffusion instance gets its perturbation kernels from the core's linear-exact solver without a
second hand-derived formula.

:class:`KernelTable` holds the float64 terms :math:`a_t, S_t, L_t, L_t^{-\top}, S_t^{-1}` of
:math:`p(z_t \mid x_0) = N(a_t \otimes x_0, S_t \otimes I)` at a finite set of diffusion times,
computed for all of them in one vectorised pass (:func:`kernel_terms`). A plan fills one for
the times of its grid at which the score is evaluated, so converting a network's output
(:math:`s = -L_t^{-\top}\varepsilon`, Tweedie's formula) costs a dictionary look-up per call
instead of a matrix exponential.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import sympy

from splitsde.base.errors import SplitsdeError
from splitsde.symbolic.spellings import lambdify as _spell_lambdify
from splitsde.symbolic.symbols import Block, Coefficient, Parameter, h, t
from splitsde.symbolic.update import Update

if TYPE_CHECKING:
    from splitsde.compose.program import Eval
    from splitsde.diffusion.protocols import ProcessLike
    from splitsde.runtime.integrator import Integrator

__all__ = [
    "AffineUpdate",
    "KernelTable",
    "KernelTerms",
    "evaluation_labels",
    "kernel_terms",
    "prepare_kernel_tables",
]


def _lambdify(args: list[sympy.Basic], expr: Any):
    return _spell_lambdify(args, expr, "numpy")


@dataclass(frozen=True)
class KernelTerms:
    r"""Float64 quantities of :math:`p(z_t \mid x_0) = N(a_t \otimes x_0, S_t \otimes I)` at one
    time: ``a`` (n,), ``S``, its lower Cholesky factor ``L``, ``L_inv_T`` (:math:`L^{-\top}`) and
    ``S_inv`` (all ``(n, n)``)."""

    t: float
    a: np.ndarray
    S: np.ndarray
    L: np.ndarray
    L_inv_T: np.ndarray
    S_inv: np.ndarray


class AffineUpdate:
    """:math:`(\\Phi, L)` of a linear solver update, evaluated in float64.

    Parameters
    ----------
    update:
        The solver's update; it must be affine in the blocks and noises with no constant term
        (a linear flow without fields).
    blocks:
        The state blocks, in the order of the rows and columns of :math:`\\Phi`.
    params:
        Parameter values (floats).
    """

    def __init__(
        self, update: Update, blocks: tuple[Block, ...], params: Mapping[Parameter, float]
    ) -> None:
        if update.lets or update.field_applications:
            raise ValueError("an affine update has no temporaries and evaluates no fields")
        self.blocks = tuple(blocks)
        self.params = {p: float(v) for p, v in params.items()}
        n = len(self.blocks)
        noise_block = {xi: spec.like for xi, spec in update.noises}
        phi = [[sympy.Integer(0)] * n for _ in range(n)]
        chol = [[sympy.Integer(0)] * n for _ in range(n)]
        # a block not changed by the update keeps its value
        for i, b in enumerate(self.blocks):
            if b not in update.targets:
                phi[i][i] = sympy.Integer(1)
        for tgt, expr in zip(update.targets, update.exprs):
            i = self.blocks.index(tgt)
            rest = expr
            for j, b in enumerate(self.blocks):
                phi[i][j] = sympy.diff(expr, b)
                rest = rest.xreplace({b: 0})
            for xi, like in noise_block.items():
                chol[i][self.blocks.index(like)] = sympy.diff(expr, xi)
                rest = rest.xreplace({xi: 0})
            if rest != 0:
                raise ValueError(f"update of {tgt} has a constant part {rest}; not a linear flow")
            for e in (*phi[i], *chol[i]):
                if any(isinstance(s, Block) for s in e.free_symbols):
                    raise ValueError(f"update of {tgt} is not affine in the state")
        entries = [e for row in phi + chol for e in row]
        coefs = sorted(
            {s for e in entries for s in e.free_symbols if isinstance(s, Coefficient)}, key=str
        )
        self._coef_defs = [(c, update.coefficients[c]) for c in coefs]
        P = sorted(self.params, key=str)
        missing = {
            s
            for e in entries
            for s in e.free_symbols
            if isinstance(s, Parameter) and s not in self.params
        }
        if missing:
            raise ValueError(f"missing parameter value(s) {sorted(map(str, missing))}")
        self._P = P
        self._coef_fns = {
            c: _lambdify([t, h, *P], d.expr) for c, d in self._coef_defs if d.expr is not None
        }
        args = [t, h, *P, *coefs]
        self._phi = [[_lambdify(args, e) for e in row] for row in phi]
        self._chol = [[_lambdify(args, e) for e in row] for row in chol]
        self.n = n

    def __call__(self, t0: Any, s: Any) -> tuple[np.ndarray, np.ndarray]:
        """``(Phi, L)`` for slices ``[t0, t0 + s]`` (arrays broadcast together); shapes
        ``(*shape, n, n)``."""
        t0, s = np.broadcast_arrays(np.asarray(t0, np.float64), np.asarray(s, np.float64))
        shape = t0.shape
        t0, s = t0.ravel(), s.ravel()
        pv = [self.params[p] for p in self._P]
        groups: dict[int, dict] = {}
        values = []
        with np.errstate(all="ignore"):
            for c, d in self._coef_defs:
                if d.expr is not None:
                    v = self._coef_fns[c](t0, s, *pv)
                else:
                    key = id(d.numeric)
                    if key not in groups:
                        groups[key] = d.numeric.evaluate(t0, s, self.params)
                    v = groups[key][d.key]
                values.append(np.broadcast_to(np.asarray(v, np.float64), t0.shape))
            args = (t0, s, *pv, *values)
            phi = self._matrix(self._phi, args, t0.size)
            chol = self._matrix(self._chol, args, t0.size)
        return phi.reshape(*shape, self.n, self.n), chol.reshape(*shape, self.n, self.n)

    def _matrix(self, fns: list[list[Any]], args: tuple, size: int) -> np.ndarray:
        out = np.empty((size, self.n, self.n))
        for i in range(self.n):
            for j in range(self.n):
                out[:, i, j] = np.broadcast_to(np.asarray(fns[i][j](*args), np.float64), (size,))
        return out


def kernel_terms(process: ProcessLike, times: Any) -> list[KernelTerms]:
    r""":class:`~splitsde.diffusion.kernels.KernelTerms` of ``process`` at the diffusion
    ``times`` (all :math:`> 0`), in one vectorised float64 pass: the data kernel
    :math:`(a_t, S_t)`, the lower Cholesky factor :math:`L_t`, :math:`L_t^{-\top}` and
    :math:`S_t^{-1} = L_t^{-\top} L_t^{-1}` (batched LAPACK calls, the same numbers as one
    time at a time)."""
    ts = np.asarray(times, np.float64).reshape(-1)
    bad = ts[~(ts > 0)]
    if bad.size:
        raise ValueError(
            f"kernel terms need t > 0 (got t = {float(bad[0])}); the kernel is singular at 0"
        )
    a, S = process.data_kernel(ts)
    try:
        L = np.linalg.cholesky(S)
    except np.linalg.LinAlgError:
        raise ValueError(
            f"the kernel covariance of {process.name} is singular at some t in "
            f"[{ts.min():g}, {ts.max():g}]; use a positive smallest time eps"
        ) from None
    L_inv = np.linalg.inv(L)
    L_inv_T = np.swapaxes(L_inv, -1, -2).copy()
    S_inv = L_inv_T @ L_inv
    return [KernelTerms(float(t), a[i], S[i], L[i], L_inv_T[i], S_inv[i]) for i, t in enumerate(ts)]


class KernelTable:
    """Kernel terms of one process at a set of diffusion times, filled in vectorised batches.

    :meth:`extend` computes the terms of the times not yet in the table in one pass; calling
    the table with a time returns its :class:`~splitsde.diffusion.kernels.KernelTerms` (a
    dictionary look-up). A time that was not prepared is computed on its own and counted in
    :attr:`misses`, so a plan can check that it prepared every time its score is asked for.
    """

    def __init__(self, process: ProcessLike) -> None:
        self.process = process
        self._terms: dict[float, KernelTerms] = {}
        #: Look-ups of times that were not prepared (each computed on its own).
        self.misses = 0

    def extend(self, times: Iterable[float] | np.ndarray) -> None:
        """Add the terms at ``times`` (diffusion times > 0) not yet in the table."""
        asked = np.asarray(times, np.float64).reshape(-1).tolist()
        new = sorted(set(asked) - self._terms.keys())
        if new:
            for k in kernel_terms(self.process, new):
                self._terms[k.t] = k

    def __call__(self, t: float) -> KernelTerms:
        hit = self._terms.get(t)
        if hit is None:
            self.misses += 1
            self.extend([t])
            hit = self._terms[float(t)]
        return hit

    def clear(self) -> None:
        """Forget every prepared time."""
        self._terms.clear()

    def __contains__(self, t: float) -> bool:
        return float(t) in self._terms

    def __len__(self) -> int:
        return len(self._terms)

    def stack(self, name: str, times: Any) -> np.ndarray:
        """The terms ``name`` (``"L_inv_T"``, ``"S"``, ...) at ``times`` of any shape, as an
        array of shape ``(*times.shape, ...)`` (missing times are added first)."""
        ts = np.asarray(times, np.float64)
        self.extend(ts)
        n = len(self.process.blocks)
        flat = [getattr(self._terms[float(t)], name) for t in ts.reshape(-1)]
        if not flat:
            return np.empty((*ts.shape, n) if name == "a" else (*ts.shape, n, n))
        out = np.stack(flat)
        return out.reshape(*ts.shape, *out.shape[1:])

    def __repr__(self) -> str:
        return f"KernelTable({self.process.name}, {len(self)} times)"


def evaluation_labels(integrator: Integrator, tau: Any) -> list[tuple[Eval, float | None]]:
    """Every field evaluation of a run of ``integrator`` over the grid ``tau``, in run order:
    ``(evaluation, time label)``. The label (``t``, ``t + h/2``, a coefficient such as a
    Runge--Kutta stage time) is computed from the grid's Python floats and the float64
    coefficient values the step receives, the way the generated step computes it (``None``
    when it needs a coefficient that is not known before the run). A carried evaluation is
    listed at the first step only; a masked (randomized) one at every step."""
    tau = np.asarray(tau, np.float64)
    starts, lengths = tau[:-1].tolist(), np.diff(tau).tolist()
    rows: list[int] = [0] * len(starts)
    coefficients: dict[Any, list[float]] | None = None
    fns = []
    for ev in integrator.program.evals:
        label = ev.time_label
        if label is None:
            continue
        syms = sorted(label.free_symbols - {t, h}, key=str)
        if syms and coefficients is None:  # a label that is a coefficient (a stage time)
            try:
                vals, inverse = integrator.grid_coefficients(tau)
            except SplitsdeError:  # a grid the solver refuses: the run reports it
                vals, inverse = [], np.zeros(len(starts), int)
            symbols = integrator.coefficient_table.symbols
            coefficients = {s: v.tolist() for s, v in zip(symbols, vals) if np.ndim(v) == 1}
            rows = np.asarray(inverse).tolist()
        known = all(s in (coefficients or {}) for s in syms)
        fn = _spell_lambdify((t, h, *syms), label, "math") if known else None
        cols = [coefficients[s] for s in syms] if known and syms else []
        fns.append((ev, fn, cols))
    out: list[tuple[Eval, float | None]] = []
    for k, (a, b, r) in enumerate(zip(starts, lengths, rows)):
        for ev, fn, cols in fns:
            if ev.carry is not None and k > 0:
                continue
            out.append((ev, None if fn is None else float(fn(a, b, *(c[r] for c in cols)))))
    return out


def prepare_kernel_tables(integrator: Integrator, tau: Any) -> int:
    """Fill the :class:`KernelTable` of every bound field of ``integrator`` that has one
    (attribute ``kernels``) with the diffusion times :math:`T - \tau_e` at which the step
    program evaluates that field over the reverse-time grid ``tau``
    (:func:`evaluation_labels`): one vectorised pass per grid, and every call of the run is a
    table hit. Returns the number of prepared times."""
    tables = {
        bf.field: bf.fn.kernels
        for bf in integrator.fields
        if isinstance(getattr(bf.fn, "kernels", None), KernelTable)
    }
    if not tables:
        return 0
    wanted: dict[int, tuple[KernelTable, set[float]]] = {}
    for ev, label in evaluation_labels(integrator, tau):
        table = tables.get(ev.field)
        if table is None or label is None:
            continue  # not known before the run: computed at the call (counted as a miss)
        _, times = wanted.setdefault(id(table), (table, set()))
        times.add(table.process.T - label)
    for table, times in wanted.values():
        table.extend(sorted(times))
    return sum(len(w) for _, w in wanted.values())
