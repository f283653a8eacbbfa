"""Sampling of the analytic targets (splitsde.diffusion.targets): ``GaussianMixture.sample``
against the weights, component means and covariances and the mixture's ``mean`` / ``cov``;
``sample_marginal`` against ``marginal(process, t)`` on VP and on PSLD (two blocks).

Every comparison is a z-score against the standard error of the sample (fixed seeds): the
frequencies are binomial, a mean's standard error is the sample standard deviation over
sqrt(n), a covariance entry is the mean of products (x_i - mu_i)(x_j - mu_j) about the exact
mean (unbiased), with the standard deviation of those products over sqrt(n). |z| < 4.
"""

from __future__ import annotations

import pytest
import torch

import splitsde.diffusion as dm

Z = 4.0
N = 40_000

MIXTURES = {
    "ring": lambda: dm.GaussianMixture.ring(8),
    "random": lambda: dm.GaussianMixture.random(3, 3, seed=5),
    # narrow modes, separated by many standard deviations at small t
    "ring-narrow": lambda: dm.GaussianMixture.ring(8, std=0.05),
    "random-narrow": lambda: dm.GaussianMixture.random(3, 3, seed=5, std=0.05),
}


def moment_z(x: torch.Tensor, mean: torch.Tensor, cov: torch.Tensor) -> torch.Tensor:
    """z-scores of the sample mean and of every sample covariance entry (about ``mean``)."""
    n = x.shape[0]
    r = x - mean
    z_mean = r.mean(0) / (r.std(0) / n**0.5)
    prod = r[:, :, None] * r[:, None, :]
    z_cov = (prod.mean(0) - cov) / (prod.std(0) / n**0.5)
    return torch.cat([z_mean, z_cov.flatten()])


def mixture_law(weights, means, covs) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and covariance of sum_k w_k N(means_k, covs_k)."""
    m = weights @ means
    dev = means - m
    return m, torch.einsum("k,kij->ij", weights, covs + dev[:, :, None] * dev[:, None, :])


def frequency_z(labels: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    n = labels.numel()
    counts = torch.bincount(labels, minlength=weights.numel()).to(torch.float64)
    return (counts - n * weights) / torch.sqrt(n * weights * (1 - weights))


@pytest.mark.parametrize("which", ["ring", "random"])
def test_mixture_samples_have_the_weights_and_the_component_laws(which):
    mix = MIXTURES[which]()
    x, k = mix.sample(N, generator=torch.Generator().manual_seed(7), return_labels=True)
    assert x.shape == (N, mix.dim) and x.dtype == torch.float64
    z = frequency_z(k, mix.weights)
    assert z.abs().max() < Z, z
    for j in range(mix.components):
        zj = moment_z(x[k == j], mix.means[j], mix.covs[j])
        assert zj.abs().max() < Z, (j, zj)
    # the mixture's own mean and cov, and the same law assembled here from the components
    m, c = mixture_law(mix.weights, mix.means, mix.covs)
    assert torch.allclose(mix.mean, m, rtol=0, atol=1e-14)
    assert torch.allclose(mix.cov, c, rtol=0, atol=1e-14)
    zall = moment_z(x, mix.mean, mix.cov)
    assert zall.abs().max() < Z, zall
    if which == "random":  # the test has power: the counts reject equal weights
        even = torch.full_like(mix.weights, 1.0 / mix.components)
        assert frequency_z(k, even).abs().max() > 10


@pytest.mark.parametrize(
    ("proc_name", "which", "t"),
    [
        ("vp", "ring-narrow", 0.01),
        ("vp", "random", 0.6),
        ("psld-cifar10", "ring-narrow", 0.01),
        ("psld-cifar10", "random-narrow", 0.02),
        ("psld-cifar10", "ring", 0.5),
        ("psld-cifar10", "random", 0.5),
    ],
)
def test_sample_marginal_has_the_marginal_law(proc_name, which, t):
    """The state's blocks flattened block-major against ``marginal(process, t)``: the whole
    mixture always; per component at small t for narrow modes, labelled by the nearest
    component mean of the data block (a sample is mislabelled only if its deviation along the
    line to another mean exceeds half their distance, > 8 standard deviations: probability
    < 7 * 40000 * Phi(-8) < 1e-9 for the whole sample)."""
    proc = dm.process(proc_name)
    mix = MIXTURES[which]()
    z = mix.sample_marginal(proc, t, N, generator=torch.Generator().manual_seed(11))
    assert set(z) == set(proc.block_names)
    assert all(v.shape == (N, mix.dim) for v in z.values())
    flat = torch.cat([z[n] for n in proc.block_names], dim=1)
    means, covs = mix.marginal(proc, t)
    D = len(proc.block_names) * mix.dim
    assert means.shape == (mix.components, D) and covs.shape == (mix.components, D, D)
    # the marginal from the kernel, written out: mean a_t (x) mu_k,
    # covariance a_t a_t^T (x) Sigma_k + S_t (x) I
    a, S = (torch.as_tensor(v, dtype=torch.float64) for v in proc.data_kernel(t))
    eye = torch.eye(mix.dim, dtype=torch.float64)
    for j in range(mix.components):
        assert torch.allclose(means[j], torch.kron(a, mix.means[j]), atol=1e-12)
        want = torch.kron(torch.outer(a, a), mix.covs[j]) + torch.kron(S, eye)
        assert torch.allclose(covs[j], want, atol=1e-12)
    m, c = mixture_law(mix.weights, means, covs)
    zall = moment_z(flat, m, c)
    assert zall.abs().max() < Z, zall
    if which.endswith("narrow"):
        xm = means[:, : mix.dim]
        sep = torch.cdist(xm, xm) + torch.eye(mix.components) * 1e9
        spread = max(float(torch.linalg.eigvalsh(cj[: mix.dim, : mix.dim]).max()) for cj in covs)
        assert float(sep.min()) / 2 > 8 * spread**0.5
        k = torch.cdist(flat[:, : mix.dim], xm).argmin(1)
        zk = frequency_z(k, mix.weights)
        assert zk.abs().max() < Z, zk
        for j in range(mix.components):
            zj = moment_z(flat[k == j], means[j], covs[j])
            assert zj.abs().max() < Z, (j, zj)


def test_marginal_cache_never_serves_another_process(monkeypatch):
    """Regression: the marginal cache was keyed by ``id(process)``; a process created after
    another was collected can get its id, and a PSLD process (two blocks) was served the VP
    kernel (shapes (K, d) instead of (K, 2d): a FieldError in the samplers, seen under xdist).
    The collision is made certain here by giving every object the same id in the module; the
    PSLD marginal must still be its own: covariances kron(a a^T, C_k) + kron(S, I) from its
    data kernel."""
    import splitsde.diffusion.targets as targets_module

    monkeypatch.setattr(targets_module, "id", lambda obj: 0, raising=False)
    target = dm.GaussianMixture.random(2, 2, seed=3)
    t = 0.3
    target.marginal(dm.process("vp"), t)
    psld = dm.process("psld-cifar10")
    means, covs = target.marginal(psld, t)
    k = psld.terms(t)
    a = torch.as_tensor(k.a, dtype=torch.float64)
    S = torch.as_tensor(k.S, dtype=torch.float64)
    expected = torch.stack(
        [torch.kron(torch.outer(a, a), c) + torch.kron(S, torch.eye(2, dtype=torch.float64))
         for c in target.covs]
    )  # fmt: skip
    assert means.shape == (2, 4) and covs.shape == (2, 4, 4)
    torch.testing.assert_close(covs, expected, rtol=1e-12, atol=1e-12)
