r"""The Fréchet distance between two feature distributions, each summarised by a Gaussian.

For :math:`N(\mu_1, \Sigma_1)` and :math:`N(\mu_2, \Sigma_2)`,

.. math::
    d^2 = \lVert \mu_1 - \mu_2 \rVert^2
        + \operatorname{tr}\!\big(\Sigma_1 + \Sigma_2 - 2(\Sigma_1\Sigma_2)^{1/2}\big),

the squared 2-Wasserstein distance between the two Gaussians (Fréchet 1957; Dowson & Landau,
J. Multivariate Anal. 1982). Evaluated on the features of a classifier it is the "Fréchet
inception distance" of Heusel et al. (NeurIPS 2017); like that score, :func:`frechet_distance`
returns the *squared* distance. :math:`(\Sigma_1\Sigma_2)^{1/2}` is computed by
:func:`scipy.linalg.sqrtm` in float64.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import scipy.linalg

__all__ = ["feature_statistics", "frechet_distance"]


def feature_statistics(features: Any) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (unbiased) covariance of features ``(n, d)``, in float64."""
    f = _as_array(features, "features")
    if f.ndim != 2:
        raise ValueError(f"features must have shape (n, d), got {f.shape}")
    if f.shape[0] < 2:
        raise ValueError(f"need at least 2 feature vectors for a covariance, got {f.shape[0]}")
    if not np.isfinite(f).all():
        raise ValueError("features contain non-finite values")
    return f.mean(axis=0), np.atleast_2d(np.cov(f, rowvar=False))


def frechet_distance(
    mean1: Any, cov1: Any, mean2: Any, cov2: Any, *, offset: float = 1e-6
) -> float:
    r"""Squared Fréchet distance between :math:`N(\mu_1, \Sigma_1)` and :math:`N(\mu_2,
    \Sigma_2)` (formula in the module docstring).

    When the matrix square root of :math:`\Sigma_1\Sigma_2` is not finite or has a
    non-negligible imaginary part (nearly singular covariances, e.g. more feature dimensions
    than samples), it is recomputed with ``offset`` times the identity added to both
    covariances, the regularisation of the reference FID implementation; a
    :class:`ValueError` is raised if that does not help.
    """
    m1, m2 = _as_array(mean1, "mean1"), _as_array(mean2, "mean2")
    c1, c2 = _as_array(cov1, "cov1"), _as_array(cov2, "cov2")
    if m1.ndim != 1 or m1.shape != m2.shape:
        raise ValueError(f"means must be vectors of equal length, got {m1.shape} and {m2.shape}")
    d = m1.shape[0]
    for name, c in (("cov1", c1), ("cov2", c2)):
        if c.shape != (d, d):
            raise ValueError(f"{name} must have shape {(d, d)}, got {c.shape}")
        if not np.isfinite(c).all():
            raise ValueError(f"{name} contains non-finite values")
        if not np.allclose(c, c.T, rtol=1e-8, atol=1e-12 * max(1.0, float(np.abs(c).max()))):
            raise ValueError(f"{name} is not symmetric")
    if not (np.isfinite(m1).all() and np.isfinite(m2).all()):
        raise ValueError("means contain non-finite values")
    root = _sqrt_product(c1, c2)
    if root is None:
        eye = offset * np.eye(d)
        root = _sqrt_product(c1 + eye, c2 + eye)
        if root is None:
            raise ValueError("the matrix square root of cov1 @ cov2 is not real and finite")
    diff = m1 - m2
    return float(diff @ diff + np.trace(c1) + np.trace(c2) - 2.0 * np.trace(root))


def _sqrt_product(c1: np.ndarray, c2: np.ndarray) -> np.ndarray | None:
    """The principal square root of ``c1 @ c2`` (real part) or ``None`` if it is unusable.

    The product of two symmetric positive semi-definite matrices has real non-negative
    eigenvalues, so its principal root is real up to rounding; an imaginary part above
    rounding level means the covariances are numerically singular."""
    with warnings.catch_warnings():  # singularity is detected below, not warned about
        warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
        root = scipy.linalg.sqrtm(c1 @ c2)
    if not np.isfinite(root).all():
        return None
    if np.iscomplexobj(root):
        scale = max(1.0, float(np.abs(root).max()))
        if float(np.abs(root.imag).max()) > 1e-6 * scale:
            return None
        root = root.real
    return root


def _as_array(x: Any, name: str) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor
        x = x.detach().cpu().numpy()
    try:
        return np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} is not a numeric array") from None
