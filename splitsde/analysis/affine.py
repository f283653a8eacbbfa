r"""Exact one-step maps of compiled integrators on linear problems, by probing.

For a linear SDE (linear fields, additive noise) every derived sub-step is affine in the state
and in the standard normals it draws, so one step of any word is

.. math:: y_{n+1} = \Phi\, y_n + c + N \xi_n, \qquad \xi_n \sim \mathcal N(0, I_K),

with one-step covariance :math:`Q = N N^\top`. :func:`affine_step` obtains
:math:`(\Phi, c, N)` from the *compiled torch step itself* (architecture rule 1; the probe is
:mod:`splitsde.runtime.probe`, which the run-time divergence messages use as well). Nothing is
re-derived, so the analysis cannot drift from the sampler.

From the maps:

* :func:`propagate` -- the exact Gaussian law after running the integrator over a grid,
  :math:`m_{n+1} = \Phi_n m_n + c_n`, :math:`\Sigma_{n+1} = \Phi_n \Sigma_n \Phi_n^\top + Q_n`;
* :func:`stationary` -- the exact invariant law of the scheme at a fixed step, from the discrete
  Lyapunov equation :math:`\Sigma = \Phi \Sigma \Phi^\top + Q` and
  :math:`m = (I - \Phi)^{-1} c` (it exists iff the spectral radius :math:`\rho(\Phi) < 1`).

States are flattened block by block in the integrator's block order; ``shapes`` gives the
per-walker (event) shape of every block and :attr:`AffineMap.layout` (a
:class:`~splitsde.runtime.layout.StateLayout`) records where each block lives in the flat vector.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import scipy.linalg
import torch

from splitsde.base.errors import SplitsdeError
from splitsde.compose.visitor import StatementVisitor
from splitsde.runtime.integrate import make_grid
from splitsde.runtime.layout import StateLayout
from splitsde.runtime.noise import FixedNoise
from splitsde.runtime.probe import (
    AFFINE_RTOL,
    AffineMap,
    NotAffineError,
    _as_mean_cov,
    _Prober,
    affine_step,
    affine_steps,
    is_autonomous,
    layout_of,
)

__all__ = [
    "AffineMap",
    "NotAffineError",
    "UnstableError",
    "affine_step",
    "affine_steps",
    "is_autonomous",
    "layout_of",
    "propagate",
    "stationary",
]


class UnstableError(SplitsdeError, ValueError):
    """The scheme has no stationary law at this step (spectral radius of :math:`\\Phi \\ge 1`)."""

    def __init__(self, message: str, radius: float) -> None:
        super().__init__(message)
        self.radius = radius


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
    D = layout.dim
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


class _CarriedFields(StatementVisitor[None]):
    """The field of every value a program defines: evaluations, recalled past values and the
    values a Metropolis test keeps or restores."""

    consumer = "the carried-value layout of the numeric analysis"

    def __init__(self) -> None:
        self.evals: dict[Any, Any] = {}
        self.recalls: dict[Any, Any] = {}

    def visit_eval(self, s: Any) -> None:
        self.evals[s.outs] = s.field

    def visit_recall(self, s: Any) -> None:
        self.recalls[s.outs] = s.like

    def visit_metropolis(self, s: Any) -> None:
        for m in s.merges:
            self.evals[m.outs] = m.field

    # the other statements define no field value
    visit_draw = visit_let = visit_assign = StatementVisitor.skip
    visit_mark = visit_group_begin = StatementVisitor.skip


def _carry_fields(program: Any) -> list[Any]:
    """The field whose value each carry entry holds (an evaluation or a recalled past value)."""
    v = _CarriedFields()
    v.walk(program.statements)
    evals, recalls = v.evals, v.recalls
    return [evals[outs] if outs in evals else evals[recalls[outs]] for outs in program.carry]


def _carry_layout(integrator: Any, layout: StateLayout) -> list[tuple[int, int, int]]:
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
    layout: StateLayout,
    m: np.ndarray,
    S: np.ndarray,
    history: bool,
) -> tuple[np.ndarray, np.ndarray]:
    r"""Propagate the joint law of the state and the carried field values (multistep
    programs): every step is probed as :math:`(y, c) \mapsto M (y, c) + k + N\xi`."""
    D = layout.dim
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

    named = dict(zip(integrator.block_names, state))
    tensors = tuple(x.clone() for x in integrator.check_state(named))
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
