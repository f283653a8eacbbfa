r"""Analytic data distributions with exact marginals and exact scores under any process.

Under a linear forward process, :math:`p(z_t \mid x_0) = N(a_t \otimes x_0, S_t \otimes I_d)`
(:meth:`~splitsde.diffusion.processes.ForwardProcess.data_kernel`). Writing the state as the
block-major vector :math:`z = (x, m) \in \mathbb R^{n_b d}`:

* **Gaussian data** :math:`N(\mu, \Sigma)` has the Gaussian marginal

  .. math:: p_t = N\big(a_t \otimes \mu,\; (a_t a_t^\top) \otimes \Sigma + S_t \otimes I_d\big),

  so its exact score is affine in :math:`z`;
* a **Gaussian mixture** :math:`\sum_k w_k N(\mu_k, \Sigma_k)` has the mixture of the
  component marginals, and its exact score is the responsibility-weighted average of the
  component scores,
  :math:`s(z) = -\sum_k r_k(z)\,C_k^{-1}(z - \mu_k(t))`,
  :math:`r_k \propto w_k N(z; \mu_k(t), C_k)` -- a nonlinear field with a known answer.

Everything is computed in float64 and cached per time; results are cast to the state dtype.
Reference: the oracle construction of ``algorithms.md`` §6.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:
    from splitsde.diffusion.processes import ForwardProcess

__all__ = ["ExactScore", "GaussianData", "GaussianMixture"]


def _as64(x: Any) -> torch.Tensor:
    return (
        torch.as_tensor(
            np.asarray(x, dtype=np.float64) if not isinstance(x, torch.Tensor) else x,
            dtype=torch.float64,
        )
        .detach()
        .cpu()
    )


class GaussianMixture:
    r"""A Gaussian mixture :math:`\sum_k w_k N(\mu_k, \Sigma_k)` in :math:`\mathbb R^d`.

    Parameters
    ----------
    weights:
        ``(K,)`` positive, normalised here.
    means:
        ``(K, d)``.
    covs:
        ``(K, d, d)`` symmetric positive definite, or ``(K,)`` / a number for isotropic
        components :math:`\sigma_k^2 I`.
    """

    def __init__(self, weights: Any, means: Any, covs: Any, name: str = "") -> None:
        w = _as64(weights).reshape(-1)
        mu = _as64(means)
        if mu.ndim != 2:
            raise ValueError(f"means must have shape (K, d), got {tuple(mu.shape)}")
        K, d = mu.shape
        if w.shape != (K,):
            raise ValueError(f"weights must have shape ({K},), got {tuple(w.shape)}")
        if not torch.isfinite(w).all() or (w <= 0).any():
            raise ValueError("mixture weights must be positive and finite")
        c = _as64(covs)
        if c.ndim == 0:
            c = c.expand(K)
        if c.ndim == 1:
            if c.shape != (K,):
                raise ValueError(f"isotropic variances must have shape ({K},)")
            c = c[:, None, None] * torch.eye(d, dtype=torch.float64)
        if c.shape != (K, d, d):
            raise ValueError(f"covs must have shape ({K}, {d}, {d}), got {tuple(c.shape)}")
        if not (torch.isfinite(mu).all() and torch.isfinite(c).all()):
            raise ValueError("means and covariances must be finite")
        if not torch.allclose(c, c.transpose(-1, -2), rtol=1e-10, atol=1e-12):
            raise ValueError("covariances must be symmetric")
        try:
            torch.linalg.cholesky(c)
        except RuntimeError:
            raise ValueError("covariances must be positive definite") from None
        self.weights = w / w.sum()
        self.means = mu
        self.covs = c
        self.name = name or f"{K}-component Gaussian mixture in {d}-D"
        # Keyed by the process object itself (weakly), never by id(): a collected process's id
        # is reused by the next one, which may have other blocks (a stale kernel of the wrong
        # size was served that way).
        self._cache: weakref.WeakKeyDictionary[Any, dict[float, dict[str, torch.Tensor]]] = (
            weakref.WeakKeyDictionary()
        )

    # -- basic ------------------------------------------------------------------------------------
    @property
    def components(self) -> int:
        return self.means.shape[0]

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    @property
    def mean(self) -> torch.Tensor:
        return (self.weights[:, None] * self.means).sum(0)

    @property
    def cov(self) -> torch.Tensor:
        mu = self.mean
        dev = self.means - mu
        return (self.weights[:, None, None] * (self.covs + dev[:, :, None] * dev[:, None, :])).sum(
            0
        )

    def sample(
        self,
        n: int,
        *,
        generator: torch.Generator,
        dtype: torch.dtype = torch.float64,
        return_labels: bool = False,
    ) -> Any:
        """``n`` draws ``(n, d)`` (and the component of each, with ``return_labels``)."""
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        L = torch.linalg.cholesky(self.covs)
        xi = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        x = self.means[k] + (L[k] @ xi[:, :, None])[:, :, 0]
        x = x.to(dtype)
        return (x, k) if return_labels else x

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Log density of the data, ``(n,)``."""
        return self._log_mix(x.to(torch.float64), self.means, self.covs)

    def responsibilities(self, x: torch.Tensor) -> torch.Tensor:
        """Posterior component probabilities of data points, ``(n, K)``."""
        x = x.to(torch.float64)
        if "_data_chol" not in self.__dict__:
            self._data_chol = torch.linalg.cholesky(self.covs)
        logs = self._log_components(x, self.means, self.covs, self._data_chol)
        return torch.softmax(logs + self.weights.log(), dim=-1)

    # -- marginals under a process ----------------------------------------------------------------
    def _marginal(self, process: ForwardProcess, t: float) -> dict[str, torch.Tensor]:
        per_process = self._cache.setdefault(process, {})
        hit = per_process.get(float(t))
        if hit is not None:
            return hit
        k = process.terms(t) if t > 0 else None
        if k is None:
            a, S = process.data_kernel(0.0)
        else:
            a, S = k.a, k.S
        a = torch.as_tensor(a, dtype=torch.float64)
        S = torch.as_tensor(S, dtype=torch.float64)
        d = self.dim
        eye = torch.eye(d, dtype=torch.float64)
        mu = torch.einsum("b,kd->kbd", a, self.means).reshape(self.components, -1)
        C = torch.stack([torch.kron(torch.outer(a, a), ck) for ck in self.covs]) + torch.kron(
            S, eye
        )
        out = {"mean": mu, "cov": C}
        try:
            L = torch.linalg.cholesky(C)
        except RuntimeError:
            L = None  # singular (t = 0 with auxiliary blocks): no density
        out["chol"] = L
        if L is not None:
            eye_D = torch.eye(C.shape[-1], dtype=torch.float64).expand_as(C)
            L_inv = torch.linalg.solve_triangular(L, eye_D, upper=False)
            out["prec"] = L_inv.transpose(-1, -2) @ L_inv
            out["logdet"] = 2 * torch.log(torch.diagonal(L, dim1=-2, dim2=-1)).sum(-1)
        # bounded memory (about 200 MB of float64 matrices per process; a plan reuses its times)
        if len(per_process) >= max(256, 200_000_000 // (24 * C.shape[-1] ** 2 * len(C))):
            per_process.clear()
        per_process[float(t)] = out
        return out

    def marginal(self, process: ForwardProcess, t: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Per component: means ``(K, n_b d)`` and covariances ``(K, n_b d, n_b d)`` of the
        marginal of :math:`z_t` (block-major flattening ``(x, m)``)."""
        m = self._marginal(process, t)
        return m["mean"], m["cov"]

    def sample_marginal(
        self,
        process: ForwardProcess,
        t: float,
        n: int,
        *,
        generator: torch.Generator,
        dtype: torch.dtype = torch.float64,
    ) -> dict[str, torch.Tensor]:
        """``n`` exact draws of :math:`z_t` as a state (block name -> ``(n, d)``)."""
        m = self._marginal(process, t)
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        D = m["mean"].shape[1]
        xi = torch.randn(n, D, generator=generator, dtype=torch.float64)
        L = m["chol"] if m["chol"] is not None else _psd_factor(m["cov"])
        z = m["mean"][k] + (L[k] @ xi[:, :, None])[:, :, 0]
        return _unflatten(z.to(dtype), process.block_names, self.dim)

    def log_marginal(
        self, process: ForwardProcess, t: float, z: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        """Log density of :math:`z_t` at a state, ``(n,)`` (differentiable)."""
        m = self._marginal(process, t)
        flat = _flatten(z, process.block_names).to(torch.float64)
        return self._log_mix(flat, m["mean"], m["cov"], m["chol"])

    def score_at(
        self, process: ForwardProcess, t: float, z: Sequence[torch.Tensor]
    ) -> list[torch.Tensor]:
        """The exact score of :math:`p_t` per block at diffusion time ``t``."""
        m = self._marginal(process, t)
        if m["chol"] is None:
            raise ValueError(f"the marginal at t = {t} is singular; the score needs t > 0")
        like = z[0]
        flat = torch.cat([b.reshape(b.shape[0], -1) for b in z], dim=1).to(torch.float64)
        if self.components == 1:
            s = -(flat - m["mean"][0]) @ m["prec"][0]
        else:
            r = flat[:, None, :] - m["mean"][None]  # (n, K, D)
            prec_r = torch.einsum("nkd,kde->nke", r, m["prec"])
            logs = -0.5 * (r * prec_r).sum(-1) - 0.5 * m["logdet"][None] + self.weights.log()[None]
            resp = torch.softmax(logs, dim=-1)
            s = -torch.einsum("nk,nkd->nd", resp, prec_r)
        return [x.reshape(b.shape).to(like.dtype) for x, b in zip(s.split(self.dim, dim=1), z)]

    def score(self, process: ForwardProcess) -> ExactScore:
        """The exact score as a field callable (reverse-time convention) for ``process``."""
        return ExactScore(self, process)

    # -- helpers ----------------------------------------------------------------------------------
    @staticmethod
    def _log_components(
        x: torch.Tensor, mu: torch.Tensor, C: torch.Tensor, L: torch.Tensor | None = None
    ) -> torch.Tensor:
        if L is None:
            L = torch.linalg.cholesky(C)
        r = x[:, None, :] - mu[None]
        eye = torch.eye(L.shape[-1], dtype=L.dtype).expand_as(L)
        L_inv = torch.linalg.solve_triangular(L, eye, upper=False)
        y = torch.einsum("ked,nkd->nke", L_inv, r)  # L^{-1} r, one small inverse per component
        logdet = 2 * torch.log(torch.diagonal(L, dim1=-2, dim2=-1)).sum(-1)
        D = mu.shape[-1]
        return -0.5 * (y * y).sum(-1) - 0.5 * logdet[None] - 0.5 * D * math.log(2 * math.pi)

    def _log_mix(
        self, x: torch.Tensor, mu: torch.Tensor, C: torch.Tensor, L: torch.Tensor | None = None
    ) -> torch.Tensor:
        logs = self._log_components(x, mu, C, L)
        return torch.logsumexp(logs + self.weights.log()[None], dim=-1)

    # -- constructors -----------------------------------------------------------------------------
    @classmethod
    def ring(cls, components: int = 8, radius: float = 1.5, std: float = 0.1) -> GaussianMixture:
        """Equal-weight isotropic components on a circle in 2-D."""
        ang = torch.arange(components, dtype=torch.float64) * 2 * math.pi / components
        means = radius * torch.stack([torch.cos(ang), torch.sin(ang)], dim=1)
        return cls(
            torch.ones(components),
            means,
            torch.full((components,), std**2),
            name=f"{components} modes on a ring (r = {radius:g}, std = {std:g})",
        )

    @classmethod
    def random(
        cls,
        components: int,
        dim: int,
        *,
        seed: int = 0,
        radius: float = 2.0,
        std: float = 0.3,
        weights: str = "random",
    ) -> GaussianMixture:
        """Components with means at distance ``radius`` from 0 in random directions, random
        weights (``weights="equal"`` for equal ones) and random covariances of scale ``std``."""
        g = torch.Generator().manual_seed(seed)
        dirs = torch.randn(components, dim, generator=g, dtype=torch.float64)
        means = radius * dirs / dirs.norm(dim=1, keepdim=True)
        w = torch.ones(components, dtype=torch.float64)
        if weights == "random":
            w = 0.5 + torch.rand(components, generator=g, dtype=torch.float64)
        A = torch.randn(components, dim, dim, generator=g, dtype=torch.float64) / math.sqrt(dim)
        covs = std**2 * (0.5 * torch.eye(dim, dtype=torch.float64) + A @ A.transpose(-1, -2) / 2)
        return cls(w, means, covs, name=f"{components} random modes in {dim}-D")

    def __repr__(self) -> str:
        return f"GaussianMixture({self.name})"


class GaussianData(GaussianMixture):
    r"""Gaussian data :math:`N(\mu, \Sigma)`: a one-component mixture whose marginal at every
    time is Gaussian (:meth:`law`), so the exact analysis of a sampler applies."""

    def __init__(self, mean: Any, cov: Any, name: str = "") -> None:
        mu = _as64(mean).reshape(1, -1)
        c = _as64(cov)
        if c.ndim == 0:
            c = c * torch.eye(mu.shape[1], dtype=torch.float64)
        super().__init__(torch.ones(1), mu, c[None], name=name or f"Gaussian in {mu.shape[1]}-D")

    def law(self, process: ForwardProcess, t: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean ``(n_b d,)`` and covariance of :math:`z_t` (block-major)."""
        mu, C = self.marginal(process, t)
        return mu[0], C[0]

    @classmethod
    def random(
        cls,
        dim: int,
        *,
        seed: int = 0,
        condition: float = 100.0,
        scale: float = 1.0,
        mean_scale: float = 0.5,
    ) -> GaussianData:  # type: ignore[override]
        """A random covariance with eigenvalues log-spaced over ``condition`` (largest
        ``scale``), random eigenvectors, and a random mean."""
        g = torch.Generator().manual_seed(seed)
        Q, _ = torch.linalg.qr(torch.randn(dim, dim, generator=g, dtype=torch.float64))
        ev = scale * torch.logspace(0, -math.log10(condition), dim, dtype=torch.float64)
        cov = Q @ torch.diag(ev) @ Q.T
        mean = mean_scale * torch.randn(dim, generator=g, dtype=torch.float64)
        return cls(
            mean, 0.5 * (cov + cov.T), name=f"random Gaussian in {dim}-D (cond {condition:g})"
        )


class ExactScore:
    """The exact score of a target under a process, in the field convention: called with the
    blocks and the reverse time :math:`\\tau`, it evaluates the score at :math:`t = T - \\tau`."""

    def __init__(self, target: GaussianMixture, process: ForwardProcess) -> None:
        self.target = target
        self.process = process

    def __call__(self, *args: Any) -> torch.Tensor | tuple[torch.Tensor, ...]:
        *blocks, tau = args
        out = self.at(blocks, self.process.T - float(tau))
        return out[0] if len(out) == 1 else tuple(out)

    def at(self, blocks: Sequence[torch.Tensor], t: float) -> list[torch.Tensor]:
        return self.target.score_at(self.process, t, blocks)

    def __repr__(self) -> str:
        return f"ExactScore({self.target.name}, {self.process.name})"


def _flatten(z: dict[str, torch.Tensor], names: Sequence[str]) -> torch.Tensor:
    return torch.cat([z[n].reshape(z[n].shape[0], -1) for n in names], dim=1)


def _unflatten(flat: torch.Tensor, names: Sequence[str], d: int) -> dict[str, torch.Tensor]:
    return {n: flat[:, i * d : (i + 1) * d].contiguous() for i, n in enumerate(names)}


def _psd_factor(C: torch.Tensor) -> torch.Tensor:
    """A factor ``F F^T = C`` of a singular PSD matrix (eigen-decomposition)."""
    ev, V = torch.linalg.eigh(C)
    return V * ev.clamp_min(0).sqrt()[..., None, :]
