r"""Float64 numerics behind the exact linear solvers.

* :class:`phi1` -- the exponential-integrator function :math:`\varphi_1(x) = (e^x - 1)/x`,
  as a sympy function (so closed forms stay finite where a rate vanishes) with a stable numpy
  implementation.
* :func:`van_loan` -- the covariance integral
  :math:`\int_0^T e^{A s} K e^{A^\top s}\,ds` and :math:`e^{AT}` from one matrix exponential
  (Van Loan, *Computing integrals involving the matrix exponential*, IEEE TAC 1978).
* :func:`forced_response` -- :math:`\int_0^T e^{A s}\,ds\;w` from one augmented exponential.
* :func:`gauss_legendre` -- nodes and weights on a slice.
* :func:`psd_cholesky` -- a lower factor :math:`L L^\top = Q` that tolerates singular
  positive semi-definite :math:`Q` (blocks that receive no noise).

Everything here is float64 and vectorised over leading axes.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg
import sympy

__all__ = [
    "forced_response",
    "gauss_legendre",
    "phi1",
    "phi1_numpy",
    "psd_cholesky",
    "van_loan",
]


class phi1(sympy.Function):
    r""":math:`\varphi_1(x) = (e^x - 1)/x` with :math:`\varphi_1(0) = 1`."""

    @classmethod
    def eval(cls, x):
        if x.is_zero:
            return sympy.Integer(1)
        if x.is_Number:
            return (sympy.exp(x) - 1) / x
        return None

    def fdiff(self, argindex=1):
        x = self.args[0]
        return (x * sympy.exp(x) - sympy.exp(x) + 1) / x**2

    def _eval_rewrite_as_exp(self, x, **kwargs):
        return (sympy.exp(x) - 1) / x

    def _eval_is_real(self):
        return self.args[0].is_real

    def _eval_is_positive(self):
        return True if self.args[0].is_real else None

    def _latex(self, printer):
        return r"\varphi_1\left(" + printer._print(self.args[0]) + r"\right)"


def phi1_numpy(x):
    """Stable :math:`\\varphi_1` for numpy arrays (series near zero)."""
    x = np.asarray(x, dtype=np.float64)
    small = np.abs(x) < 1e-5
    safe = np.where(small, 1.0, x)
    return np.where(small, 1.0 + x / 2.0 + x * x / 6.0, np.expm1(safe) / safe)


def gauss_legendre(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Gauss--Legendre nodes in ``[0, 1]`` and weights summing to one."""
    x, w = np.polynomial.legendre.leggauss(n)
    return (x + 1.0) / 2.0, w / 2.0


def _expm(m: np.ndarray) -> np.ndarray:
    return scipy.linalg.expm(m)


def van_loan(a: np.ndarray, k: np.ndarray, T: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    r"""Return :math:`(e^{AT}, \int_0^T e^{As} K e^{A^\top s} ds)`, vectorised over ``T``.

    ``a`` and ``k`` are ``(n, n)``; ``T`` has any shape ``S``; results have shape ``S + (n, n)``.
    A negative ``T`` is handled through the identity :math:`(A, K, T) \to (-A, -K, -T)`, which
    leaves both results unchanged.
    """
    a = np.asarray(a, dtype=np.float64)
    k = np.asarray(k, dtype=np.float64)
    T = np.asarray(T, dtype=np.float64)
    # The block exponential loses everything to cancellation once |A T| is large (its blocks
    # grow like exp(|A| T) while Q stays O(1)), so solve a short slice T / 2^j and double it:
    # Q(2s) = Q(s) + e^{As} Q(s) e^{A^T s}, e^{2As} = (e^{As})^2.
    scale = float(np.max(np.abs(a), initial=0.0)) * a.shape[-1]
    scale *= float(np.max(np.abs(T), initial=0.0))
    doublings = int(np.ceil(np.log2(scale))) + 1 if scale > 1.0 else 0
    phi, q = _van_loan_block(a, k, T / 2.0**doublings)
    for _ in range(doublings):
        q = q + phi @ q @ np.swapaxes(phi, -1, -2)
        phi = phi @ phi
    return phi, 0.5 * (q + np.swapaxes(q, -1, -2))


def _van_loan_block(a: np.ndarray, k: np.ndarray, T: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Van Loan's block exponential for one (short) slice."""
    n = a.shape[-1]
    big = np.zeros((*T.shape, 2 * n, 2 * n))
    sign = np.where(T < 0, -1.0, 1.0)[..., None, None]
    Tabs = np.abs(T)[..., None, None]
    big[..., :n, :n] = -a * sign * Tabs
    big[..., :n, n:] = k * sign * Tabs
    big[..., n:, n:] = np.swapaxes(a, -1, -2) * sign * Tabs
    e = _expm(big)
    f12 = e[..., :n, n:]
    f22 = e[..., n:, n:]
    phi = np.swapaxes(f22, -1, -2)
    q = phi @ f12
    q = 0.5 * (q + np.swapaxes(q, -1, -2))
    return phi, q


def forced_response(a: np.ndarray, w: np.ndarray, T: np.ndarray) -> np.ndarray:
    r"""Return :math:`\int_0^T e^{As}\,ds\;w` (shape ``S + (n,)``) via one augmented exponential."""
    a = np.asarray(a, dtype=np.float64)
    w = np.asarray(w, dtype=np.float64)
    T = np.asarray(T, dtype=np.float64)
    n = a.shape[-1]
    big = np.zeros((*T.shape, n + 1, n + 1))
    big[..., :n, :n] = a * T[..., None, None]
    big[..., :n, n] = w * T[..., None]
    return _expm(big)[..., :n, n]


def psd_cholesky(q: np.ndarray, rtol: float = 1e-13) -> np.ndarray:
    """Lower-triangular ``L`` with ``L @ L.T == q`` for positive semi-definite ``q``.

    Zero (or round-off negative) pivots give a zero column instead of a failure, so a block
    that receives no noise gets none. Vectorised over leading axes.
    """
    q = np.asarray(q, dtype=np.float64)
    n = q.shape[-1]
    L = np.zeros_like(q)
    scale = np.max(np.abs(np.diagonal(q, axis1=-2, axis2=-1)), axis=-1, initial=0.0)
    tol = rtol * np.maximum(scale, np.finfo(np.float64).tiny)
    for j in range(n):
        d = q[..., j, j] - np.sum(L[..., j, :j] ** 2, axis=-1)
        ok = d > tol
        ljj = np.sqrt(np.where(ok, d, 1.0))
        L[..., j, j] = np.where(ok, ljj, 0.0)
        for i in range(j + 1, n):
            v = q[..., i, j] - np.sum(L[..., i, :j] * L[..., j, :j], axis=-1)
            L[..., i, j] = np.where(ok, v / ljj, 0.0)
    return L
