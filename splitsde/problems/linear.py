r"""Linear test problems with exact answers: the base class, Ornstein--Uhlenbeck, random
stable linear SDEs.

A :class:`LinearProblem` couples a split :class:`~splitsde.System` (what the integrators run)
with the *independently written* closed-form coefficients :math:`A, b, K` of the SDE
:math:`dy = (Ay + b)\,dt + G\,dW`, :math:`K = GG^\top` -- the references the analysis and the
tests compare against. From them: the exact law at any time (matrix exponential and Van Loan
integral) and the exact stationary law (continuous Lyapunov equation).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import sympy
import torch

from splitsde.analysis.continuous import LinearSDE
from splitsde.runtime.system import System
from splitsde.symbolic.flow import Flow
from splitsde.symbolic.sde import SDE
from splitsde.symbolic.symbols import Block, Parameter

__all__ = ["LinearProblem", "ou", "random_linear"]


class LinearProblem:
    """A linear SDE split into flows, with its exact coefficients and answers.

    Attributes
    ----------
    system:
        The :class:`~splitsde.System` to build integrators from.
    A, b, K:
        Float64 drift matrix, drift offset and diffusion matrix (flat state, scalar blocks).
    A_sym, b_sym, K_sym:
        The same as sympy matrices (in the SDE's parameters, or exact rationals).
    """

    def __init__(
        self,
        name: str,
        system: System,
        A_sym: sympy.Matrix,
        b_sym: sympy.Matrix,
        K_sym: sympy.Matrix,
    ) -> None:
        self.name = name
        self.system = system
        self.A_sym, self.b_sym, self.K_sym = A_sym, b_sym, K_sym
        values = self.symbol_values
        self.A = _numeric(A_sym, values)
        self.b = _numeric(b_sym, values).reshape(-1)
        self.K = _numeric(K_sym, values)

    # -- structure ------------------------------------------------------------------------------
    @property
    def sde(self) -> SDE:
        return self.system.sde

    @property
    def blocks(self) -> tuple[Block, ...]:
        """The SDE's block symbols, in order."""
        return self.sde.blocks

    @property
    def block_names(self) -> tuple[str, ...]:
        """The blocks' names, in order (the keys of a state mapping)."""
        return self.sde.block_names

    @property
    def dim(self) -> int:
        return len(self.blocks)

    @property
    def params(self) -> dict[str, float]:
        """Parameter values by name."""
        return {
            (k if isinstance(k, str) else k.name): float(v) for k, v in self.system.params.items()
        }

    @property
    def symbol_values(self) -> dict[sympy.Symbol, float]:
        by_name = {p.name: p for p in self.sde.parameters}
        return {by_name[k]: v for k, v in self.params.items() if k in by_name}

    def integrator(self, word: Any, **kwargs: Any) -> Any:
        """An integrator for ``word`` on this problem."""
        return self.system.integrator(word, **kwargs)

    @property
    def linear_sde(self) -> LinearSDE:
        return LinearSDE.constant(self.A, self.b, self.K)

    # -- exact answers --------------------------------------------------------------------------
    def law(self, t: float, mean0: Any, cov0: Any) -> tuple[np.ndarray, np.ndarray]:
        """Exact mean and covariance at time ``t`` from :math:`N(m_0, \\Sigma_0)` at 0."""
        return self.linear_sde.law(0.0, t, mean0, cov0)

    def stationary_exact(self) -> tuple[np.ndarray, np.ndarray]:
        """Exact stationary mean and covariance of the SDE."""
        return self.linear_sde.stationary()

    def initial_state(
        self, walkers: int, mean0: Any, cov0: Any, generator: torch.Generator
    ) -> dict[str, torch.Tensor]:
        """``walkers`` draws from :math:`N(m_0, \\Sigma_0)` as a state of scalar blocks."""
        D = self.dim
        m = np.broadcast_to(np.asarray(mean0, np.float64), (D,))
        S = np.asarray(cov0, np.float64)
        S = S * np.eye(D) if S.ndim == 0 else np.diag(S) if S.ndim == 1 else S
        w, V = np.linalg.eigh(0.5 * (S + S.T))
        L = V * np.sqrt(np.clip(w, 0.0, None))
        z = torch.randn(walkers, D, generator=generator, dtype=torch.float64)
        y = torch.from_numpy(m.copy()) + z @ torch.from_numpy(L.T.copy())
        return {b: y[:, i].clone() for i, b in enumerate(self.block_names)}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name}, dim={self.dim})"


def _numeric(M: sympy.Matrix, values: Mapping[sympy.Symbol, float]) -> np.ndarray:
    if not M.free_symbols:  # exact numbers: convert entrywise (evalf of a large matrix is slow)
        return np.array([[float(x) for x in row] for row in M.tolist()], dtype=np.float64)
    rep = {k: sympy.Float(v, 17) for k, v in values.items()}
    out = M.xreplace(rep).evalf(17)
    if out.free_symbols:
        raise ValueError(f"missing values for {sorted(map(str, out.free_symbols))}")
    return np.asarray(out.tolist(), dtype=np.float64)


# ---------------------------------------------------------------------------------------------
# Ornstein--Uhlenbeck
# ---------------------------------------------------------------------------------------------
def ou(theta: float = 1.0, mu: float = 0.0, sigma: float = 1.0) -> LinearProblem:
    r"""Ornstein--Uhlenbeck :math:`dx = -\theta(x - \mu)\,dt + \sigma\,dW`, split into
    ``B`` (the drift, solved exactly) and ``O`` (the noise, an exact shear).

    Stationary law :math:`N(\mu, \sigma^2 / (2\theta))`; ``"BO"`` is a Lie splitting (weak
    order 1), ``"BOB"`` / ``"OBO"`` Strang splittings (order 2).
    """
    if not theta > 0 or not sigma > 0:
        raise ValueError("theta and sigma must be positive")
    (x,) = (Block("x"),)
    th, m_, s_ = (
        Parameter("theta", positive=True),
        Parameter("mu", real=True),
        Parameter("sigma", positive=True),
    )
    sde = SDE(
        [x], {"B": Flow({x: -th * (x - m_)}), "O": Flow(noise={x: s_})}, name="Ornstein-Uhlenbeck"
    )
    system = System(sde, {"theta": theta, "mu": mu, "sigma": sigma}, name="OU")
    return LinearProblem(
        "Ornstein-Uhlenbeck",
        system,
        sympy.Matrix([[-th]]),
        sympy.Matrix([th * m_]),
        sympy.Matrix([[s_**2]]),
    )


# ---------------------------------------------------------------------------------------------
# Random stable linear SDEs
# ---------------------------------------------------------------------------------------------
def _rational(
    rng: np.random.Generator, lo: int, hi: int, den: int, nonzero: bool = False
) -> sympy.Rational:
    while True:
        k = int(rng.integers(lo, hi + 1))
        if k or not nonzero:
            return sympy.Rational(k, den)


def random_linear(dim: int, seed: int = 0, *, commuting: bool = False) -> LinearProblem:
    r"""A random stable linear SDE on ``dim`` scalar blocks ``x0, x1, ...`` with exact rational
    coefficients, split into three flows so Langevin-like words (``BAOAB``, ``OBA`` ...) apply:

    * ``A``: :math:`dx_P = (C_{PQ} x_Q + R_P x_P)\,dt` -- the first half :math:`P` of the
      blocks driven by the second half :math:`Q` (a shear, or exact linear with the diagonal
      self-rates :math:`R_P \le 0`);
    * ``B``: :math:`dx_Q = (C_{QP} x_P + R_Q x_Q)\,dt` with
      :math:`C_{QP} = -C_{PQ}^\top + E` (:math:`E` a small random perturbation kept only if
      the total drift stays stable);
    * ``O``: :math:`dx_k = -d_k x_k\,dt + s_k\,dW_k` on every block (exact OU), :math:`d_k > 0`.

    With :math:`E = 0` the symmetric part of the drift is negative definite, so the SDE is
    stable. With ``commuting=True`` (``dim >= 3``) every letter instead drives its own disjoint
    set of blocks (independent OU processes): the flows commute and every word is exact.
    """
    if int(dim) != dim or dim < 2:
        raise ValueError(f"dim must be an integer >= 2, got {dim}")
    if commuting and dim < 3:
        raise ValueError("a commuting split with letters A, B, O needs dim >= 3")
    rng = np.random.default_rng(seed)
    xs = [Block(f"x{i}") for i in range(dim)]
    if commuting:
        parts = {"A": xs[0::3], "B": xs[1::3], "O": xs[2::3]}
        flows = {}
        A = sympy.zeros(dim, dim)
        K = sympy.zeros(dim, dim)
        for letter, bs in parts.items():
            drift, noise = {}, {}
            for b in bs:
                i = xs.index(b)
                d = _rational(rng, 1, 8, 4, nonzero=True)
                s2 = _rational(rng, 1, 8, 4, nonzero=True)
                drift[b], noise[b] = -d * b, sympy.sqrt(s2)
                A[i, i], K[i, i] = -d, s2
            flows[letter] = Flow(drift, noise)
        sde = SDE(xs, flows, name=f"random commuting linear (dim {dim}, seed {seed})")
        return LinearProblem(sde.name, System(sde, name=sde.name), A, sympy.zeros(dim, 1), K)

    n_p = dim // 2
    P, Q = list(range(n_p)), list(range(n_p, dim))
    C_pq = sympy.Matrix(n_p, dim - n_p, lambda i, j: _rational(rng, -4, 4, 4))
    if C_pq.is_zero_matrix:
        C_pq[0, 0] = sympy.Rational(1, 2)
    R = [_rational(rng, -2, 0, 4) for _ in range(dim)]
    d = [_rational(rng, 1, 8, 4, nonzero=True) for _ in range(dim)]
    s2 = [_rational(rng, 1, 8, 4, nonzero=True) for _ in range(dim)]
    E = sympy.Matrix(dim - n_p, n_p, lambda i, j: _rational(rng, -2, 2, 8))
    A = sympy.zeros(dim, dim)
    for i in range(dim):
        A[i, i] = R[i] - d[i]
    for a, i in enumerate(P):
        for c, j in enumerate(Q):
            A[i, j] = C_pq[a, c]
    base = A.copy()
    for c, j in enumerate(Q):
        for a, i in enumerate(P):
            A[j, i] = -C_pq[a, c] + E[c, a]
            base[j, i] = -C_pq[a, c]
    stable = np.max(np.linalg.eigvals(np.asarray(A.tolist(), dtype=float)).real) < -1e-3
    b_flow_moves = any(A[j, i] != 0 for j in Q for i in P) or any(R[j] != 0 for j in Q)
    if not (stable and b_flow_moves):
        A = base  # keep the dissipative skew coupling: stable, and B has a nonzero drift
    # sympy.Add(*terms) builds each drift in one go (a running sum is quadratic in dim)
    flows = {
        "A": Flow({xs[i]: sympy.Add(R[i] * xs[i], *(A[i, j] * xs[j] for j in Q)) for i in P}),
        "B": Flow({xs[j]: sympy.Add(R[j] * xs[j], *(A[j, i] * xs[i] for i in P)) for j in Q}),
        "O": Flow(
            {xs[k]: -d[k] * xs[k] for k in range(dim)},
            {xs[k]: sympy.sqrt(s2[k]) for k in range(dim)},
        ),
    }
    sde = SDE(xs, flows, name=f"random linear (dim {dim}, seed {seed})")
    K = sympy.diag(*s2)
    return LinearProblem(sde.name, System(sde, name=sde.name), A, sympy.zeros(dim, 1), K)
