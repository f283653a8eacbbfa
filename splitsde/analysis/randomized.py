r"""Exact first two moments of randomized affine schemes (per-walker random selections).

A randomized solver (the Poisson midpoint method) draws, besides Gaussians, uniforms
:math:`u_d \sim U(0, 1)` per walker and step, and uses them only through selections
:math:`\mathbf 1[\mathrm{lo} \le u_d < \mathrm{hi}]` (masked evaluations and
:class:`~splitsde.symbolic.selection.Indicator`). On a linear problem one step is then affine
in the state and the Gaussians *for every outcome* of the selections: each draw falls into one
of finitely many cells :math:`j` (probability :math:`p_{dj}`, the cell's length), and the step
map is

.. math:: y \mapsto \Phi_W y + c_W + N_W \xi, \qquad
          (\Phi, c, N)_W = (\Phi, c, N)_0 + \sum_{d, j} W_{dj}\,\Delta(\Phi, c, N)_{dj},

with one-hot cell indicators :math:`W_d` (independent across draws) -- *additive* across draws,
which is checked on a joint probe. The law after a step is a mixture, not a Gaussian, but its
mean and covariance propagate exactly:

.. math:: m' = \bar\Phi m + \bar c, \qquad
          \Sigma' = \bar\Phi \Sigma \bar\Phi^\top + \bar N \bar N^\top
          + \sum_d \sum_{j,k} \operatorname{Cov}(W_{dj}, W_{dk})
            \big(\Delta\Phi_{dj} \Sigma \Delta\Phi_{dk}^\top + \Delta N_{dj}\Delta N_{dk}^\top
            + \Delta y_{dj} \Delta y_{dk}^\top\big),

:math:`\Delta y_{dj} = \Delta\Phi_{dj} m + \Delta c_{dj}`,
:math:`\operatorname{Cov}(W_{dj}, W_{dk}) = p_{dj}\delta_{jk} - p_{dj}p_{dk}`. Every branch map
is probed from the compiled step, as in :mod:`splitsde.analysis.affine`.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from fractions import Fraction
from typing import Any

import numpy as np
import sympy

from splitsde.analysis.affine import (
    AffineMap,
    NotAffineError,
    _as_mean_cov,
    _Prober,
    is_autonomous,
    layout_of,
)
from splitsde.compose.visitor import StatementVisitor, computed_expressions
from splitsde.runtime.integrate import make_grid

__all__ = ["propagate_moments", "selection_cells"]


class _Masks(StatementVisitor[Any]):
    """The selection ``(u, lo, hi)`` of a masked evaluation; ``None`` for other statements
    (selections inside expressions are found through :func:`computed_expressions`)."""

    consumer = "the selection cells of the randomized analysis"

    def visit_eval(self, s: Any) -> Any:
        return s.mask

    # a Metropolis test's uniform decides acceptance, it selects no evaluation
    visit_draw = visit_recall = visit_let = visit_assign = StatementVisitor.skip
    visit_mark = visit_group_begin = visit_metropolis = StatementVisitor.skip


_MASKS = _Masks()


def selection_cells(program: Any) -> list[list[tuple[float, float]]]:
    """For every uniform draw of ``program`` (program order), the cells ``(value, probability)``
    in which the step does not depend on the draw (from the selections' breakpoints)."""
    from splitsde.symbolic.selection import Indicator

    cuts: dict[Any, set[Fraction]] = {
        d.symbol: {Fraction(0), Fraction(1)} for d in program.uniform_draws
    }

    def add(u: Any, lo: Any, hi: Any) -> None:
        if u in cuts:
            cuts[u] |= {Fraction(str(lo)), Fraction(str(hi))}

    for s in program.statements:
        mask = _MASKS.visit(s)
        if mask is not None:
            add(*mask)
        for e in computed_expressions(s):
            for node in e.atoms(Indicator):
                add(*node.args)
    for d in program.uniform_draws:
        for s in program.statements:
            for e in computed_expressions(s):
                plain = e.xreplace({n: sympy.Integer(0) for n in e.atoms(Indicator)})
                if d.symbol in plain.free_symbols:
                    raise NotAffineError(
                        f"uniform draw {d.symbol} is used other than through selections"
                    )
    out = []
    for d in program.uniform_draws:
        pts = sorted(cuts[d.symbol])
        out.append([(float((a + b) / 2), float(b - a)) for a, b in itertools.pairwise(pts)])
    return out


def propagate_moments(
    integrator: Any,
    grid: Sequence[float] | np.ndarray,
    mean0: Any,
    cov0: Any,
    shapes: Mapping[str, Any] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    r"""Exact mean and covariance after running a randomized affine ``integrator`` over
    ``grid`` from a law with mean ``mean0`` and covariance ``cov0`` (see the module
    docstring). Raises :class:`~splitsde.analysis.affine.NotAffineError` when a branch is not
    affine or the selections do not act additively."""
    times = make_grid(grid=np.asarray(grid, dtype=np.float64))
    layout = layout_of(integrator, shapes)
    D = layout.dim
    m, S = _as_mean_cov(mean0, cov0, D)
    cells = selection_cells(integrator.program)
    base = [c[0][0] for c in cells]

    def maps(uniforms: list[float]) -> list[AffineMap]:
        prober = _Prober(integrator, layout, uniforms=uniforms)
        hs = np.diff(times)
        if is_autonomous(integrator):
            uniq, inverse = np.unique(hs, return_inverse=True)
            probe = np.concatenate([[0.0], np.cumsum(uniq)])
            got = [prober.affine(o, 0.0, hh) for o, hh in zip(prober.run(probe), uniq)]
            return [got[i] for i in inverse]
        return [prober.affine(o, t0, hh) for o, t0, hh in zip(prober.run(times), times[:-1], hs)]

    m0 = maps(base)
    steps = len(m0)
    # per step: the mean map, the mean noise factor, and the selection covariance terms
    # sum_d sum_jk Cov(W_dj, W_dk) (dPhi_j S dPhi_k^T, dN_j dN_k^T, dy_j dy_k^T), reduced
    # draw by draw so that only D x D (and one D x K mean noise) matrices are kept
    Phi_bar = [a.Phi.copy() for a in m0]
    c_bar = [a.c.copy() for a in m0]
    N_bar = [a.noise.copy() for a in m0]
    noise_cov = [np.zeros_like(a.Phi) for a in m0]
    draws: list[list[tuple[float, list[np.ndarray], list[np.ndarray]]]] = []
    probes: dict[int, list[AffineMap]] = {}
    movable = [d for d, c in enumerate(cells) if len(c) > 1]
    keep = {movable[0], movable[-1]} if movable else set()  # for the additivity check
    for d, cd in enumerate(cells):
        A = [np.zeros_like(a.noise) for a in m0]  # sum_j p_j dN_j of this draw
        terms = []
        for j, (value, p) in enumerate(cd[1:], start=1):
            u = list(base)
            u[d] = value
            bm = maps(u)
            if j == len(cd) - 1 and d in keep:
                probes[d] = bm
            dPhi = [bm[k].Phi - m0[k].Phi for k in range(steps)]
            dc = [bm[k].c - m0[k].c for k in range(steps)]
            for k in range(steps):
                dN = bm[k].noise - m0[k].noise
                Phi_bar[k] += p * dPhi[k]
                c_bar[k] += p * dc[k]
                N_bar[k] += p * dN
                A[k] += p * dN
                noise_cov[k] += p * dN @ dN.T
            terms.append((p, dPhi, dc))
        for k in range(steps):
            noise_cov[k] -= A[k] @ A[k].T
        draws.append(terms)
    _check_additive(cells, base, probes, m0, maps)
    for k in range(steps):
        cov = Phi_bar[k] @ S @ Phi_bar[k].T + N_bar[k] @ N_bar[k].T + noise_cov[k]
        for terms in draws:
            # sum_jk (p_j delta_jk - p_j p_k) X_j Y_k^T over the non-base cells (dX_0 = 0)
            mP = sum((p * dPhi[k] for p, dPhi, _ in terms), np.zeros_like(S))
            my = sum((p * (dPhi[k] @ m + dc[k]) for p, dPhi, dc in terms), np.zeros_like(m))
            for p, dPhi, dc in terms:
                y = dPhi[k] @ m + dc[k]
                cov += p * (dPhi[k] @ S @ dPhi[k].T + np.outer(y, y))
            cov -= mP @ S @ mP.T + np.outer(my, my)
        m = Phi_bar[k] @ m + c_bar[k]
        S = 0.5 * (cov + cov.T)
    return m, S


def _check_additive(
    cells: list,
    base: list[float],
    probes: dict[int, list[AffineMap]],
    m0: list[AffineMap],
    maps: Any,
) -> None:
    """The step must act additively across draws: probe two draws off their base cell."""
    movable = [d for d, c in enumerate(cells) if len(c) > 1]
    if len(movable) < 2:
        return
    d1, d2 = movable[0], movable[-1]
    u = list(base)
    u[d1], u[d2] = cells[d1][-1][0], cells[d2][-1][0]
    joint = maps(u)
    one, two = probes[d1], probes[d2]
    for k, a0 in enumerate(m0):
        for part in ("Phi", "c", "noise"):
            base_part = getattr(a0, part)
            pred = getattr(one[k], part) + getattr(two[k], part) - base_part
            scale = max(np.abs(base_part).max(initial=0.0), 1.0)
            if np.abs(getattr(joint[k], part) - pred).max() > 1e-9 * scale:
                raise NotAffineError(
                    "the selections of different uniform draws interact (not additive): "
                    "the exact moments need an additive randomized step"
                )
