r"""Forward diffusion processes as symbolic linear SDEs.

Every forward process is a linear SDE on named blocks (``x``; or ``x`` and the auxiliary
momentum ``m``),

.. math:: dz = F(t)\,z\,dt + G(t)\,dW, \qquad G = \operatorname{diag}(g_b(t)),

declared once as an :class:`~splitsde.symbolic.sde.SDE` with a single flow ``F``. The core
derives its exact solver (a closed-form clock for :math:`\beta(t)`, a matrix exponential and
Van Loan covariance for coupled blocks), and the perturbation kernel

.. math:: p(z_t \mid z_0) = N\big(\Phi(0, t)\,z_0,\; \Sigma_t\big), \qquad \Sigma_t = L L^\top,

is read off that solver's update (:class:`~splitsde.diffusion.kernels.AffineUpdate`) in float64:
there is no second, hand-derived kernel formula. The coefficients act elementwise on the
blocks, so :math:`\Phi` and :math:`\Sigma_t` are small ``(n_blocks, n_blocks)`` matrices.

Processes
---------
* **VP** (Song et al., ICLR 2021): :math:`dx = -\tfrac12\beta(t)x\,dt + \sqrt{\beta(t)}\,dW`
  with the linear schedule :math:`\beta(t) = \beta_{\min} + t(\beta_{\max} - \beta_{\min})` or the
  cosine schedule :math:`\beta(t) = \tfrac{\pi}{1+s}\tan\big(\tfrac{\pi}{2}\tfrac{t+s}{1+s}\big)`
  (Nichol & Dhariwal, ICML 2021; :math:`\bar\alpha_t = \cos^2(\cdot)/\cos^2(\cdot)|_{t=0}`).
* **VE** (Song et al. 2021): :math:`dx = \sqrt{2\rho}\,\sigma_{\min} e^{\rho t}\,dW`, the
  geometric schedule :math:`\sigma(t) = \sigma_{\min}(\sigma_{\max}/\sigma_{\min})^t` with
  :math:`\rho = \ln(\sigma_{\max}/\sigma_{\min})`; the kernel variance is
  :math:`\sigma(t)^2 - \sigma_{\min}^2`.
* **PSLD** (Pandey & Mandt, 2023), on :math:`z = (x, m)`:

  .. math::
      dx = \tfrac{\beta}{2}(M^{-1} m - \Gamma x)\,dt + \sqrt{\Gamma\beta}\,dW_x, \qquad
      dm = \tfrac{\beta}{2}(-x - \nu m)\,dt + \sqrt{M\nu\beta}\,dW_m,

  stationary law :math:`N(0, I) \otimes N(0, M I)`, initial momentum
  :math:`m_0 \sim N(0, \kappa M I)`. **CLD** (Dockhorn, Vahdat & Kreis, ICLR 2022) is
  :math:`\Gamma = 0`, :math:`\nu = 4`, :math:`M^{-1} = 4`, :math:`\beta = 8`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from functools import cached_property
from typing import Any

import numpy as np
import sympy
import torch

from splitsde.diffusion.kernels import AffineUpdate, KernelTerms, kernel_terms
from splitsde.diffusion.reverse import ReverseSDE
from splitsde.symbolic.flow import Flow
from splitsde.symbolic.parse import as_expression, refuse_text
from splitsde.symbolic.sde import SDE
from splitsde.symbolic.symbols import Block, Parameter, t

__all__ = [
    "PROCESSES",
    "ForwardProcess",
    "KernelTerms",
    "cld",
    "process",
    "psld",
    "ve",
    "vp",
    "vp_cosine",
]


class ForwardProcess:
    r"""A linear forward SDE :math:`dz = F(t) z\,dt + G(t)\,dW` on named blocks.

    Parameters
    ----------
    name:
        Label (``"psld-cifar10"``).
    blocks:
        State blocks; the first is the data block ``x``, the others are auxiliary.
    drift:
        The ``(n, n)`` matrix :math:`F(t)` in ``splitsde.t`` and parameters.
    diffusion:
        :math:`g_b(t)` per block (independent Wiener process per block).
    values:
        Parameter values by name. A parameter whose value is exactly zero is substituted
        symbolically, so its terms (and noises) disappear from every derived flow.
    T:
        Horizon of the forward process (the prior lives at ``T``).
    eps:
        Default smallest diffusion time of sampling grids.
    initial_variance:
        Variance of each block at ``t = 0`` besides the data (``(0, kappa M)`` for PSLD: the
        momentum is drawn, the data block is the data).
    stationary_variance:
        The variance of each block under the stationary law (numbers or expressions in the
        parameters), when there is one: the prior and the reference of the SSCS split;
        ``None`` otherwise (VE).
    """

    def __init__(
        self,
        name: str,
        blocks: Sequence[Block],
        drift: Any,
        diffusion: Sequence[Any],
        values: Mapping[str, float],
        *,
        T: float = 1.0,
        eps: float = 1e-3,
        initial_variance: Sequence[float] | None = None,
        stationary_variance: Sequence[float] | None = None,
        description: str = "",
        reference: str = "",
    ) -> None:
        self.name = name
        self.blocks: tuple[Block, ...] = tuple(blocks)
        n = len(self.blocks)
        refuse_text(drift, f"process {name}: drift")
        F = sympy.Matrix(drift)
        if F.shape != (n, n):
            raise ValueError(f"drift matrix has shape {F.shape}, expected {(n, n)}")
        refuse_text(diffusion, f"process {name}: diffusion")
        if len(diffusion) != n:
            raise ValueError(f"give one diffusion coefficient per block ({n})")
        diffusion = [as_expression(g, f"process {name}: diffusion") for g in diffusion]
        syms = {
            s
            for e in (*F, *diffusion)
            for s in e.free_symbols
            if isinstance(s, Parameter)
        }
        by_name = {p.name: p for p in syms}
        unknown = set(values) - set(by_name)
        if unknown:
            raise ValueError(f"unknown parameter(s) {sorted(unknown)} for process {name}")
        missing = set(by_name) - set(values)
        if missing:
            raise ValueError(f"missing value(s) for parameter(s) {sorted(missing)}")
        for k, v in values.items():
            if not math.isfinite(float(v)):
                raise ValueError(f"parameter {k} = {v} is not finite")
        zero = {by_name[k]: 0 for k, v in values.items() if float(v) == 0.0}
        self.drift = F.xreplace(zero)
        self.diffusion = tuple(g.xreplace(zero) for g in diffusion)
        self.params: dict[Parameter, float] = {
            by_name[k]: float(v) for k, v in values.items() if float(v) != 0.0
        }
        if not (T > 0 and math.isfinite(T)):
            raise ValueError(f"T must be positive and finite, got {T}")
        if not 0 < eps < T:
            raise ValueError(f"eps must lie in (0, T), got {eps}")
        self.T = float(T)
        self.eps = float(eps)
        self.initial_variance = tuple(float(v) for v in (initial_variance or [0.0] * n))
        if len(self.initial_variance) != n or self.initial_variance[0] != 0.0:
            raise ValueError("initial_variance: one value per block, 0 for the data block")
        if any(v < 0 for v in self.initial_variance):
            raise ValueError("initial variances must be non-negative")
        self.stationary_expressions: tuple[sympy.Expr, ...] | None = None
        if stationary_variance is not None:
            refuse_text(stationary_variance, f"process {name}: stationary_variance")
            exprs = tuple(
                as_expression(v, f"process {name}: stationary_variance").xreplace(zero)
                for v in stationary_variance
            )
            if len(exprs) != n:
                raise ValueError("stationary_variance: one value per block")
            self.stationary_expressions = exprs
        self.description = description
        self.reference = reference

    # -- structure --------------------------------------------------------------------------------
    @property
    def data_block(self) -> Block:
        return self.blocks[0]

    @property
    def block_names(self) -> tuple[str, ...]:
        return tuple(b.name for b in self.blocks)

    @property
    def stationary_variance(self) -> tuple[float, ...] | None:
        """Per-block variance of the stationary law, if the process has one."""
        if self.stationary_expressions is None:
            return None
        return tuple(float(e.xreplace(self.params)) for e in self.stationary_expressions)

    @property
    def values(self) -> dict[str, float]:
        """Parameter values by name (zeros substituted symbolically are left out)."""
        return {p.name: v for p, v in self.params.items()}

    @cached_property
    def sde(self) -> SDE:
        """The forward SDE with one flow ``F`` (solved exactly by the derived solver)."""
        z = sympy.Matrix(self.blocks)
        fz = self.drift * z
        flow = Flow(
            {b: fz[i] for i, b in enumerate(self.blocks)},
            {b: g for b, g in zip(self.blocks, self.diffusion)},
            description=f"forward {self.name}",
        )
        return SDE(self.blocks, {"F": flow}, name=f"forward {self.name}")

    @cached_property
    def _affine(self) -> AffineUpdate:
        solver = self.sde.flows["F"].solver
        if not solver.exact:
            raise ValueError(
                f"the forward SDE of {self.name} has no exact solver ({solver.reason}); "
                "perturbation kernels need a linear flow with additive noise"
            )
        return AffineUpdate(solver.update, self.blocks, self.params)

    # -- kernels ----------------------------------------------------------------------------------
    def transition(self, t0: Any, t1: Any) -> tuple[np.ndarray, np.ndarray]:
        r"""``(Phi, Sigma)``, float64: :math:`z_{t_1} | z_{t_0} \sim N(\Phi z_{t_0}, \Sigma)`."""
        t0 = np.asarray(t0, np.float64)
        t1 = np.asarray(t1, np.float64)
        if np.any(t1 < t0):
            raise ValueError("transition needs t1 >= t0")
        phi, chol = self._affine(t0, t1 - t0)
        return phi, chol @ np.swapaxes(chol, -1, -2)

    def kernel(self, t: Any) -> tuple[np.ndarray, np.ndarray]:
        r"""``(Phi_t, Sigma_t)`` of :math:`p(z_t \mid z_0)` for a deterministic :math:`z_0`."""
        t = np.asarray(t, np.float64)
        return self.transition(np.zeros_like(t), t)

    def data_kernel(self, t: Any) -> tuple[np.ndarray, np.ndarray]:
        r"""``(a_t, S_t)`` of :math:`p(z_t \mid x_0) = N(a_t \otimes x_0, S_t \otimes I)`.

        :math:`a_t` is the first column of :math:`\Phi_t`; :math:`S_t` adds the propagated
        initial variance of the auxiliary blocks,
        :math:`S_t = \Sigma_t + \Phi_t\,\mathrm{diag}(v_0)\,\Phi_t^\top`.
        """
        phi, sigma = self.kernel(t)
        v0 = np.diag(self.initial_variance)
        S = sigma + phi @ v0 @ np.swapaxes(phi, -1, -2)
        return phi[..., :, 0], 0.5 * (S + np.swapaxes(S, -1, -2))

    def cholesky(self, t: Any) -> np.ndarray:
        r"""Lower Cholesky factor :math:`L_t` of :math:`S_t` (the ε-parametrisation's factor)."""
        _, S = self.data_kernel(t)
        try:
            return np.linalg.cholesky(S)
        except np.linalg.LinAlgError:
            raise ValueError(
                f"the kernel covariance of {self.name} is singular at t = {t}; "
                "use a positive smallest time eps"
            ) from None

    def terms(self, t: float) -> KernelTerms:
        """:class:`KernelTerms` at diffusion time ``t`` (memoised; a plan prepares all the
        times of its grid at once in a :class:`~splitsde.diffusion.kernels.KernelTable`)."""
        t = float(t)
        cache = self.__dict__.setdefault("_terms_cache", {})
        hit = cache.get(t)
        if hit is not None:
            return hit
        (out,) = kernel_terms(self, [t])
        if len(cache) > 100_000:
            cache.clear()
        cache[t] = out
        return out

    def noise_level(self, t: Any) -> np.ndarray:
        r"""Noise-to-signal ratio of the data block, :math:`\sqrt{S_{t,xx}}/|a_{t,x}|`
        (:math:`\sigma_t/\alpha_t` for VP, :math:`\sigma_t` for VE); grids are built from it."""
        a, S = self.data_kernel(t)
        return np.sqrt(S[..., 0, 0]) / np.abs(a[..., 0])

    def prior_variance(self) -> tuple[float, ...]:
        """Per-block variance of the prior at ``T``: the stationary law when there is one,
        else the kernel variance at ``T`` (data of zero mean and variance neglected)."""
        if self.stationary_variance is not None:
            return self.stationary_variance
        _, S = self.data_kernel(self.T)
        return tuple(float(S[i, i]) for i in range(len(self.blocks)))

    def prior(
        self,
        n: int,
        shape: int | Sequence[int],
        *,
        generator: torch.Generator,
        dtype: torch.dtype = torch.float32,
        device: Any = "cpu",
    ) -> dict[str, torch.Tensor]:
        """``n`` independent draws from the prior, blocks of shape ``(n, *shape)``."""
        shape = (shape,) if isinstance(shape, int) else tuple(shape)
        out = {}
        for b, v in zip(self.blocks, self.prior_variance()):
            z = torch.randn((n, *shape), generator=generator, dtype=dtype, device=device)
            out[b.name] = z * math.sqrt(v)
        return out

    def reverse(self, lam: float | Mapping[str, float] = 1.0) -> ReverseSDE:
        """The reverse-time SDE family with noise scale ``lam`` (see
        :class:`~splitsde.diffusion.reverse.ReverseSDE`)."""
        key = tuple(sorted(lam.items())) if isinstance(lam, Mapping) else float(lam)
        cache = self.__dict__.setdefault("_reverse_cache", {})
        if key not in cache:  # one family (and one score field) per noise scale
            cache[key] = ReverseSDE(self, lam)
        return cache[key]

    def describe(self) -> str:
        lines = [f"{self.name}: {self.description}".rstrip(": ")]
        vals = ", ".join(f"{k} = {v:g}" for k, v in sorted(self.values.items()))
        lines.append(f"  parameters: {vals or 'none'}; T = {self.T:g}, eps = {self.eps:g}")
        lines.extend("  " + line for line in self.sde.describe().splitlines())
        if self.reference:
            lines.append(f"  reference: {self.reference}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"ForwardProcess({self.name})"


# ---------------------------------------------------------------------------------------------
# Constructors and presets
# ---------------------------------------------------------------------------------------------
_SONG = "Song, Sohl-Dickstein, Kingma, Kumar, Ermon & Poole, ICLR 2021 (score SDEs)"


def vp(
    beta_min: float = 0.1, beta_max: float = 20.0, *, T: float = 1.0, eps: float = 1e-3
) -> ForwardProcess:
    r"""Variance-preserving SDE with the linear schedule
    :math:`\beta(t) = \beta_{\min} + t(\beta_{\max} - \beta_{\min})`."""
    if not (beta_min > 0 and beta_max >= beta_min):
        raise ValueError(f"need 0 < beta_min <= beta_max, got {beta_min}, {beta_max}")
    (x,) = (Block("x"),)
    b0, b1 = Parameter("beta_min", positive=True), Parameter("beta_max", positive=True)
    beta = b0 + t * (b1 - b0)
    return ForwardProcess(
        "vp",
        [x],
        [[-beta / 2]],
        [sympy.sqrt(beta)],
        {"beta_min": beta_min, "beta_max": beta_max},
        T=T,
        eps=eps,
        stationary_variance=[1],
        description="variance preserving, linear beta schedule",
        reference=_SONG,
    )


def vp_cosine(s: float = 0.008, *, T: float = 0.9946, eps: float = 1e-3) -> ForwardProcess:
    r"""Variance-preserving SDE with the cosine schedule,
    :math:`\beta(t) = \frac{\pi}{1+s}\tan\!\big(\frac{\pi}{2}\frac{t+s}{1+s}\big)` (it diverges at
    ``t = 1``, hence ``T < 1``)."""
    if not s > 0:
        raise ValueError(f"s must be positive, got {s}")
    if not T < 1:
        raise ValueError("the cosine schedule diverges at t = 1; use T < 1")
    x = Block("x")
    sp_ = Parameter("s", positive=True)
    beta = sympy.pi / (1 + sp_) * sympy.tan(sympy.pi / 2 * (t + sp_) / (1 + sp_))
    return ForwardProcess(
        "vp-cosine",
        [x],
        [[-beta / 2]],
        [sympy.sqrt(beta)],
        {"s": s},
        T=T,
        eps=eps,
        stationary_variance=[1],
        description="variance preserving, cosine schedule",
        reference="Nichol & Dhariwal, ICML 2021 (cosine schedule); " + _SONG,
    )


def ve(
    sigma_min: float = 0.01, sigma_max: float = 50.0, *, T: float = 1.0, eps: float = 1e-5
) -> ForwardProcess:
    r"""Variance-exploding SDE with the geometric schedule
    :math:`\sigma(t) = \sigma_{\min}(\sigma_{\max}/\sigma_{\min})^t`:
    :math:`dx = \sqrt{2\rho}\,\sigma_{\min}e^{\rho t}\,dW`,
    :math:`\rho = \ln(\sigma_{\max}/\sigma_{\min})`."""
    if not 0 < sigma_min < sigma_max:
        raise ValueError(f"need 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
    x = Block("x")
    smin, rho = Parameter("sigma_min", positive=True), Parameter("rho", positive=True)
    g = sympy.sqrt(2 * rho) * smin * sympy.exp(rho * t)
    return ForwardProcess(
        "ve",
        [x],
        [[0]],
        [g],
        {"sigma_min": sigma_min, "rho": math.log(sigma_max / sigma_min)},
        T=T,
        eps=eps,
        description="variance exploding, geometric sigma schedule",
        reference=_SONG,
    )


def psld(
    Gamma: float,
    nu: float,
    *,
    beta: float | tuple[float, float] = 8.0,
    Minv: float = 4.0,
    kappa: float = 0.04,
    T: float = 1.0,
    eps: float = 1e-3,
    name: str = "psld",
) -> ForwardProcess:
    r"""Phase Space Langevin Diffusion on :math:`(x, m)`.

    ``beta`` is a constant or a pair ``(beta_min, beta_max)`` for a linear schedule.
    Critical damping is :math:`(\Gamma - \nu)^2 = 4 M^{-1}` (the reference configurations).
    """
    if Gamma < 0 or nu < 0 or (Gamma == 0 and nu == 0):
        raise ValueError(f"need Gamma, nu >= 0 and not both zero, got {Gamma}, {nu}")
    if not Minv > 0:
        raise ValueError(f"Minv must be positive, got {Minv}")
    if kappa < 0:
        raise ValueError(f"kappa must be non-negative, got {kappa}")
    x, m = Block("x"), Block("m")
    G, n_, Mi = (Parameter(k, nonnegative=True) for k in ("Gamma", "nu", "Minv"))
    values: dict[str, float] = {"Gamma": Gamma, "nu": nu, "Minv": Minv}
    if isinstance(beta, tuple):
        b0, b1 = Parameter("beta_min", positive=True), Parameter("beta_max", positive=True)
        B = b0 + t * (b1 - b0)
        values.update(beta_min=beta[0], beta_max=beta[1])
        if not (beta[0] > 0 and beta[1] >= beta[0]):
            raise ValueError(f"need 0 < beta_min <= beta_max, got {beta}")
    else:
        if not beta > 0:
            raise ValueError(f"beta must be positive, got {beta}")
        B = Parameter("beta", positive=True)
        values["beta"] = beta
    F = [[-B * G / 2, B * Mi / 2], [-B / 2, -B * n_ / 2]]
    g = [sympy.sqrt(G * B), sympy.sqrt(n_ * B / Mi)]
    return ForwardProcess(
        name,
        [x, m],
        F,
        g,
        values,
        T=T,
        eps=eps,
        initial_variance=[0.0, kappa / Minv],
        stationary_variance=[1, 1 / Mi],
        description=f"phase space Langevin diffusion (Gamma = {Gamma:g}, nu = {nu:g}, "
        f"M^-1 = {Minv:g}, kappa = {kappa:g})",
        reference="Pandey & Mandt, A Complete Recipe for Diffusion Generative Models, ICCV 2023",
    )


def cld(
    *, beta: float = 8.0, kappa: float = 0.04, T: float = 1.0, eps: float = 1e-3
) -> ForwardProcess:
    r"""Critically damped Langevin diffusion: PSLD with :math:`\Gamma = 0`, :math:`\nu = 4`,
    :math:`M^{-1} = 4` (Dockhorn, Vahdat & Kreis, ICLR 2022, with their :math:`\beta = 4`)."""
    p = psld(0.0, 4.0, beta=beta, Minv=4.0, kappa=kappa, T=T, eps=eps, name="cld")
    p.description = "critically damped Langevin diffusion (PSLD with Gamma = 0, nu = 4)"
    p.reference = "Dockhorn, Vahdat & Kreis, Score-Based Generative Modeling with CLD, ICLR 2022"
    return p


#: Named processes: the PSLD reference configurations and the standard baselines.
PROCESSES: dict[str, Callable[[], ForwardProcess]] = {
    "vp": vp,
    "vp-cosine": vp_cosine,
    "ve": ve,
    "cld": cld,
    "psld-cifar10": lambda: psld(0.01, 4.01, name="psld-cifar10"),
    "psld-cifar10-sampling": lambda: psld(0.02, 4.02, name="psld-cifar10-sampling"),
    "psld-celeba64": lambda: psld(0.005, 4.005, name="psld-celeba64"),
}


def process(name: str | ForwardProcess) -> ForwardProcess:
    """A named process (``"psld-cifar10"``, ``"vp"``, ...) or the given one."""
    if isinstance(name, ForwardProcess):
        return name
    key = name.strip().lower()
    if key not in PROCESSES:
        raise ValueError(f"unknown process {name!r}; known: {', '.join(PROCESSES)}")
    return PROCESSES[key]()
