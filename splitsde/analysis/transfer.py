r"""The invariant law of a Langevin splitting in one dimension, without Monte Carlo.

For Langevin dynamics of one degree of freedom,

.. math:: dq = \frac{p}{M}\,dt, \qquad
          dp = F(q)\,dt - \gamma p\,dt + \sqrt{2\gamma M k_BT}\,dW,

a word over the letters ``A`` (drift :math:`q \mathrel{+}= \tau p/M`), ``B`` (kick
:math:`p \mathrel{+}= \tau F(q)`) and ``O`` (the exact Ornstein--Uhlenbeck flow
:math:`p \leftarrow a p + \sqrt{M k_BT(1 - a^2)}\,\xi`, :math:`a = e^{-\gamma\tau}`) is a
Markov chain on :math:`(q, p)`. Its one-step transfer operator acts on densities letter by
letter: ``A`` and ``B`` are volume-preserving shears,
:math:`\rho'(q, p) = \rho(q - \tau p/M, p)` and :math:`\rho'(q, p) = \rho(q, p - \tau F(q))`,
applied as exact Fourier shifts of the rows or columns of a periodic grid; ``O`` is the
Gaussian kernel in :math:`p`, applied by the trapezoidal rule (spectrally accurate when the
grid resolves the kernel's width, which the default momentum grid does). The stationary
density of the chain on the grid is found by power iteration from the Boltzmann density, so
averages of the scheme's invariant law come with the discretisation error of the grid (tiny,
and checked by refining it) instead of a Monte Carlo error: the reference for the stationary
bias of splitting words on one-dimensional problems
(``tests/analysis/test_order_properties_nonlinear.py``, ``benchmarks/verify_bias_tables.py``).

This is written independently of the word compiler (it reads only the parsed word): it is a
check of the compiled integrators, not a second use of them.

References: the letters and the invariant-measure accuracy of splitting words,
B. Leimkuhler and C. Matthews, *Molecular Dynamics* (Springer 2015), ch. 7, and
B. Leimkuhler, C. Matthews and G. Stoltz, IMA J. Numer. Anal. 36 (2016) 13; Fourier
(spectral) interpolation, L. N. Trefethen, *Spectral Methods in MATLAB* (SIAM 2000), ch. 3.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse

from splitsde.compose.word import Word

__all__ = ["GridLaw", "langevin_invariant_law"]


@dataclass(frozen=True)
class GridLaw:
    """A density on a periodic :math:`(q, p)` grid: ``weights[i, j]`` is the probability of the
    cell of ``(q[i], p[j])`` (they sum to one). ``steps`` is the number of steps of the
    chain that were iterated; ``edge_mass`` the probability within 2.5% of the box's edges
    (a box that holds the law has a negligible one)."""

    word: str
    h: float
    q: np.ndarray
    p: np.ndarray
    weights: np.ndarray
    steps: int
    edge_mass: float

    def average(self, f: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> float:
        """:math:`\\sum_{ij} w_{ij} f(q_i, p_j)`; ``f(q, p)`` is called on broadcastable
        arrays of shapes ``(Nq, 1)`` and ``(1, Np)``."""
        v = np.broadcast_to(f(self.q[:, None], self.p[None, :]), self.weights.shape)
        return float(np.sum(self.weights * v))


def _ops(
    word: Word,
    h: float,
    force: Callable[[np.ndarray], np.ndarray],
    q: np.ndarray,
    p: np.ndarray,
    gamma: float,
    kT: float,
    mass: float,
) -> list[tuple[str, Any]]:
    kq = 2 * np.pi * np.fft.rfftfreq(q.size, q[1] - q[0])
    kp = 2 * np.pi * np.fft.rfftfreq(p.size, p[1] - p[0])
    dp = p[1] - p[0]
    fq = np.asarray(force(q), dtype=np.float64)
    if fq.shape != q.shape or not np.all(np.isfinite(fq)):
        raise ValueError("force(q) must return finite values of the shape of q")
    ops = []
    for occ in word:
        tau = float(occ.weight) * h
        if occ.letter == "A":  # rho(q - tau p / M, p): shift every column by its own amount
            ops.append(("A", np.exp(-1j * np.outer(kq, tau * p / mass))))
        elif occ.letter == "B":  # rho(q, p - tau F(q)): shift every row
            ops.append(("B", np.exp(-1j * np.outer(tau * fq, kp))))
        else:
            a = math.exp(-gamma * tau)
            s2 = mass * kT * (1.0 - a * a)
            d = p[:, None] - a * p[None, :]
            k = dp * np.exp(-d * d / (2 * s2)) / math.sqrt(2 * math.pi * s2)
            k[d * d > 81.0 * s2] = 0.0  # beyond 9 sigma the kernel is below 1e-17: banded
            ops.append(("O", scipy.sparse.csr_matrix(k)))
    return ops


def _apply(ops: list[tuple[str, Any]], rho: np.ndarray) -> np.ndarray:
    nq, np_ = rho.shape
    for kind, m in ops:
        if kind == "A":
            rho = np.fft.irfft(np.fft.rfft(rho, axis=0) * m, n=nq, axis=0)
        elif kind == "B":
            rho = np.fft.irfft(np.fft.rfft(rho, axis=1) * m, n=np_, axis=1)
        else:
            rho = (m @ rho.T).T
    return rho


def langevin_invariant_law(
    word: str | Word,
    force: Callable[[np.ndarray], np.ndarray],
    h: float,
    q_box: tuple[float, float],
    *,
    energy: Callable[[np.ndarray], np.ndarray] | None = None,
    gamma: float = 1.0,
    kT: float = 1.0,
    mass: float = 1.0,
    q_points: int = 96,
    p_points: int | None = None,
    p_max: float | None = None,
    tol: float = 1e-12,
    max_steps: int = 2_000_000,
) -> GridLaw:
    r"""The invariant law of the splitting ``word`` (letters ``A``, ``B``, ``O``, weights
    allowed) for one-dimensional Langevin dynamics with force ``force`` (a numpy function of
    :math:`q`), at step ``h``, on a periodic grid of ``q_points`` over ``q_box`` and
    ``p_points`` over :math:`[-p_{\max}, p_{\max})`.

    The density is the state *after* a whole step of the word (what a sampler records).
    ``energy`` (the potential, optional) gives the Boltzmann start
    :math:`e^{-U/k_BT - p^2/2Mk_BT}`, which is close to the answer; otherwise the start is
    Gaussian. Defaults: :math:`p_{\max} = 8\sqrt{M k_BT}`, and enough momentum points that
    the standard deviation of the narrowest ``O`` kernel spans 2.5 grid spacings (aliasing
    below :math:`10^{-13}`). Iteration stops when the estimated
    remaining change of the density (its L1 change over a block of steps, extrapolated with
    the observed contraction) is below ``tol``.

    Raises ``ValueError`` for letters other than ``A``, ``B``, ``O``, Metropolized groups
    ``{...}``, non-positive ``h`` or ``gamma``, and when the law reaches the edges of the box
    (the box is too small, or the scheme is unstable at this step); ``RuntimeError`` when
    ``max_steps`` do not converge.
    """
    w = word if isinstance(word, Word) else Word(word)
    w.check_alphabet("ABO")
    if any(o.group is not None for o in w):
        raise ValueError(
            f"{str(w)!r} has a Metropolized group {{...}}: the grid law covers plain words only"
        )
    if not (h > 0 and math.isfinite(h)):
        raise ValueError(f"h must be positive and finite, got {h}")
    if not (gamma > 0 and kT > 0 and mass > 0):
        raise ValueError("gamma, kT and mass must be positive")
    lo, hi = map(float, q_box)
    if not hi > lo:
        raise ValueError(f"q_box must be an interval (lo, hi) with lo < hi, got {q_box}")
    pm = float(p_max) if p_max is not None else 8.0 * math.sqrt(mass * kT)
    if p_points is None:
        tau = min(float(o.weight) for o in w if o.letter == "O") * h if "O" in w.letters else h
        sigma = math.sqrt(mass * kT * -math.expm1(-2 * gamma * tau))
        # spacing sigma / 2.5: the kernel's output has Fourier content exp(-pi^2 sigma^2 /
        # (2 dp^2)) ~ 1e-14 beyond the grid's Nyquist frequency (the aliasing floor)
        p_points = max(64, 16 * math.ceil(2.5 * 2 * pm / sigma / 16))  # FFT-friendly sizes
    q = lo + (hi - lo) * np.arange(q_points) / q_points
    p = -pm + 2 * pm * np.arange(p_points) / p_points
    ops = _ops(w, float(h), force, q, p, gamma, kT, mass)
    if energy is not None:
        u = np.asarray(energy(q), dtype=np.float64)
        rho = np.exp(-(u - u.min()) / kT)[:, None] * np.exp(-(p * p) / (2 * mass * kT))[None, :]
    else:
        mid, half = 0.5 * (lo + hi), 0.125 * (hi - lo)
        rho = (
            np.exp(-((q - mid) ** 2) / (2 * half**2))[:, None]
            * np.exp(-(p * p) / (2 * mass * kT))[None, :]
        )
    rho /= rho.sum()
    block = max(10, min(1000, math.ceil(0.5 / (gamma * h))))
    with _one_thread():
        rho, steps = _iterate(ops, rho, block, tol, max_steps, str(w), float(h))
    rho = np.clip(rho, 0.0, None)  # round-off of the Fourier shifts
    rho /= rho.sum()
    nq5, np5 = max(1, q_points // 40), max(1, p_points // 40)
    inner = rho[nq5:-nq5, np5:-np5].sum()
    edge = float(1.0 - inner)
    if edge > 1e-7:
        raise ValueError(
            f"the law of {str(w)!r} at h = {h:g} reaches the edges of the box (mass "
            f"{edge:.2g} within 2.5% of them): widen q_box / p_max, or the scheme is unstable "
            "at this step (a box whose edges the scheme cannot integrate stably, "
            "h sqrt(U''(q)/M) >= 2 for velocity Verlet, lets round-off grow there)"
        )
    return GridLaw(str(w), float(h), q, p, rho, steps, edge)


@contextmanager
def _one_thread() -> Iterator[None]:
    # the matrices are small: BLAS threads only contend with each other (and with the other
    # processes of a loaded machine)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl is optional
        yield
        return
    with threadpool_limits(1):
        yield


def _iterate(
    ops: list[tuple[str, Any]],
    rho: np.ndarray,
    block: int,
    tol: float,
    max_steps: int,
    word: str,
    h: float,
) -> tuple[np.ndarray, int]:
    steps, last = 0, None
    while True:
        old = rho
        for _ in range(block):
            rho = _apply(ops, rho)
        rho /= rho.sum()
        steps += block
        if not np.all(np.isfinite(rho)):
            raise ValueError(f"the iteration of {word!r} at h = {h:g} is not finite")
        d = float(np.abs(rho - old).sum())
        if last is not None and last > 0:
            r = d / last
            if r < 1 and d * r / (1 - r) < tol:
                break
        if d < 1e-3 * tol:  # at the round-off floor
            break
        last = d
        if steps >= max_steps:
            raise RuntimeError(
                f"no stationary law of {word!r} at h = {h:g} after {steps} steps "
                f"(last L1 change {d:.3g})"
            )
    return rho, steps
