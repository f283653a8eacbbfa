r"""The reverse-SDE family in the noise-prediction (:math:`\varepsilon`) parametrisation.

Exponential integrators approximate the *noise prediction* along a step, not the score: with
:math:`s_t = -L_t^{-\top}\varepsilon` (the block form of
:mod:`splitsde.diffusion.scores`) the :math:`\lambda`-family of
:class:`~splitsde.diffusion.reverse.ReverseSDE` becomes

.. math::
    d\bar z_b = \Big[-(F\bar z)_b - \tfrac{1+\lambda_b^2}{2}\,g_b^2
        \sum_c \big(L^{-\top}_{T-\tau}\big)_{bc}\,\varepsilon_c(\bar z, \tau)\Big]d\tau
        + \lambda_b g_b\,d\bar W_b,

a linear part plus the field :math:`\varepsilon` (field ``e``, one output per block). The flow
is built from the family's own symbolic drift by substituting the score, so there is no second
formula. :math:`L_t^{-\top}` enters as float64 functions of time evaluated from the process's
exact kernel.

For one block (VP, VE, the cosine schedule) the flow has the exponential clock
:math:`\rho = \sigma_t/\alpha_t` (:meth:`ForwardProcess.noise_level
<splitsde.diffusion.processes.ForwardProcess.noise_level>`) with weight
:math:`k = (1+\lambda^2)\,\alpha_t`: :class:`DiffusionClock`. In :math:`y = x/\alpha_t` the flow
reads :math:`dy = (1+\lambda^2)\,\varepsilon\,d\rho + \lambda\,dW_{\rho^2}` (Zhang & Chen, DEIS,
ICLR 2023; Song, Meng & Ermon, DDIM, ICLR 2021).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import sympy
import torch

from splitsde.diffusion.kernels import KernelTable
from splitsde.diffusion.scores import eps_from_score
from splitsde.symbolic.expint import ExponentialClock
from splitsde.symbolic.field import Field
from splitsde.symbolic.flow import Flow
from splitsde.symbolic.sde import SDE
from splitsde.symbolic.symbols import Parameter, t

if TYPE_CHECKING:
    from splitsde.diffusion.processes import ForwardProcess

__all__ = ["DiffusionClock", "EpsilonField", "epsilon_sde", "kernel_inverse_transpose"]


def kernel_inverse_transpose(process: ForwardProcess, times: Any) -> np.ndarray:
    r""":math:`L_t^{-\top}` (``(..., n, n)``, float64) at diffusion times ``times``: the inverse
    transpose of the lower Cholesky factor of the kernel covariance :math:`S_t`."""
    times = np.asarray(times, np.float64)
    if np.any(times <= 0):
        raise ValueError("L_t^{-T} needs diffusion times t > 0 (the kernel is singular at 0)")
    return KernelTable(process).stack("L_inv_T", times)


def _time_function(name: str, fn: Callable[[np.ndarray], np.ndarray]) -> type[sympy.Function]:
    """A sympy function of time whose float64 numpy implementation is ``fn`` (used by
    ``lambdify`` in coefficient evaluation; never lowered to torch)."""

    def implementation(x: Any) -> np.ndarray:
        return fn(np.asarray(x, np.float64))

    return type(
        name,
        (sympy.Function,),
        {"nargs": 1, "_imp_": staticmethod(implementation), "is_real": True},
    )


def epsilon_sde(process: ForwardProcess, lam: float | Mapping[str, float] = 0.0) -> SDE:
    r"""The reverse family of ``process`` at noise scale ``lam`` as one flow ``R`` in the
    :math:`\varepsilon`-parametrisation (field ``e``, outputs named like the blocks), in
    reverse time :math:`\tau`."""
    key = tuple(sorted(lam.items())) if isinstance(lam, Mapping) else float(lam)
    cache = process.__dict__.setdefault("_epsilon_sde_cache", {})
    if key in cache:
        return cache[key]
    rev = process.reverse(lam)
    names = process.block_names
    n = len(names)
    e = Field(
        "e",
        process.blocks,
        time=True,
        outputs=list(names),
        description=f"noise prediction of the {process.name} kernel, called with reverse time",
    )
    T = rev.T
    tag = f"{process.name.replace('-', '_')}_{id(process) % 100000}"

    table = KernelTable(process)

    def linv_t(x: np.ndarray) -> np.ndarray:
        """All times of a call at once (quadratures ask for arrays of nodes, and for the same
        nodes once per entry of L^{-T}: the table keeps them)."""
        if len(table) > 100_000:
            table.clear()
        return table.stack("L_inv_T", np.asarray(x, np.float64))

    entries = {}
    for b in range(n):
        for c in range(b, n):  # L^{-T} is upper triangular
            entries[(b, c)] = _time_function(
                f"LinvT_{tag}_{b}{c}", lambda x, b=b, c=c: linv_t(x)[..., b, c]
            )
    subs = {}
    for b, name in enumerate(names):
        subs[rev.score[name]] = -sum(
            (fn(T - t) * e[names[c]] for (bb, c), fn in entries.items() if bb == b),
            sympy.Integer(0),
        )
    drift = {b: sympy.expand(rev.drift[b].xreplace(subs)) for b in process.blocks}
    flow = Flow(
        {b: d for b, d in drift.items() if d != 0},
        {b: g for b, g in rev.noise.items() if g != 0},
        description=f"reverse {process.name}, epsilon parametrisation",
    )
    sde = SDE(
        process.blocks,
        {"R": flow},
        name=f"reverse {process.name} (epsilon parametrisation, lambda = {rev._lam_text()})",
    )
    cache[key] = sde
    return sde


def epsilon_params(process: ForwardProcess, sde: SDE) -> dict[str, float]:
    """Parameter values of an :func:`epsilon_sde` (the process's and the horizon ``T``)."""
    values = {**process.values, "T": process.T}
    names = {p.name for p in sde.parameters}
    return {k: v for k, v in values.items() if k in names}


class EpsilonField:
    r"""The callable of field ``e``: :math:`\varepsilon = -L_t^\top s` from a score callable
    (one score call per evaluation), or the network's own output when ``score`` is a
    :class:`~splitsde.diffusion.scores.ScoreModel` with ``parametrisation="eps"``."""

    def __init__(self, process: ForwardProcess, score: Callable[..., Any]) -> None:
        from splitsde.diffusion.scores import ScoreModel

        self.process = process
        self.score = score
        self.direct = isinstance(score, ScoreModel) and score.parametrisation == "eps"
        #: Kernel terms of the conversion (shared with a plan-bound score model): prepared
        #: for the grid's evaluation times by the plan.
        shared = getattr(score, "kernels", None)
        self.kernels: KernelTable = KernelTable(process) if shared is None else shared

    def __call__(self, *args: Any) -> torch.Tensor | tuple[torch.Tensor, ...]:
        *blocks, tau = args
        t_ = self.process.T - float(tau)
        if self.direct:
            out = self._network_eps(blocks, t_)
        else:
            s = self.score(*blocks, tau)
            s = list(s) if isinstance(s, tuple | list) else [s]
            out = eps_from_score(self.process, s, t_, kernels=self.kernels)
        return out[0] if len(out) == 1 else tuple(out)

    def _network_eps(self, blocks: Sequence[torch.Tensor], t_: float) -> list[torch.Tensor]:
        return self.score.network(blocks, t_)


class DiffusionClock(ExponentialClock):
    r"""The exponential clock of a one-block :func:`epsilon_sde`:
    :math:`\rho(\tau) = \sigma_t/\alpha_t` and :math:`k(\tau) = (1+\lambda^2)\alpha_t` at the
    diffusion time :math:`t = T - \tau`."""

    def __init__(self, process: ForwardProcess, lam: float = 0.0) -> None:
        if len(process.blocks) != 1:
            raise ValueError(
                f"the exponential clock rho = sigma/alpha needs a one-block process; "
                f"{process.name} has blocks {', '.join(process.block_names)}"
            )
        if not (lam >= 0 and math.isfinite(lam)):
            raise ValueError(f"lambda must be finite and >= 0, got {lam}")
        self.process = process
        self.lam = float(lam)
        self.name = "rho = sigma_t / alpha_t"

    def _t(self, tau: np.ndarray, params: Mapping[Parameter, Any]) -> np.ndarray:
        return self.process.T - np.asarray(tau, np.float64)

    def rho(self, times: np.ndarray, params: Mapping[Parameter, Any]) -> np.ndarray:
        return np.asarray(self.process.noise_level(self._t(times, params)), np.float64)

    def weight(self, times: np.ndarray, params: Mapping[Parameter, Any]) -> np.ndarray:
        a, _ = self.process.data_kernel(self._t(times, params))
        return (1.0 + self.lam**2) * a[..., 0]

    def time_of(
        self,
        rho: np.ndarray,
        lo: np.ndarray,
        hi: np.ndarray,
        params: Mapping[Parameter, Any],
    ) -> np.ndarray:
        """Reverse times with ``noise_level(T - tau) = rho`` (bisection in the diffusion time,
        where the noise level increases)."""
        from splitsde.diffusion.grids import _invert_noise_level

        T = self.process.T
        rho = np.asarray(rho, np.float64)
        t_lo = np.broadcast_to(T - np.asarray(hi, np.float64), rho.shape).min(initial=np.inf)
        t_hi = np.broadcast_to(T - np.asarray(lo, np.float64), rho.shape).max(initial=-np.inf)
        return T - _invert_noise_level(self.process, rho, float(t_lo), float(t_hi))

    def __repr__(self) -> str:
        return f"DiffusionClock({self.process.name}, lambda = {self.lam:g})"
