r"""Conjugate exponential integrators for augmented processes (PSLD, CLD): DDIM, stochastic DDIM
and multistep DEIS in the variables of the point-data flow.

**Why a new frame.** An exponential integrator solves the linear part of the probability-flow
ODE exactly and freezes (or interpolates) the network output along a step. For VP the frozen
:math:`\varepsilon` is exactly constant along the flow of a single data point, which is why DDIM
works. For an augmented process it is not: with the Cholesky factor :math:`C_t` of the kernel
covariance :math:`S_t`, the noise :math:`\varepsilon = C_t^{-1}(z - a_t x_0)` of a point
:math:`x_0` *rotates* along its probability-flow trajectory, and freezing it is a poor
approximation (the plain exponential integrators of :mod:`splitsde.diffusion.exponential`
diverge on PSLD at 10--20 NFE).

**The point-data flow.** For data at a single point :math:`x_0` the score is
:math:`s = -S_t^{-1}(z - a_t x_0)` and the :math:`\lambda`-family in reverse time
:math:`\tau = T - t` is the linear SDE

.. math:: dw = -\big(F + \tfrac12 (I + \Lambda^2)\,GG^\top S_t^{-1}\big) w\,d\tau
          + \Lambda G\,d\bar W, \qquad w = z - a_t x_0,

whose law stays :math:`N(0, S_t)` (the family has the forward marginals). In the Cholesky
coordinates :math:`e = C_t^{-1} w` (the noise prediction) this is an Ornstein--Uhlenbeck
process with stationary law :math:`N(0, I)`:

.. math:: \frac{de}{d\tau} = \big(W_t - \tfrac12 D^\Lambda_t\big)\,e + C_t^{-1}\Lambda G\,
          \frac{d\bar W}{d\tau}, \qquad
          W_t = \operatorname{low}(K + K^\top + D) - K - \tfrac12 D,

with :math:`K = C^{-1} F C`, :math:`D = C^{-1} GG^\top C^{-\top}`,
:math:`D^\Lambda = C^{-1}\Lambda^2 GG^\top C^{-\top}` and :math:`\operatorname{low}(X)` the lower
triangle of :math:`X` with half its diagonal (the derivative of the Cholesky factor,
:math:`C^{-1}\dot C = \operatorname{low}(C^{-1}\dot S C^{-\top})`, :math:`\dot S = FS + SF^\top +
GG^\top`). :math:`W_t` is skew: without noise the Cholesky noise of a point is only
**transported** (a rotation for two blocks); with noise it relaxes to :math:`N(0, I)`. Let
:math:`E(b \leftarrow a)` be the transport of this linear ODE from :math:`t_a` to :math:`t_b`
(float64: a Legendre interpolant of the generator in :math:`\log t` on each slice, integrated by
the fourth-order Magnus method).

**The conjugate step.** Freeze the noise in the transported frame (equivalently, freeze the
data prediction :math:`\hat x_0`): over a step :math:`t_a \to t_b`, with
:math:`\Phi_{ba}` the exact backward map of the forward process,

.. math:: z_b = \Phi_{ba} z_a + \big(C_b E_{ba} - \Phi_{ba} C_a\big)\,\varepsilon_a
          + C_b\,(I - E_{ba}E_{ba}^\top)^{1/2}\,\xi ,

:math:`\varepsilon_a = -C_a^\top s(z_a, t_a)`. It moves the predicted mean
:math:`z_a - C_a\varepsilon_a = a_{t_a}\hat x_0` with the forward dynamics and the residual with
the point-data flow, so it is **exact for data at a point**, at any step size and for every
:math:`\lambda` (the property that makes DDIM exact for VP on point data); for VP
(:math:`C = \sigma`, :math:`W = 0`) the deterministic step *is* DDIM and the stochastic step is
DDIM with :math:`\eta` the matching variance. This is the generalised DDIM of Zhang, Tao & Chen
(gDDIM, ICLR 2023) written as a conjugate integrator in the sense of Pandey, Rudolph & Mandt
(ICLR 2024): the linear transform :math:`\hat z_t = (C_t E_t)^{-1}\Phi(t, \cdot)\ldots` makes
the point-data part of the flow trivial and the step is exponential Euler in the transformed
variables.

**Reference Gaussian frame** (``data_variance = v > 0``). The point-data flow is the
probability flow of data :math:`N(\mu, v)` at :math:`v = 0`. Replacing :math:`S_t` by
:math:`S^v_t = S_t + v\,a_t a_t^\top` (its Cholesky factor :math:`C^v_t`, and :math:`W`,
:math:`E` built from it) gives the frame of the flow of Gaussian data of variance :math:`v`; the
noise prediction enters through :math:`R_t^{-1} = C_t^{v\top} C_t^{-\top}`:

.. math:: z_b = \Phi_{ba} z_a + \big(C^v_b E^v_{ba} - \Phi_{ba} C^v_a\big)R_a^{-1}
          \varepsilon_a + C^v_b\,(I - E^v_{ba}E^{v\top}_{ba})^{1/2}\,\xi,

exact for data :math:`N(\mu, v I)` at any step size (and, at :math:`v = 0`, the step above).
It is Pandey, Rudolph & Mandt's observation that the conjugate transform may include part of the
score's linear term. On data whose variances spread over decades no single :math:`v` makes the
steps exact: the default is :math:`v = 0`.

**Noise regulation.** ``csps`` is the stochastic conjugate step with the noise regulation of
SPS (Pandey, Rudolph & Mandt 2024): noise only in the momentum (:math:`\lambda_m = 1`) and a
data-block noise scale :math:`\lambda_s` (recommended value:
:mod:`splitsde.diffusion.defaults`); it is exact for data at a point like every conjugate step.

**Multistep** (deterministic, :math:`\lambda = 0`): the transported past values
:math:`E(a \leftarrow n{-}j)\,\varepsilon_{n-j}` are interpolated by the Lagrange polynomial in
:math:`u = \log\rho` (:math:`\rho` the process's noise level, the variable of diffusers' DEIS) or
in :math:`t`, and the step integrates it exactly against the linear part. With
:math:`P(\tau) = \Phi(t_b, \tau)\,C_\tau E(\tau \leftarrow a)`, whose derivative is the
coefficient of :math:`\varepsilon` in the flow,

.. math:: z_b = \Phi_{ba} z_a + \sum_{j=0}^{q} \Big[P\,\ell_j\Big|_a^b
          - \int_a^b P(\tau)\,\tfrac{d\ell_j}{du}\,du\Big]\,
          E(a \leftarrow n{-}j)\,\varepsilon_{n-j},

the integral by Gauss--Legendre quadrature in :math:`\log t`. Order :math:`r` has global order
:math:`r + 1`; lower orders start the run. One network evaluation per step.

References: Zhang, Tao & Chen, *gDDIM: generalized denoising diffusion implicit models*, ICLR
2023; Pandey, Rudolph & Mandt, *Efficient integrators for diffusion generative models*, ICLR
2024 (conjugate integrators); Zhang & Chen, *DEIS*, ICLR 2023; Song, Meng & Ermon, *DDIM*, ICLR
2021; Blanes, Casas, Oteo & Ros, *The Magnus expansion and some of its applications*, Phys. Rep.
470 (2009) (fourth-order Magnus integrator).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import scipy.linalg
import sympy

from splitsde.diffusion.defaults import RECOMMENDED_LAM
from splitsde.diffusion.exponential import ExponentialSampler
from splitsde.diffusion.processes import ForwardProcess
from splitsde.symbolic.expint import GridTooShortError, _semilinear
from splitsde.symbolic.field import field_of
from splitsde.symbolic.history import Lagged
from splitsde.symbolic.solve import Solver, noise_symbol
from splitsde.symbolic.spellings import lambdify as spell_lambdify
from splitsde.symbolic.symbols import t
from splitsde.symbolic.update import (
    CoefficientSymbols,
    NoiseSpec,
    NumericCoefficients,
    Update,
)

__all__ = [
    "CONJUGATE_SAMPLERS",
    "ConjugateDEIS",
    "PointFlowFrame",
    "conjugate",
    "point_flow_frame",
]

_GDDIM = "Zhang, Tao & Chen, gDDIM: generalized denoising diffusion implicit models, ICLR 2023"
_CONJ = "Pandey, Rudolph & Mandt, Efficient integrators for diffusion generative models, ICLR 2024"
_VARIABLES = ("log-rho", "t")
_MAGNUS_C = (0.5 - math.sqrt(3) / 6, 0.5 + math.sqrt(3) / 6)
_FRAME_CACHE = 20_000  # memoised times per frame (a 50-step multistep plan needs about 1,300)


def _low(X: np.ndarray) -> np.ndarray:
    """Lower triangle with half the diagonal (batched)."""
    L = np.tril(X, -1)
    idx = np.arange(X.shape[-1])
    L[..., idx, idx] = 0.5 * X[..., idx, idx]
    return L


def _psd_sqrt(Q: np.ndarray) -> np.ndarray:
    """A square root ``N`` with ``N N^T = Q`` of symmetric PSD matrices (batched, eigenvalues
    below zero from round-off clamped)."""
    ev, V = np.linalg.eigh(0.5 * (Q + np.swapaxes(Q, -1, -2)))
    return V * np.sqrt(np.clip(ev, 0.0, None))[..., None, :]


class PointFlowFrame:
    r"""Float64 quantities of the point-data flow of a process (see the module docstring).

    :meth:`at` evaluates, at diffusion times ``t``, the forward map :math:`\Phi(0 \to t)`, the
    kernel covariance :math:`S_t`, its Cholesky factor :math:`C_t`, the transport generator
    pieces :math:`W_t`, :math:`D^\Lambda_t` and :math:`u = \log\rho` with :math:`du/dt`; all from
    the process's exact kernel (:meth:`ForwardProcess.kernel
    <splitsde.diffusion.processes.ForwardProcess.kernel>`) and its symbolic drift and diffusion.
    :meth:`transport` integrates :math:`de/d\tau = (W - \tfrac12 D^\Lambda) e` over slices.

    Parameters
    ----------
    process:
        The forward process.
    nodes:
        Gauss--Legendre nodes per slice (in :math:`\log t`) for the generator's interpolant and
        the multistep quadrature.
    substeps:
        Magnus substeps per slice on the interpolant (fourth order: the transport error of a
        slice over a factor 10 in :math:`t` is below :math:`10^{-9}` with the defaults).
    """

    def __init__(
        self,
        process: ForwardProcess,
        nodes: int = 12,
        substeps: int = 64,
        data_variance: float = 0.0,
    ) -> None:
        self.process = process
        self.data_variance = _check_data_variance(data_variance)
        self.n = len(process.blocks)
        self.nodes = int(nodes)
        self.substeps = int(substeps)
        if self.nodes < 2 or self.substeps < 1:
            raise ValueError("need at least 2 nodes and 1 substep")
        subs = {p: v for p, v in process.params.items()}
        F = process.drift.xreplace(subs)
        g2 = [sympy.expand(g**2).xreplace(subs) for g in process.diffusion]
        self._F = [[spell_lambdify([t], e, "numpy") for e in row] for row in F.tolist()]
        self._g2 = [spell_lambdify([t], e, "numpy") for e in g2]
        self._v0 = np.diag(process.initial_variance)
        self._cache: dict[float, dict[str, np.ndarray]] = {}

    # -- pointwise ----------------------------------------------------------------------------
    def _matrix(self, fns: list[list[Any]], times: np.ndarray) -> np.ndarray:
        out = np.empty((times.size, self.n, self.n))
        for i, row in enumerate(fns):
            for j, fn in enumerate(row):
                out[:, i, j] = np.broadcast_to(np.asarray(fn(times), np.float64), times.shape)
        return out

    def at(self, times: Any) -> dict[str, np.ndarray]:
        """Quantities at diffusion times ``times`` (any shape; memoised per time)."""
        times = np.asarray(times, np.float64)
        flat = times.reshape(-1)
        missing = np.array(sorted({float(x) for x in flat if float(x) not in self._cache}))
        if missing.size:
            if len(self._cache) + missing.size > _FRAME_CACHE:
                # bounded memory; cleared before, never between, computing and reading a call
                self._cache.clear()
                missing = np.unique(flat)
            self._compute(missing)
        keys = next(iter(self._cache.values())).keys() if self._cache else ()
        out = {}
        for k in keys:
            vals = np.stack([self._cache[float(x)][k] for x in flat])
            out[k] = vals.reshape(*times.shape, *vals.shape[1:])
        return out

    def _compute(self, ts: np.ndarray) -> None:
        if np.any(ts <= 0):
            raise ValueError("the point-data frame needs diffusion times t > 0")
        phi, sigma = self.process.kernel(ts)
        S = sigma + phi @ self._v0 @ np.swapaxes(phi, -1, -2)  # S_t of ForwardProcess.data_kernel
        S = 0.5 * (S + np.swapaxes(S, -1, -2))
        a = phi[..., :, 0]
        # the reference law's covariance: the kernel plus data variance along a_t
        S_ref = S + self.data_variance * a[:, :, None] * a[:, None, :]
        try:
            Ck = np.linalg.cholesky(S)
            C = np.linalg.cholesky(S_ref) if self.data_variance else Ck
        except np.linalg.LinAlgError:
            raise ValueError(
                f"the kernel covariance of {self.process.name} is singular on this grid; use a "
                "positive smallest time eps"
            ) from None
        Cki = np.linalg.inv(Ck)
        Ci = np.linalg.inv(C) if self.data_variance else Cki
        # R^{-1} = C_ref^T C^{-T} converts a noise prediction to the reference coordinates
        R_inv = C.transpose(0, 2, 1) @ Cki.transpose(0, 2, 1) if self.data_variance else None
        F = self._matrix(self._F, ts)
        g2 = np.stack([np.broadcast_to(np.asarray(f(ts), np.float64), ts.shape) for f in self._g2])
        GG = np.zeros((ts.size, self.n, self.n))
        idx = np.arange(self.n)
        GG[:, idx, idx] = g2.T
        K = Ci @ F @ C
        D = Ci @ GG @ np.swapaxes(Ci, -1, -2)
        W = _low(K + np.swapaxes(K, -1, -2) + D) - K - 0.5 * D
        W = 0.5 * (W - np.swapaxes(W, -1, -2))  # skew up to round-off
        Sdot = F @ S + S @ np.swapaxes(F, -1, -2) + GG
        adot = np.einsum("kij,kj->ki", F, a)
        rho2 = S[:, 0, 0] / a[:, 0] ** 2
        dlogrho = 0.5 * Sdot[:, 0, 0] / S[:, 0, 0] - adot[:, 0] / a[:, 0]
        for i, x in enumerate(ts):
            self._cache[float(x)] = {
                "Phi0": phi[i],
                "S": S[i],
                "C": Ck[i],
                "Cinv": Cki[i],
                "Cref": C[i],
                "Cref_inv": Ci[i],
                "R_inv": R_inv[i] if R_inv is not None else np.eye(self.n),
                "W": W[i],
                "D": D[i],
                "g2": g2[:, i],
                "log_rho": np.array(0.5 * math.log(rho2[i])),
                "dlog_rho": np.array(dlogrho[i]),
            }

    # -- transports ---------------------------------------------------------------------------
    def _generator(self, q: dict[str, np.ndarray], lam2: np.ndarray, times: np.ndarray):
        r""":math:`B(x) = -t\,(W - \tfrac12 D^\Lambda)`, the generator in :math:`x = \log t`."""
        Ci = q["Cref_inv"]
        DL = np.einsum("...ij,...j,...kj->...ik", Ci, lam2 * q["g2"], Ci)
        return -times[..., None, None] * (q["W"] - 0.5 * DL)

    def transport(
        self,
        t_a: np.ndarray,
        t_b: np.ndarray,
        lam: Mapping[int, float] | float = 0.0,
        stops: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray | None]:
        r""":math:`E(b \leftarrow a)` for slices from ``t_a`` to ``t_b`` (arrays ``(S,)``,
        diffusion times), and, if ``stops`` (``(S, G)``, times inside each slice in marching
        order) is given, :math:`E(\text{stop} \leftarrow a)` at every stop ``(S, G, n, n)``."""
        t_a = np.atleast_1d(np.asarray(t_a, np.float64))
        t_b = np.atleast_1d(np.asarray(t_b, np.float64))
        lam2 = self._lam2(lam)
        xa, xb = np.log(t_a), np.log(t_b)
        xg, _ = np.polynomial.legendre.leggauss(self.nodes)
        # generator sampled at Gauss nodes of each slice, interpolated by Legendre series
        frac = 0.5 * (xg + 1.0)
        xs = xa[:, None] + frac[None, :] * (xb - xa)[:, None]  # (S, G)
        ts = np.exp(xs)
        q = self.at(ts)
        B = self._generator(q, lam2, ts)  # (S, G, n, n)
        V = np.polynomial.legendre.legvander(xg, self.nodes - 1)  # (G, G)
        coef = np.linalg.solve(V, B.reshape(B.shape[0], self.nodes, -1))  # (S, G, n*n)

        def B_at(frac_: np.ndarray) -> np.ndarray:
            y = 2.0 * frac_ - 1.0  # (S,) positions in [-1, 1]
            Vy = np.polynomial.legendre.legvander(y, self.nodes - 1)  # (S, G)
            return np.einsum("sg,sgk->sk", Vy, coef).reshape(-1, self.n, self.n)

        # breakpoints: stops (as fractions of the slice in x), then the end
        if stops is not None:
            stops = np.asarray(stops, np.float64)
            sfrac = (np.log(stops) - xa[:, None]) / np.where(xb != xa, xb - xa, 1.0)[:, None]
            marks = [sfrac[:, g] for g in range(stops.shape[1])] + [np.ones_like(xa)]
        else:
            marks = [np.ones_like(xa)]
        eye = np.broadcast_to(np.eye(self.n), (t_a.size, self.n, self.n))
        E = eye.copy()
        pos = np.zeros_like(xa)
        at_stops = []
        dx = xb - xa
        for mark in marks:
            span = mark - pos
            # substeps in proportion to the segment's share of the slice
            m = max(1, math.ceil(self.substeps * float(np.max(np.abs(span)))))
            for k in range(m):
                f0 = pos + span * (k / m)
                h = (span / m) * dx  # signed step in x
                B1 = B_at(f0 + span / m * _MAGNUS_C[0])
                B2 = B_at(f0 + span / m * _MAGNUS_C[1])
                Om = 0.5 * h[:, None, None] * (B1 + B2) + (math.sqrt(3) / 12) * (h**2)[
                    :, None, None
                ] * (B2 @ B1 - B1 @ B2)
                E = scipy.linalg.expm(Om) @ E
            pos = mark
            at_stops.append(E.copy())
        if stops is None:
            return E, None
        return E, np.stack(at_stops[:-1], axis=1)

    def _lam2(self, lam: Mapping[int, float] | float) -> np.ndarray:
        if isinstance(lam, Mapping):
            return np.array([float(lam.get(i, 1.0)) ** 2 for i in range(self.n)])
        return np.full(self.n, float(lam) ** 2)


def point_flow_frame(process: ForwardProcess, data_variance: float = 0.0) -> PointFlowFrame:
    """The (memoised) :class:`PointFlowFrame` of a process for a reference data variance."""
    cache = process.__dict__.setdefault("_point_flow_frame", {})
    key = _check_data_variance(data_variance)
    if key not in cache:
        cache[key] = PointFlowFrame(process, data_variance=key)
    return cache[key]


def _check_data_variance(v: Any) -> float:
    try:
        v = float(v)
    except (TypeError, ValueError):
        raise ValueError(f"data_variance must be a number >= 0, got {v!r}") from None
    if not (v >= 0.0 and math.isfinite(v)):
        raise ValueError(f"data_variance must be a finite number >= 0, got {v!r}")
    return v


def _check_options(order: Any, variable: str, stochastic: bool) -> None:
    if isinstance(order, bool) or int(order) != order:
        raise ValueError(f"order must be an integer, got {order!r}")
    if not 0 <= order <= 3:
        raise ValueError(f"conjugate DEIS order {order} is not supported: orders 0 to 3")
    if variable not in _VARIABLES:
        raise ValueError(f"unknown variable {variable!r}; choose one of {_VARIABLES}")
    if order > 0 and stochastic:
        raise ValueError(
            "the conjugate multistep is deterministic (lambda = 0); the stochastic conjugate "
            "step has order 0"
        )


def _declared_order(r: int) -> int:
    """Global order of the deterministic conjugate multistep of order ``r``: ``r + 1``, except
    that the warm start (orders 0, 1, 2 on the first steps) limits order 3 to 3 on the augmented
    processes (measured: ``tests/diffusion/test_conjugate.py``)."""
    return min(r + 1, 3)


def _lagrange(nodes: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lagrange basis ``(q+1, *x.shape)`` through ``nodes`` and its derivative at ``x``."""
    q = len(nodes)
    ell = np.ones((q, *x.shape))
    dell = np.zeros((q, *x.shape))
    for j in range(q):
        for m in range(q):
            if m == j:
                continue
            f = (x - nodes[m]) / (nodes[j] - nodes[m])
            dell[j] = dell[j] * f + ell[j] / (nodes[j] - nodes[m])
            ell[j] = ell[j] * f
    return ell, dell


# ---------------------------------------------------------------------------------------------
# The solver
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ConjugateDEIS:
    r"""Conjugate exponential integrator of the :math:`\varepsilon`-flow
    (:func:`~splitsde.diffusion.epsilon.epsilon_sde`) of ``process``: the conjugate DDIM step
    (``order = 0``, deterministic or stochastic) or the conjugate multistep DEIS of ``order``
    1--3 in ``variable`` (``"log-rho"`` or ``"t"``; deterministic only). See the module
    docstring for the update.

    ``data_variance`` :math:`v \ge 0` builds the frame of Gaussian data :math:`N(\mu, v I)`
    instead of data at a point (module docstring); the step is then exact for such data.

    Weak order: ``order + 1`` for the deterministic flow (:math:`\lambda = 0`), 1 with noise.
    One field evaluation per step.
    """

    process: ForwardProcess
    order: int = 0
    variable: str = "log-rho"
    lam: float | Mapping[str, float] = 0.0
    name: str = ""
    frame: PointFlowFrame | None = field(default=None, compare=False)
    data_variance: float = 0.0

    def __post_init__(self) -> None:
        _check_options(self.order, self.variable, self._stochastic)
        _check_data_variance(self.data_variance)
        if self.frame is not None and self.frame.data_variance != self.data_variance:
            raise ValueError("the frame was built for another data_variance")

    @property
    def _stochastic(self) -> bool:
        lam = self._lam_by_index()  # blocks a mapping leaves out have lambda = 1
        return any(v != 0.0 for v in lam.values()) if isinstance(lam, dict) else lam != 0.0

    @property
    def label(self) -> str:
        if self.name:
            return self.name
        if self.order == 0:
            return "conjugate DDIM" + (" (stochastic)" if self._stochastic else "")
        return f"conjugate DEIS ({self.variable}AB{self.order})"

    def _lam_by_index(self) -> dict[int, float] | float:
        if isinstance(self.lam, Mapping):
            names = self.process.block_names
            return {i: float(self.lam.get(b, 1.0)) for i, b in enumerate(names)}
        return float(self.lam)

    def derive(self, flow: Any) -> Solver:
        what = self.label
        sl = _semilinear(flow, what)
        blocks = self.process.blocks
        if tuple(sl.changed) != tuple(blocks):
            raise ValueError(
                f"{what} applies to the epsilon-flow of {self.process.name} (blocks "
                f"{', '.join(self.process.block_names)}); this flow changes "
                f"{', '.join(b.name for b in sl.changed)}"
            )
        if sl.stochastic != self._stochastic:
            raise ValueError(
                f"{what}: the flow is {'stochastic' if sl.stochastic else 'deterministic'} but "
                f"the solver was built for lambda = {self.lam}"
            )
        found = {field_of(u)[0] for u in sl.fields}
        if len(found) != 1:
            raise ValueError(f"{what}: expected the one noise-prediction field of the flow")
        (f,) = found
        if len(f.outputs) != len(blocks):
            raise ValueError(f"{what}: expected one noise prediction per block")
        # every output is needed (a block without noise, like CLD's data block, has no field
        # term in the flow, but its noise prediction enters the conjugate update)
        args = sl.fields[0].args
        apps = {c: f.apply(c, args) for c in range(len(blocks))}
        n, r = len(blocks), self.order
        keys: list[Any] = [("Phi", i, k) for i in range(n) for k in range(n)]
        keys += [("K", j, i, c) for j in range(r + 1) for i in range(n) for c in range(n)]
        if self._stochastic:
            keys += [("N", i, c) for i in range(n) for c in range(n)]
        group = NumericCoefficients(
            tuple(keys),
            lambda t0, s, params, past=None: self._coefficients(t0, s, past),
            method=self._method_text(),
            autonomous=False,
            history=r,
        )
        coef = CoefficientSymbols(group, lambda key: "c" + "_".join(map(str, key)))

        xis = [noise_symbol(b) for b in blocks]
        exprs = []
        for i, _b in enumerate(blocks):
            e = sum((coef(("Phi", i, k)) * blocks[k] for k in range(n)), sympy.Integer(0))
            for j in range(r + 1):
                for c in range(n):
                    u = apps[c] if j == 0 else Lagged(apps[c], j)
                    e += coef(("K", j, i, c)) * u
            if self._stochastic:
                e += sum((coef(("N", i, c)) * xis[c] for c in range(n)), sympy.Integer(0))
            exprs.append(e)
        noises = tuple((xi, NoiseSpec(b)) for xi, b in zip(xis, blocks)) if self._stochastic else ()
        upd = Update(tuple(blocks), tuple(exprs), noises, coefficients=coef.defs)
        notes = [f"warm start: orders 0..{r - 1} on the first steps"] if r else []
        if self._stochastic:
            notes.append("stochastic: exact for data at a point, weak order 1")
        return Solver(
            method=what,
            exact=False,
            reason="linear part exact; the noise prediction frozen (or interpolated) in the "
            "frame transported by the point-data flow: exact for data at a point",
            update=upd,
            weak_order=1 if self._stochastic else _declared_order(r),
            strong_order=None,
            time=self._method_text(),
            notes=tuple(notes),
        )

    def _method_text(self) -> str:
        fr = self._frame()
        return (
            f"exact kernel of {self.process.name}; point-data transport by Magnus-4 on a "
            f"{fr.nodes}-node Legendre interpolant in log t"
        )

    def _frame(self) -> PointFlowFrame:
        if self.frame is not None:
            return self.frame
        return point_flow_frame(self.process, self.data_variance)

    # -- coefficients -------------------------------------------------------------------------
    def _u(self, q: dict[str, np.ndarray], times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The interpolation variable and its derivative in x = log t."""
        if self.variable == "t":
            return times, times
        return q["log_rho"], q["dlog_rho"] * times

    def _coefficients(
        self, tau0: np.ndarray, s: np.ndarray, past: np.ndarray | None
    ) -> dict[Any, np.ndarray]:
        fr = self._frame()
        T = self.process.T
        n, r = fr.n, self.order
        rows = tau0.shape[0]
        out = {
            k: np.zeros(rows)
            for k in (
                [("Phi", i, k) for i in range(n) for k in range(n)]
                + [("K", j, i, c) for j in range(r + 1) for i in range(n) for c in range(n)]
                + ([("N", i, c) for i in range(n) for c in range(n)] if self._stochastic else [])
            )
        }
        if rows == 0:
            return out
        ta, tb = T - tau0, T - (tau0 + s)
        if past is None:
            past = np.zeros((rows, 0))
        avail = np.sum(np.cumprod(np.isfinite(past), axis=1), axis=1) if r else np.zeros(rows)
        if r and avail[-1] < r:
            raise GridTooShortError(
                f"{self.label} needs at least {r + 1} steps to reach order {r} (warm start with "
                f"lower orders); the grid has {rows} step(s)"
            )
        qa, qb = fr.at(ta), fr.at(tb)
        Phi = qb["Phi0"] @ np.linalg.inv(qa["Phi0"])  # backward map t_a -> t_b
        xg, wg = np.polynomial.legendre.leggauss(fr.nodes)
        frac = 0.5 * (xg + 1.0)
        wg = 0.5 * wg
        stops = np.exp(np.log(ta)[:, None] + frac[None, :] * np.log(tb / ta)[:, None])
        E, E_stops = fr.transport(ta, tb, self._lam_by_index(), stops=stops if r else None)
        Cb, Ca = qb["Cref"], qa["Cref"]
        K = [np.zeros((rows, n, n)) for _ in range(r + 1)]
        K[0] = (Cb @ E - Phi @ Ca) @ qa["R_inv"]
        if r:
            qg = fr.at(stops)  # (rows, G)
            Pg = (
                qb["Phi0"][:, None] @ np.linalg.inv(qg["Phi0"]) @ qg["Cref"] @ E_stops
            )  # P at the nodes
            Pa, Pb = Phi @ Ca, Cb @ E
            ua, _ = self._u(qa, ta)
            ub, _ = self._u(qb, tb)
            ug, dug = self._u(qg, stops)
            # transports of past values to t_a: by slice start, from the rows of this grid
            start_of = {float(x): i for i, x in enumerate(tau0)}
            back = self._past_transports(fr, tau0, s, past, E, start_of, avail)
            for row in range(rows):
                q = int(min(r, avail[row]))
                if q == 0:
                    continue
                starts_tau = np.concatenate([[tau0[row]], past[row, :q]])
                t_nodes = T - starts_tau
                q_nodes = fr.at(t_nodes)
                un = self._u(q_nodes, t_nodes)[0]
                R_inv_nodes = q_nodes["R_inv"]
                ell_a, _ = _lagrange(un, np.array([ua[row]]))
                ell_b, _ = _lagrange(un, np.array([ub[row]]))
                _, dell = _lagrange(un, ug[row])  # (q+1, G)
                dx = math.log(tb[row] / ta[row])
                for j in range(q + 1):
                    integral = dx * np.einsum("g,gik->ik", wg * dell[j] * dug[row], Pg[row])
                    Ij = Pb[row] * ell_b[j, 0] - Pa[row] * ell_a[j, 0] - integral
                    K[j][row] = Ij @ back[row][j] @ R_inv_nodes[j]
        for j in range(r + 1):
            for i in range(n):
                for c in range(n):
                    out[("K", j, i, c)] = K[j][:, i, c]
        for i in range(n):
            for k in range(n):
                out[("Phi", i, k)] = Phi[:, i, k]
        if self._stochastic:
            I = np.eye(n)
            N = Cb @ _psd_sqrt(I - E @ np.swapaxes(E, -1, -2))  # Cb: the reference factor
            for i in range(n):
                for c in range(n):
                    out[("N", i, c)] = N[:, i, c]
        return out

    def _past_transports(
        self,
        fr: PointFlowFrame,
        tau0: np.ndarray,
        s: np.ndarray,
        past: np.ndarray,
        E: np.ndarray,
        start_of: dict[float, int],
        avail: np.ndarray,
    ) -> list[list[np.ndarray]]:
        r""":math:`E(a \leftarrow n{-}j)` per row and lag ``j`` (``j = 0``: identity)."""
        T = self.process.T
        n = fr.n
        out: list[list[np.ndarray]] = []
        for row in range(len(tau0)):
            mats = [np.eye(n)]
            q = int(min(self.order, avail[row]))
            acc = np.eye(n)
            cur_end = tau0[row]
            for j in range(1, q + 1):
                prev = float(past[row, j - 1])
                i = start_of.get(prev)
                if i is not None and abs(tau0[i] + s[i] - cur_end) <= 1e-12 * max(1.0, T):
                    step = E[i]
                else:  # a lone slice: integrate the transport directly
                    step, _ = fr.transport(T - np.array([prev]), T - np.array([cur_end]))
                    step = step[0]
                acc = acc @ step
                mats.append(acc.copy())
                cur_end = prev
            out.append(mats)
        return out


# ---------------------------------------------------------------------------------------------
# Samplers
# ---------------------------------------------------------------------------------------------
def conjugate(
    order: int = 0,
    *,
    variable: str = "log-rho",
    lam: float | Mapping[str, float] = 0.0,
    name: str = "",
    data_variance: float = 0.0,
) -> ExponentialSampler:
    r"""A conjugate exponential-integrator sampler: the conjugate DDIM step (``order = 0``;
    ``lam > 0`` stochastic, one number or per block name, e.g. ``{"x": 0, "m": 1}`` for noise
    in the momentum only) or the conjugate multistep DEIS of ``order`` 1--3. ``data_variance``
    chooses the frame of Gaussian data of that variance instead of data at a point."""
    if isinstance(lam, Mapping):
        lam = {str(k): float(v) for k, v in lam.items()}
        if all(v == 0.0 for v in lam.values()):  # blocks left out would have lambda = 1
            raise ValueError("per-block lam needs a nonzero entry; give lam=0.0 for cddim")
        deterministic = False
        lam_txt = ", ".join(f"{k} = {v:g}" for k, v in sorted(lam.items()))
    else:
        lam = float(lam)
        deterministic = lam == 0.0
        lam_txt = f"{lam:g}"
    _check_options(order, variable, not deterministic)
    dv = _check_data_variance(data_variance)
    if order == 0:
        default = "cddim" if deterministic else f"cddim-sde{lam_txt}"
    else:
        default = f"cdeis{order}" if variable == "log-rho" else f"cdeis-t{order}"
    if dv:
        default += f"-v{dv:g}"
    what = (
        "conjugate DDIM: exponential Euler with the noise prediction frozen in the frame of "
        "the point-data flow (exact for data at a point)"
        if order == 0
        else f"conjugate multistep DEIS: Lagrange polynomial of degree {order} in {variable} "
        "through past noise predictions transported by the point-data flow"
    )
    if not deterministic:
        what += f"; stochastic, lambda = {lam_txt}"
    if dv:
        what += f"; frame of Gaussian data of variance {dv:g} (exact for such data)"
    return ExponentialSampler(
        name or default,
        "epsilon",
        "R",
        lam,
        make=lambda p, lam_: ConjugateDEIS(p, order, variable, lam_, data_variance=dv),
        scalar_only=False,
        order=_declared_order(order) if deterministic else 1,
        description=what,
        reference=_GDDIM + "; " + _CONJ,
    )


#: The conjugate family (listed in :data:`splitsde.diffusion.registry.SAMPLERS`).
CONJUGATE_SAMPLERS: dict[str, ExponentialSampler] = {
    s.name: s
    for s in [
        conjugate(0),
        conjugate(0, lam=RECOMMENDED_LAM.get("cddim-sde", 1.0), name="cddim-sde"),
        replace(
            conjugate(0, lam=RECOMMENDED_LAM.get("csps", {"x": 0.0, "m": 1.0}), name="csps"),
            needs_blocks=("x", "m"),
            description="conjugate DDIM step with SPS's noise regulation: noise in the "
            "momentum (lambda_m = 1), data-block noise lambda_s (default: the recommended "
            "value, splitsde.diffusion.defaults)",
        ),
        conjugate(1),
        conjugate(2),
        conjugate(3),
    ]
}
