r"""Score parametrisations and the wrapper that turns a network into the score field.

A network trained on :math:`p(z_t \mid x_0) = N(a_t \otimes x_0, S_t \otimes I)` predicts one
of (per block, coefficients acting elementwise):

* ``"score"``: :math:`s_\theta(z, t) \approx \nabla_z \log p_t(z)` directly;
* ``"eps"``: the noise :math:`\varepsilon` of :math:`z_t = a_t x_0 + L_t\varepsilon`, with
  :math:`L_t` the lower Cholesky factor of :math:`S_t`; then :math:`s = -L_t^{-\top}\varepsilon`
  (DDPM, Ho et al. 2020; CLD and PSLD use the same block form);
* ``"data"``: the denoised data :math:`\hat x_0 = E[x_0 \mid z_t]`; then by Tweedie's formula
  :math:`s = -S_t^{-1}(z - a_t \hat x_0)`.

:class:`ScoreModel` wraps a ``torch.nn.Module`` as the callable of the reverse SDE's score
field ``s``: it receives the blocks and the loop's reverse time :math:`\tau`, converts to the
diffusion time :math:`t = T - \tau` (and to whatever the network expects), feeds the network
and converts its output to the score. The conversion coefficients are float64 kernel terms
looked up in the plan's :class:`~splitsde.diffusion.kernels.KernelTable` (computed once per
grid when the plan is built, see :func:`~splitsde.diffusion.planning.plan`), or in the
process's memo when the model is called outside a plan.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch

if TYPE_CHECKING:
    from splitsde.diffusion.kernels import KernelTable
    from splitsde.diffusion.processes import ForwardProcess, KernelTerms

__all__ = [
    "PARAMETRISATIONS",
    "ScoreModel",
    "bind_kernels",
    "combine",
    "eps_from_score",
    "score_from_data",
    "score_from_eps",
]

PARAMETRISATIONS = ("score", "eps", "data")
Parametrisation = Literal["score", "eps", "data"]
#: Where conversions find the kernel terms at a time: a plan's table or the process's memo.
Kernels = Callable[[float], "KernelTerms"]


def combine(
    C: np.ndarray, tensors: Sequence[torch.Tensor], scale: float = 1.0
) -> list[torch.Tensor]:
    r"""Blockwise :math:`y_b = \sum_c (\text{scale}\,C_{bc})\,x_c` with a small float64 matrix
    ``C`` (zero entries skipped; ``scale = -1`` negates exactly)."""
    out = []
    for i, row in enumerate(C.tolist()):
        acc = None
        for c, x in zip(row, tensors):
            if c == 0.0:
                continue
            c *= scale
            acc = x * c if acc is None else acc.add_(x, alpha=c)  # acc is a fresh tensor
        out.append(acc if acc is not None else torch.zeros_like(tensors[i]))
    return out


def score_from_eps(
    process: ForwardProcess,
    eps: Sequence[torch.Tensor],
    t: float,
    *,
    kernels: Kernels | None = None,
) -> list[torch.Tensor]:
    r""":math:`s = -L_t^{-\top}\varepsilon`, blockwise (kernel terms from ``kernels``, default
    the process's memo)."""
    k = (process.terms if kernels is None else kernels)(t)
    return combine(k.L_inv_T, eps, -1.0)


def eps_from_score(
    process: ForwardProcess,
    score: Sequence[torch.Tensor],
    t: float,
    *,
    kernels: Kernels | None = None,
) -> list[torch.Tensor]:
    r""":math:`\varepsilon = -L_t^\top s` (the inverse of :func:`score_from_eps`)."""
    k = (process.terms if kernels is None else kernels)(t)
    return combine(k.L.T, score, -1.0)


def score_from_data(
    process: ForwardProcess,
    z: Sequence[torch.Tensor],
    x0: torch.Tensor,
    t: float,
    *,
    kernels: Kernels | None = None,
) -> list[torch.Tensor]:
    r""":math:`s = -S_t^{-1}(z - a_t\,\hat x_0)`, blockwise (Tweedie's formula)."""
    k = (process.terms if kernels is None else kernels)(t)
    resid = [zb.sub(x0, alpha=float(k.a[b])) for b, zb in enumerate(z)]
    return combine(k.S_inv, resid, -1.0)


def bind_kernels(score: Any) -> Any:
    """The score callable a plan binds: a :class:`ScoreModel` becomes a copy with its own
    empty :class:`~splitsde.diffusion.kernels.KernelTable` (the plan fills it for its grid);
    any other callable is returned as it is."""
    if isinstance(score, ScoreModel):
        from splitsde.diffusion.kernels import KernelTable

        return score.with_kernels(KernelTable(score.process))
    return score


class ScoreModel:
    r"""A ``torch.nn.Module`` (or any callable) as the score field of a reverse SDE.

    Parameters
    ----------
    module:
        Called as ``module(z, time)``: ``z`` the blocks concatenated along ``concat_dim`` (or,
        with ``concat_dim=None``, the blocks as separate positional arguments), ``time`` a
        tensor of shape ``(batch,)`` made by ``time_input``.
    process:
        The forward process the network was trained on.
    parametrisation:
        ``"score"``, ``"eps"`` or ``"data"`` (see the module docstring).
    time_input:
        What the network receives as time: ``"t"`` (diffusion time, the default), ``"noise_level"``
        (:meth:`~splitsde.diffusion.processes.ForwardProcess.noise_level`, e.g. EDM's sigma), or
        a callable ``t -> float``.
    concat_dim:
        Dimension along which multi-block states are concatenated for the network (and its
        output split); ``1`` is the channel dimension of the PSLD/CLD reference code.
    dtype:
        The network's input dtype (default: the dtype of its first parameter, else the
        state's); outputs are cast back to the state dtype.

    Notes
    -----
    The callable checks the network's output shape on every call (a clear
    :class:`ValueError` names the expected shape); non-finite outputs are caught by the
    integrator's field checks.

    :attr:`kernels` is where the conversions find the kernel terms at a time: ``None`` (the
    process's memo) for a model called on its own; a plan uses a copy bound to its own
    :class:`~splitsde.diffusion.kernels.KernelTable` (:meth:`with_kernels`).
    """

    kernels: KernelTable | None = None

    def __init__(
        self,
        module: Callable[..., Any],
        process: ForwardProcess,
        parametrisation: Parametrisation = "eps",
        *,
        time_input: str | Callable[[float], float] = "t",
        concat_dim: int | None = 1,
        dtype: torch.dtype | None = None,
    ) -> None:
        if not callable(module):
            raise TypeError("the score model must be callable (a torch.nn.Module)")
        if parametrisation not in PARAMETRISATIONS:
            raise ValueError(
                f"unknown parametrisation {parametrisation!r}; choose one of {PARAMETRISATIONS}"
            )
        if isinstance(time_input, str) and time_input not in ("t", "noise_level"):
            raise ValueError("time_input must be 't', 'noise_level' or a callable")
        self.module = module
        self.process = process
        self.parametrisation = parametrisation
        self.time_input = time_input
        self.concat_dim = concat_dim
        if dtype is None and isinstance(module, torch.nn.Module):
            first = next(iter(module.parameters()), None)
            dtype = first.dtype if first is not None else None
        self.dtype = dtype

    def with_kernels(self, kernels: KernelTable) -> ScoreModel:
        """A copy (same network) whose conversions look the kernel terms up in ``kernels``."""
        out = copy.copy(self)
        out.kernels = kernels
        return out

    def network_time(self, t: float) -> float:
        """The time value the network receives at diffusion time ``t``."""
        if self.time_input == "t":
            return t
        if self.time_input == "noise_level":
            return float(self.process.noise_level(t))
        return float(self.time_input(t))

    def __call__(self, *args: Any) -> torch.Tensor | tuple[torch.Tensor, ...]:
        *blocks, tau = args
        t = self.process.T - float(tau)
        out = self.at(blocks, t)
        return out[0] if len(out) == 1 else tuple(out)

    def at(self, blocks: Sequence[torch.Tensor], t: float) -> list[torch.Tensor]:
        """The score per block at diffusion time ``t``."""
        outs = self.network(blocks, t)
        if self.parametrisation == "score":
            return outs
        if self.parametrisation == "eps":
            return score_from_eps(self.process, outs, t, kernels=self.kernels)
        return score_from_data(self.process, blocks, outs[0], t, kernels=self.kernels)

    def network(self, blocks: Sequence[torch.Tensor], t: float) -> list[torch.Tensor]:
        """The network's raw prediction per block (or ``[x0]``) at diffusion time ``t``, in
        the state's dtype."""
        like = blocks[0]
        dtype = self.dtype or like.dtype
        ins = [b if b.dtype == dtype else b.to(dtype) for b in blocks]
        time = torch.full((like.shape[0],), self.network_time(t), dtype=dtype, device=like.device)
        if len(blocks) > 1 and self.concat_dim is not None:
            raw = self.module(torch.cat(ins, dim=self.concat_dim), time)
        else:
            raw = self.module(*ins, time)
        outs = self._split(raw, blocks)
        return [o if o.dtype == like.dtype else o.to(like.dtype) for o in outs]

    def _split(self, raw: Any, blocks: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        name = type(self.module).__name__
        n_out = 1 if self.parametrisation == "data" else len(blocks)
        if isinstance(raw, tuple | list):
            outs = list(raw)
        elif isinstance(raw, torch.Tensor):
            if n_out > 1 and self.concat_dim is not None:
                widths = [b.shape[self.concat_dim] for b in blocks]
                if raw.ndim != blocks[0].ndim or raw.shape[self.concat_dim] != sum(widths):
                    want = list(blocks[0].shape)
                    want[self.concat_dim] = sum(widths)
                    raise ValueError(
                        f"score model {name} returned shape {tuple(raw.shape)}, expected "
                        f"{tuple(want)} (blocks {', '.join(self.process.block_names)} "
                        f"concatenated along dim {self.concat_dim})"
                    )
                outs = list(torch.split(raw, widths, dim=self.concat_dim))
            else:
                outs = [raw]
        else:
            raise ValueError(f"score model {name} returned {type(raw).__name__}, not a tensor")
        if len(outs) != n_out:
            raise ValueError(f"score model {name} returned {len(outs)} outputs, expected {n_out}")
        for i, o in enumerate(outs):
            want = blocks[i].shape
            if not isinstance(o, torch.Tensor) or o.shape != want:
                got = tuple(o.shape) if isinstance(o, torch.Tensor) else type(o).__name__
                what = "x0" if self.parametrisation == "data" else self.process.block_names[i]
                raise ValueError(
                    f"score model {name} returned {got} for {what}, expected shape {tuple(want)}"
                )
        return outs

    def __repr__(self) -> str:
        return (
            f"ScoreModel({type(self.module).__name__}, {self.process.name}, {self.parametrisation})"
        )
