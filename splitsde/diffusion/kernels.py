r"""Float64 affine coefficients of an exact linear solver update.

A derived solver of a linear flow with additive noise updates the changed blocks as

.. math:: z \leftarrow \Phi(t, h)\, z + L(t, h)\, \xi, \qquad \xi \sim N(0, I),

where :math:`\Phi` and :math:`L` are built from the solver's own coefficient definitions
(closed forms, matrix exponentials, Van Loan integrals, quadratures). :class:`AffineUpdate`
reads :math:`\Phi` and :math:`L` off the symbolic :class:`~splitsde.symbolic.update.Update` by
differentiation and evaluates them in float64, vectorised over many slices. This is how the
diffusion instance gets its perturbation kernels from the core's linear-exact solver without a
second hand-derived formula.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import sympy

from splitsde.symbolic.numeric import NUMPY_FUNCTIONS
from splitsde.symbolic.symbols import Block, Coefficient, Parameter, h, t
from splitsde.symbolic.update import Update

__all__ = ["AffineUpdate"]


def _lambdify(args: list[sympy.Basic], expr: Any):
    return sympy.lambdify(args, expr, modules=[NUMPY_FUNCTIONS, "numpy"])


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
