r"""Exact one-step maps of compiled integrators on linear problems, by probing.

For a linear SDE (linear fields, additive noise) every derived sub-step is affine in the state
and in the standard normals it draws, so one step of any word is

.. math:: y_{n+1} = \Phi\, y_n + c + N \xi_n, \qquad \xi_n \sim \mathcal N(0, I_K),

with one-step covariance :math:`Q = N N^\top`. :func:`affine_step` obtains
:math:`(\Phi, c, N)` from the *compiled torch step itself* (architecture rule 1): one call of
the lowered step in float64 on a batch of probe states -- the zero state, the basis states
(zero noise), the basis noises (zero state) and random probes that check affinity. Nothing is
re-derived, so the analysis cannot drift from the sampler.

From the maps:

* :func:`propagate` -- the exact Gaussian law after running the integrator over a grid,
  :math:`m_{n+1} = \Phi_n m_n + c_n`, :math:`\Sigma_{n+1} = \Phi_n \Sigma_n \Phi_n^\top + Q_n`;
* :func:`stationary` -- the exact invariant law of the scheme at a fixed step, from the discrete
  Lyapunov equation :math:`\Sigma = \Phi \Sigma \Phi^\top + Q` and
  :math:`m = (I - \Phi)^{-1} c` (it exists iff the spectral radius :math:`\rho(\Phi) < 1`).

States are flattened block by block in the integrator's block order; ``shapes`` gives the
per-walker (event) shape of every block and :attr:`AffineMap.layout` records where each block
lives in the flat vector.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.linalg
import torch

from splitsde.errors import SplitsdeError
from splitsde.integrate import make_grid
from splitsde.noise import FixedNoise
from splitsde.symbolic.symbols import t

__all__ = [
    "AffineMap",
    "BlockLayout",
    "NotAffineError",
    "UnstableError",
    "affine_step",
    "is_autonomous",
    "layout_of",
    "propagate",
    "stationary",
]

#: Relative tolerance of the affinity check (float64 round-off is ~1e-15 per operation).
AFFINE_RTOL = 1e-10


class NotAffineError(SplitsdeError, ValueError):
    """The compiled step is not affine in the state and the noise."""


class UnstableError(SplitsdeError, ValueError):
    """The scheme has no stationary law at this step (spectral radius of :math:`\\Phi \\ge 1`)."""

    def __init__(self, message: str, radius: float) -> None:
        super().__init__(message)
        self.radius = radius


@dataclass(frozen=True)
class BlockLayout:
    """Where one block lives in the flat state vector."""

    block: str
    slice: slice
    shape: tuple[int, ...]

    @property
    def size(self) -> int:
        return self.slice.stop - self.slice.start


@dataclass(frozen=True)
class AffineMap:
    r"""One step :math:`y \mapsto \Phi y + c + N\xi` of an integrator (float64).

    ``Phi`` is ``(D, D)``, ``c`` is ``(D,)``, ``noise`` is ``(D, K)`` with ``K`` the number of
    scalar standard normals one step draws; ``layout`` says which entries belong to which block.
    """

    Phi: np.ndarray
    c: np.ndarray
    noise: np.ndarray
    layout: tuple[BlockLayout, ...]
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
        for lay in self.layout:
            if lay.block == block:
                return lay.slice
        raise KeyError(f"no block {block!r}; blocks: {', '.join(b.block for b in self.layout)}")

    def apply(self, y: np.ndarray, xi: np.ndarray | None = None) -> np.ndarray:
        """The map applied to flat states ``y`` (``(D,)`` or ``(n, D)``) and noises ``xi``."""
        out = np.asarray(y, np.float64) @ self.Phi.T + self.c
        if xi is not None:
            out = out + np.asarray(xi, np.float64) @ self.noise.T
        return out

    def flatten(self, state: Mapping[str, Any]) -> np.ndarray:
        """A state mapping (block -> array ``(..., *shape)``) as flat vectors ``(..., D)``."""
        parts = []
        for lay in self.layout:
            x = state[lay.block]
            x = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
            lead = x.shape[: x.ndim - len(lay.shape)]
            parts.append(x.reshape(*lead, lay.size).astype(np.float64))
        return np.concatenate(parts, axis=-1)

    def unflatten(self, y: np.ndarray) -> dict[str, np.ndarray]:
        """Flat vectors ``(..., D)`` as a state mapping of arrays ``(..., *shape)``."""
        y = np.asarray(y)
        return {
            lay.block: y[..., lay.slice].reshape(*y.shape[:-1], *lay.shape) for lay in self.layout
        }


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


def layout_of(integrator: Any, shapes: Mapping[str, Any] | None = None) -> tuple[BlockLayout, ...]:
    """The flat layout of the integrator's blocks with per-walker ``shapes`` (default: scalar
    blocks, event shape ``()``)."""
    names = tuple(integrator.blocks)
    shapes = dict(shapes or {})
    unknown = set(shapes) - set(names)
    if unknown:
        raise ValueError(
            f"shapes name unknown block(s) {sorted(unknown)}; blocks: {', '.join(names)}"
        )
    out, start = [], 0
    for b in names:
        shape = _event_shape(shapes.get(b), b)
        size = math.prod(shape)
        out.append(BlockLayout(b, slice(start, start + size), shape))
        start += size
    return tuple(out)


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
        layout: tuple[BlockLayout, ...],
        seed: int = 12345,
        uniforms: Sequence[float] = (),
    ) -> None:
        self.integ = integrator
        self.uniforms = [float(u) for u in uniforms]
        self.layout = layout
        self.D = sum(lay.size for lay in layout)
        by_block = {lay.block: lay for lay in layout}
        self.draw_layout = []
        k = 0
        for d in integrator.program.draws:
            lay = by_block[d.like.name]
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
        state = dict(zip(integ.blocks, self.state))
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
        An :class:`~splitsde.compose.integrator.Integrator` whose fields are linear.
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


def propagate(
    integrator: Any,
    grid: Sequence[float] | np.ndarray,
    mean0: Any,
    cov0: Any,
    shapes: Mapping[str, Any] | None = None,
    *,
    history: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    r"""The exact law :math:`\mathcal N(m_n, \Sigma_n)` after running ``integrator`` over
    ``grid`` (increasing times, any spacing) from :math:`\mathcal N(m_0, \Sigma_0)`:

    .. math:: m_{k+1} = \Phi_k m_k + c_k, \qquad
              \Sigma_{k+1} = \Phi_k \Sigma_k \Phi_k^\top + N_k N_k^\top .

    One affine map per step, obtained by probing the compiled step; maps are reused when the
    step is autonomous and a step length repeats. ``mean0`` is ``(D,)`` (or a scalar), ``cov0``
    ``(D, D)`` (or a variance vector / scalar). With ``history=True`` the means ``(n+1, D)`` and
    covariances ``(n+1, D, D)`` at every grid point are returned.

    A multistep program (one that carries past field values, see
    :attr:`~splitsde.compose.program.Program.history`) is Markov only in the state *and* the
    carried values: the compiled step is probed as a map of both, and the joint Gaussian law is
    propagated (the first step starts without history, as a run does).
    """
    times = make_grid(grid=np.asarray(grid, dtype=np.float64))
    layout = layout_of(integrator, shapes)
    D = sum(lay.size for lay in layout)
    m, S = _as_mean_cov(mean0, cov0, D)
    if integrator.program.uniform_draws:
        raise NotAffineError(
            "the program draws random selections (a randomized solver): its law is a mixture; "
            "use splitsde.analysis.propagate_moments for the exact mean and covariance"
        )
    if integrator.program.history:
        return _propagate_carried(integrator, times, layout, m, S, history)
    prober = _Prober(integrator, layout)
    hs = np.diff(times)
    if is_autonomous(integrator):
        uniq, inverse = np.unique(hs, return_inverse=True)
        probe_times = np.concatenate([[0.0], np.cumsum(uniq)])
        maps = [prober.affine(o, 0.0, hh) for o, hh in zip(prober.run(probe_times), uniq)]
        per_step = [maps[i] for i in inverse]
    else:
        per_step = [
            prober.affine(o, t0, hh) for o, t0, hh in zip(prober.run(times), times[:-1], hs)
        ]
    means, covs = [m], [S]
    for amap in per_step:
        m = amap.Phi @ m + amap.c
        S = amap.Phi @ S @ amap.Phi.T + amap.noise @ amap.noise.T
        S = 0.5 * (S + S.T)
        if history:
            means.append(m)
            covs.append(S)
    if history:
        return np.stack(means), np.stack(covs)
    return m, S


def stationary(amap: AffineMap) -> tuple[np.ndarray, np.ndarray]:
    r"""The scheme's exact stationary law at this step: :math:`m = (I - \Phi)^{-1} c` and the
    solution of the discrete Lyapunov equation :math:`\Sigma = \Phi \Sigma \Phi^\top + Q`.

    Raises :class:`UnstableError` (naming the spectral radius) when :math:`\rho(\Phi) \ge 1`.
    """
    rho = amap.spectral_radius
    if not rho < 1.0 - 1e-12:
        raise UnstableError(
            f"no stationary law: the step map has spectral radius rho(Phi) = {rho:.12g} >= 1 "
            f"at h = {amap.h:g} (the scheme is unstable, or not ergodic, at this step size)",
            rho,
        )
    D = amap.dim
    mean = np.linalg.solve(np.eye(D) - amap.Phi, amap.c)
    cov = scipy.linalg.solve_discrete_lyapunov(amap.Phi, amap.cov)
    return mean, 0.5 * (cov + cov.T)


def _carry_fields(program: Any) -> list[Any]:
    """The field whose value each carry entry holds (an evaluation or a recalled past value)."""
    from splitsde.compose.program import Eval, Recall

    evals = {s.outs: s.field for s in program.statements if isinstance(s, Eval)}
    recalls = {s.outs: s.like for s in program.statements if isinstance(s, Recall)}
    return [evals[outs] if outs in evals else evals[recalls[outs]] for outs in program.carry]


def _carry_layout(integrator: Any, layout: tuple[BlockLayout, ...]) -> list[tuple[int, int, int]]:
    """``(slot, output index, size)`` of every carried field value, in carry order."""
    sizes = {lay.block: lay.size for lay in layout}
    out = []
    for slot, f in enumerate(_carry_fields(integrator.program)):
        for i, like in enumerate(f.like):
            out.append((slot, i, sizes[like.name]))
    return out


def _propagate_carried(
    integrator: Any,
    times: np.ndarray,
    layout: tuple[BlockLayout, ...],
    m: np.ndarray,
    S: np.ndarray,
    history: bool,
) -> tuple[np.ndarray, np.ndarray]:
    r"""Propagate the joint law of the state and the carried field values (multistep
    programs): every step is probed as :math:`(y, c) \mapsto M (y, c) + k + N\xi`."""
    D = sum(lay.size for lay in layout)
    clay = _carry_layout(integrator, layout)
    Dc = sum(size for _, _, size in clay)
    shapes = {lay.block: lay.shape for lay in layout}
    fields = _carry_fields(integrator.program)
    like_shape = {(slot, i): shapes[fields[slot].like[i].name] for slot, i, _ in clay}
    prober = _Prober(integrator, layout)
    K, nc = prober.K, 2
    rng = np.random.default_rng(54321)
    B = 1 + D + Dc + K + nc
    Y, C, X = np.zeros((B, D)), np.zeros((B, Dc)), np.zeros((B, K))
    Y[1 : 1 + D] = np.eye(D)
    C[1 + D : 1 + D + Dc] = np.eye(Dc)
    X[1 + D + Dc : 1 + D + Dc + K] = np.eye(K)
    Y[B - nc :] = rng.standard_normal((nc, D))
    C[B - nc :] = rng.standard_normal((nc, Dc))
    X[B - nc :] = rng.standard_normal((nc, K))
    state = tuple(
        torch.from_numpy(np.ascontiguousarray(Y[:, lay.slice]).reshape(B, *lay.shape))
        for lay in layout
    )
    noise = [
        torch.from_numpy(np.ascontiguousarray(X[:, sl]).reshape(B, *shape))
        for sl, shape in prober.draw_layout
    ]
    carry_in = []
    start = 0
    for slot, i, size in clay:
        carry_in.append(
            torch.from_numpy(np.ascontiguousarray(C[:, start : start + size])).reshape(
                B, *like_shape[(slot, i)]
            )
        )
        start += size
    n_out = [len(o) for o in integrator.program.carry]

    def pack(flat: list[torch.Tensor]) -> tuple:
        out, k = [], 0
        for n in n_out:
            out.append(flat[k] if n == 1 else tuple(flat[k : k + n]))
            k += n
        return tuple(out)

    def unpack(carry: tuple) -> np.ndarray:
        flat = []
        for c in carry:
            for x in c if isinstance(c, tuple) else (c,):
                flat.append(x.detach().cpu().numpy().reshape(B, -1))
        return np.concatenate(flat, axis=1) if flat else np.zeros((B, 0))

    tensors = tuple(x.clone() for x in integrator.check_state(dict(zip(integrator.blocks, state))))
    run = integrator.prepare(tensors, times, FixedNoise(noise))
    mean = np.concatenate([m, np.zeros(Dc)])
    cov = np.zeros((D + Dc, D + Dc))
    cov[:D, :D] = S
    means, covs = [m], [S]
    with torch.no_grad():
        for k in range(len(times) - 1):
            inp = tuple(x.clone() for x in tensors)
            cin = None if k == 0 else pack([c.clone() for c in carry_in])
            out_state, out_carry = run.call(k, inp, cin, checked=True)
            y = np.concatenate([o.detach().cpu().numpy().reshape(B, -1) for o in out_state], axis=1)
            out = np.concatenate([y, unpack(out_carry)], axis=1)
            if not np.all(np.isfinite(out)):
                raise NotAffineError(f"step {k} produced non-finite values on probe states")
            c0 = out[0]
            M = (out[1 : 1 + D + Dc] - c0).T
            if k == 0:
                M[:, D:] = 0.0  # no history before the first step
            N = (out[1 + D + Dc : 1 + D + Dc + K] - c0).T
            zin = np.concatenate([Y[B - nc :], C[B - nc :] * (k > 0)], axis=1)
            pred = c0 + zin @ M.T + X[B - nc :] @ N.T
            scale = np.abs(out).max(initial=0.0) + np.abs(c0).max(initial=0.0)
            err = float(np.abs(out[B - nc :] - pred).max(initial=0.0)) / max(scale, 1e-300)
            if err > 1e3 * AFFINE_RTOL:
                raise NotAffineError(
                    f"the step is not affine in the state and the carried field values "
                    f"(step {k}: relative deviation {err:.2e}); the exact analysis applies "
                    "to linear problems"
                )
            mean = M @ mean + c0
            cov = M @ cov @ M.T + N @ N.T
            cov = 0.5 * (cov + cov.T)
            if history:
                means.append(mean[:D].copy())
                covs.append(cov[:D, :D].copy())
    if history:
        return np.stack(means), np.stack(covs)
    return mean[:D], cov[:D, :D]
