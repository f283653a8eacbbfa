r"""The one-step affine probe of a compiled step, and the stability bound it gives.

For a linear SDE (linear fields, additive noise) every derived sub-step is affine in the state
and in the standard normals it draws, so one step of any word is

.. math:: y_{n+1} = \Phi\, y_n + c + N \xi_n, \qquad \xi_n \sim \mathcal N(0, I_K).

:func:`affine_step` obtains :math:`(\Phi, c, N)` from the *compiled torch step itself*
(architecture rule 1): one call of the lowered step in float64 on a batch of probe states --
the zero state, the basis states (zero noise), the basis noises (zero state) and random probes
that check affinity. :func:`stability_bound` finds the smallest step with spectral radius
:math:`\rho(\Phi(h)) \ge 1`.

This is run-time machinery: the exact analysis (:mod:`splitsde.analysis.affine`,
:mod:`splitsde.analysis.certify`) builds on it, and divergence messages
(:mod:`splitsde.runtime.divergence`) use it to state the exact stability bound of a linear problem.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from splitsde.base.errors import SplitsdeError
from splitsde.runtime.layout import StateLayout
from splitsde.runtime.noise import FixedNoise
from splitsde.symbolic.symbols import t

__all__ = [
    "AFFINE_RTOL",
    "AffineMap",
    "NotAffineError",
    "affine_step",
    "affine_steps",
    "is_autonomous",
    "layout_of",
    "stability_bound",
]

#: Relative tolerance of the affinity check (float64 round-off is ~1e-15 per operation).
AFFINE_RTOL = 1e-10


class NotAffineError(SplitsdeError, ValueError):
    """The compiled step is not affine in the state and the noise."""


@dataclass(frozen=True)
class AffineMap:
    r"""One step :math:`y \mapsto \Phi y + c + N\xi` of an integrator (float64).

    ``Phi`` is ``(D, D)``, ``c`` is ``(D,)``, ``noise`` is ``(D, K)`` with ``K`` the number of
    scalar standard normals one step draws; ``layout`` (a
    :class:`~splitsde.runtime.layout.StateLayout`) says which entries belong to which block.
    """

    Phi: np.ndarray
    c: np.ndarray
    noise: np.ndarray
    layout: StateLayout
    t0: float = 0.0
    h: float = 0.0
    check_error: float = field(default=0.0, compare=False)

    @property
    def cov(self) -> np.ndarray:
        r"""One-step noise covariance :math:`Q = N N^\top`."""
        return self.noise @ self.noise.T

    @property
    def dim(self) -> int:
        return self.Phi.shape[0]

    @property
    def spectral_radius(self) -> float:
        return float(np.max(np.abs(np.linalg.eigvals(self.Phi)))) if self.dim else 0.0

    def propagate(self, mean0: Any, cov0: Any, steps: int) -> tuple[np.ndarray, np.ndarray]:
        r"""The exact law after ``steps`` applications of this map from
        :math:`N(m_0, \Sigma_0)` (a uniform grid of an autonomous step, without re-probing)."""
        if int(steps) != steps or steps < 0:
            raise ValueError(f"steps must be a non-negative integer, got {steps}")
        m, S = _as_mean_cov(mean0, cov0, self.dim)
        Q = self.cov
        for _ in range(int(steps)):
            m = self.Phi @ m + self.c
            S = self.Phi @ S @ self.Phi.T + Q
        return m, 0.5 * (S + S.T)

    def index(self, block: str) -> slice:
        """The slice of the flat vector holding ``block``."""
        return self.layout.index(block)

    def apply(self, y: np.ndarray, xi: np.ndarray | None = None) -> np.ndarray:
        """The map applied to flat states ``y`` (``(D,)`` or ``(n, D)``) and noises ``xi``."""
        out = np.asarray(y, np.float64) @ self.Phi.T + self.c
        if xi is not None:
            out = out + np.asarray(xi, np.float64) @ self.noise.T
        return out

    def flatten(self, state: Mapping[str, Any]) -> np.ndarray:
        """A state mapping (block -> array or tensor ``(..., *shape)``) as float64 flat vectors
        ``(..., D)`` (:meth:`StateLayout.flatten <splitsde.runtime.layout.StateLayout.flatten>`
        on numpy copies)."""
        return self.layout.flatten({b: _float64(state[b]) for b in self.layout.block_names})

    def unflatten(self, y: np.ndarray) -> dict[str, np.ndarray]:
        """Flat vectors ``(..., D)`` as a state mapping of arrays ``(..., *shape)``."""
        return self.layout.unflatten(np.asarray(y))


def _float64(x: Any) -> np.ndarray:
    x = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    return x.astype(np.float64)


def _event_shape(value: Any, block: str) -> tuple[int, ...]:
    if value is None:
        return ()
    if isinstance(value, int | np.integer):
        shape: tuple[int, ...] = (int(value),)
    else:
        try:
            shape = tuple(int(s) for s in value)
        except TypeError:
            raise TypeError(
                f"shape of block {block} must be an int or a tuple, got {value!r}"
            ) from None
    if any(s < 1 for s in shape):
        raise ValueError(f"shape of block {block} must have positive sizes, got {shape}")
    return shape


def layout_of(integrator: Any, shapes: Mapping[str, Any] | None = None) -> StateLayout:
    """The flat :class:`~splitsde.runtime.layout.StateLayout` of the integrator's blocks with
    per-walker ``shapes`` (an int or a tuple per block; default: scalar blocks, event shape
    ``()``)."""
    names = tuple(integrator.block_names)
    shapes = dict(shapes or {})
    unknown = set(shapes) - set(names)
    if unknown:
        raise ValueError(
            f"shapes name unknown block(s) {sorted(unknown)}; blocks: {', '.join(names)}"
        )
    return StateLayout(names, tuple(_event_shape(shapes.get(b), b) for b in names))


def is_autonomous(integrator: Any) -> bool:
    """Whether one step's map is independent of the step's start time."""
    if any(f.time for f in integrator.program.fields):
        return False
    for f in integrator.program.fields:
        if any(t in e.free_symbols for e in (f.definition or {}).values()):
            return False
    return bool(integrator.coefficient_table.autonomous)


class _Prober:
    """Probe states and noises for one integrator and layout, run through the lowered step."""

    def __init__(
        self,
        integrator: Any,
        layout: StateLayout,
        seed: int = 12345,
        uniforms: Sequence[float] = (),
    ) -> None:
        self.integ = integrator
        self.uniforms = [float(u) for u in uniforms]
        self.layout = layout
        self.D = layout.dim
        self.draw_layout = []
        k = 0
        for d in integrator.program.draws:
            lay = layout.entry(d.like.name)
            self.draw_layout.append((slice(k, k + lay.size), lay.shape))
            k += lay.size
        self.K = k
        rng = np.random.default_rng(seed)
        # random affinity probes at two scales: a nonlinearity that happens to vanish on basis
        # vectors (odd powers, say) shows up at one of them
        self.n_check = 2
        y_rand = rng.standard_normal((self.n_check, self.D)) * np.array([[1.0], [3.0]])
        x_rand = rng.standard_normal((self.n_check, self.K)) * np.array([[1.0], [2.0]])
        B = 1 + self.D + self.K + self.n_check
        Y = np.zeros((B, self.D))
        X = np.zeros((B, self.K))
        Y[1 : 1 + self.D] = np.eye(self.D)
        X[1 + self.D : 1 + self.D + self.K] = np.eye(self.K)
        Y[B - self.n_check :] = y_rand
        X[B - self.n_check :] = x_rand
        self.Y, self.X, self.B = Y, X, B
        self.state = tuple(
            torch.from_numpy(np.ascontiguousarray(Y[:, lay.slice]).reshape(B, *lay.shape))
            for lay in layout
        )
        self.noise = [
            torch.from_numpy(np.ascontiguousarray(X[:, s]).reshape(B, *shape))
            for s, shape in self.draw_layout
        ]

    def run(self, times: np.ndarray) -> list[np.ndarray]:
        """Outputs ``(B, D)`` of one step for every interval of ``times`` (one lowering)."""
        integ = self.integ
        state = dict(zip(integ.block_names, self.state))
        tensors = tuple(x.clone() for x in integ.check_state(state))
        run = integ.prepare(
            tensors, np.asarray(times, np.float64), FixedNoise(self.noise, self.uniforms)
        )
        outs = []
        with torch.no_grad():
            for k in range(len(times) - 1):
                inp = tuple(x.clone() for x in tensors)
                out, _ = run.call(k, inp, None, checked=True)
                flat = np.concatenate(
                    [o.detach().cpu().numpy().reshape(self.B, -1) for o in out], axis=1
                )
                outs.append(flat.astype(np.float64))
        return outs

    def affine(self, out: np.ndarray, t0: float, h: float) -> AffineMap:
        D, K, nc = self.D, self.K, self.n_check
        c = out[0]
        Phi = (out[1 : 1 + D] - c).T
        N = (out[1 + D : 1 + D + K] - c).T
        pred = c + self.Y[-nc:] @ Phi.T + self.X[-nc:] @ N.T
        got = out[-nc:]
        scale = (
            np.abs(c).max(initial=0.0)
            + np.abs(self.Y[-nc:] @ np.abs(Phi).T).max(initial=0.0)
            + np.abs(self.X[-nc:] @ np.abs(N).T).max(initial=0.0)
        )
        err = float(np.abs(got - pred).max(initial=0.0)) / max(scale, 1e-300)
        if not np.all(np.isfinite(out)):
            raise NotAffineError(
                f"the step at t0={t0:g}, h={h:g} produced non-finite values on probe states"
            )
        if err > AFFINE_RTOL:
            raise NotAffineError(
                f"the step is not affine: the exact analysis applies to linear problems (word "
                f"{self.integ.word}: a random probe at t0={t0:g}, h={h:g} deviates from the affine "
                f"map by {err:.2e} relative; check that every field is linear in the state and "
                "every noise additive)"
            )
        return AffineMap(Phi, c.copy(), N, self.layout, float(t0), float(h), err)


def affine_step(
    integrator: Any,
    t0: float,
    h: float,
    shapes: Mapping[str, Any] | None = None,
    *,
    uniforms: Sequence[float] = (),
) -> AffineMap:
    r"""The exact one-step map :math:`y \mapsto \Phi y + c + N\xi` of ``integrator``'s compiled
    step from ``t0`` with length ``h``.

    Parameters
    ----------
    integrator:
        An :class:`~splitsde.runtime.integrator.Integrator` whose fields are linear.
    t0, h:
        Start and length of the step.
    shapes:
        Per-walker (event) shape of every block, ``{"q": (3,), "p": (3,)}``; missing blocks
        are scalar (event shape ``()``). ``D`` is the total event size.
    uniforms:
        Fixed values of the step's uniform draws (the random selections of a randomized
        solver, one per draw in program order): the map of one selection branch.

    Raises
    ------
    NotAffineError
        When a random probe does not follow the affine map (relative deviation above
        ``1e-10``): the problem is not linear-Gaussian.
    """
    if not (h > 0 and math.isfinite(h)):
        raise ValueError(f"h must be positive and finite, got {h}")
    n_sel = len(integrator.program.uniform_draws)
    if len(uniforms) != n_sel:
        raise ValueError(
            f"the step draws {n_sel} uniform selection(s); give uniforms= with one value each "
            "(the map of one selection branch)"
        )
    prober = _Prober(integrator, layout_of(integrator, shapes), uniforms=uniforms)
    (out,) = prober.run(np.array([t0, t0 + h], dtype=np.float64))
    return prober.affine(out, t0, h)


def affine_steps(
    integrator: Any,
    hs: Sequence[float],
    shapes: Mapping[str, Any] | None = None,
    *,
    t0: float = 0.0,
) -> list[AffineMap]:
    r"""The one-step maps of :func:`affine_step` for several step lengths ``hs`` from ``t0``.

    For an autonomous step (:func:`is_autonomous`) all maps come from **one** lowering of the
    step program (a grid whose intervals are the steps ``hs``), which is what makes scans over
    :math:`h` (stability bounds) affordable for large systems; otherwise one per step.
    """
    hs = [float(x) for x in hs]
    if not hs:
        return []
    if not all(x > 0 and math.isfinite(x) for x in hs):
        raise ValueError(f"steps must be positive and finite, got {hs}")
    if integrator.program.uniform_draws:
        raise ValueError("affine_steps: the step draws uniform selections; use affine_step")
    if not is_autonomous(integrator):
        return [affine_step(integrator, t0, x, shapes) for x in hs]
    prober = _Prober(integrator, layout_of(integrator, shapes))
    times = t0 + np.concatenate([[0.0], np.cumsum(hs)])
    outs = prober.run(times)
    return [prober.affine(o, t0, x) for o, x in zip(outs, hs)]


def _as_mean_cov(mean0: Any, cov0: Any, D: int) -> tuple[np.ndarray, np.ndarray]:
    if np.ndim(mean0) == 0:
        m = np.full(D, float(mean0))
    else:
        m = np.asarray(mean0, np.float64).reshape(-1)
    if m.shape != (D,):
        raise ValueError(
            f"mean0 must have {D} entries (the flat state), got shape {np.shape(mean0)}"
        )
    c = np.asarray(cov0, np.float64)
    if c.ndim == 0:
        c = float(c) * np.eye(D)
    elif c.ndim == 1:
        c = np.diag(c)
    if c.shape != (D, D):
        raise ValueError(f"cov0 must be ({D}, {D}), got shape {np.shape(cov0)}")
    if not np.allclose(c, c.T, rtol=1e-12, atol=1e-14 * max(1.0, np.abs(c).max(initial=0.0))):
        raise ValueError("cov0 must be symmetric")
    return m, c


def stability_bound(
    phi_of_h: Callable[[float], np.ndarray], h_min: float, h_max: float, points: int = 240
) -> float | None:
    r"""The smallest :math:`h \in [h_{min}, h_{max}]` with :math:`\rho(\Phi(h)) \ge 1`, scanned
    on a log grid and bisected; ``None`` if the scheme is stable on the whole range."""

    def unstable(x: float) -> bool:
        phi = phi_of_h(x)
        rho = float(np.max(np.abs(np.linalg.eigvals(phi)))) if phi.size else 0.0
        return not rho < 1.0 - 1e-12

    grid = np.geomspace(h_min, h_max, points)
    prev = None
    for x in grid:
        if unstable(x):
            if prev is None:
                return float(x)
            lo, hi = prev, float(x)
            for _ in range(60):
                mid = 0.5 * (lo + hi)
                lo, hi = (lo, mid) if unstable(mid) else (mid, hi)
                if hi - lo <= 1e-12 * hi:
                    break
            return hi
        prev = float(x)
    return None
