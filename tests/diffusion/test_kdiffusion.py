"""The k-diffusion-style adapter against diffusers' ports of k-diffusion's samplers.

Reference: diffusers' EulerDiscreteScheduler and HeunDiscreteScheduler (their Euler and Heun
steps in sigma are k-diffusion's sample_euler / sample_heun without churn) on the same
denoiser, noise levels and initial state.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import EulerDiscreteScheduler, HeunDiscreteScheduler

import splitsde.diffusion as dm
from splitsde.diffusion.kdiffusion import edm, sample

# diffusers' schedulers call numpy on torch tensors (a NumPy 2 deprecation inside diffusers)
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def eps_net(x_in: torch.Tensor, sigma: float) -> torch.Tensor:
    """A fixed nonlinear noise prediction on the VP-scaled input (what diffusers feeds)."""
    return torch.tanh(1.5 * x_in) * (1.0 + 0.1 * sigma) / (1.0 + 0.05 * sigma)


def denoiser(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    s = sigma.reshape(-1, *([1] * (x.ndim - 1)))
    return x - s * eps_net(x / (s**2 + 1) ** 0.5, float(sigma[0]))


def _diffusers_loop(sch, x: torch.Tensor) -> torch.Tensor:
    for t in sch.timesteps:
        x_in = sch.scale_model_input(x, t)
        sigma = float(sch.sigmas[sch.step_index])
        x = sch.step(eps_net(x_in, sigma), t, x).prev_sample
    return x


def test_euler_matches_diffusers_euler_discrete():
    sigmas = np.array([14.0, 8.5, 5.0, 2.9, 1.6, 0.8, 0.35, 0.12, 0.03, 0.0])
    sch = EulerDiscreteScheduler(num_train_timesteps=1000)
    sch.set_timesteps(sigmas=sigmas.tolist())
    gen = torch.Generator().manual_seed(0)
    x0 = torch.randn(32, 4, generator=gen, dtype=torch.float32) * float(sigmas[0])
    ref = _diffusers_loop(sch, x0.clone())
    ours = sample(denoiser, x0.clone(), sch.sigmas, "euler")
    assert ours.dtype == torch.float32
    assert torch.allclose(ours, ref, rtol=1e-5, atol=1e-5)


def test_heun_matches_diffusers_heun_discrete():
    sch = HeunDiscreteScheduler(num_train_timesteps=1000, use_karras_sigmas=True)
    sch.set_timesteps(12)
    sigmas = torch.unique_consecutive(sch.sigmas)
    gen = torch.Generator().manual_seed(1)
    x0 = torch.randn(32, 4, generator=gen, dtype=torch.float32) * float(sigmas[0])
    ref = _diffusers_loop(sch, x0.clone())
    calls = {"n": 0}

    def counted(x, sigma):
        calls["n"] += 1
        return denoiser(x, sigma)

    ours = sample(counted, x0.clone(), sigmas, "heun")
    assert torch.allclose(ours, ref, rtol=1e-5, atol=1e-5)
    n = len(sigmas) - 1
    assert calls["n"] == 2 * (n - 1) + 1  # Heun steps, then one Euler step to sigma = 0
    euler = sample(denoiser, x0.clone(), sigmas, "euler")
    assert (euler - ref).abs().max() > 1e-3  # the match is not a first-order accident


def test_ancestral_noise_sampler_and_callback():
    sigmas = torch.tensor([10.0, 4.0, 1.5, 0.5, 0.1, 0.0], dtype=torch.float64)
    x0 = torch.randn(8, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64) * 10
    draws = []

    def noise_sampler(sigma, sigma_next):
        gen = torch.Generator().manual_seed(len(draws))
        z = torch.randn(8, 3, generator=gen, dtype=torch.float64)
        draws.append((float(sigma), float(sigma_next)))
        return z

    seen = []
    out = sample(
        denoiser,
        x0,
        sigmas,
        "euler_ancestral",
        noise_sampler=noise_sampler,
        callback=lambda d: seen.append((d["i"], d["sigma"], d["denoised"] is not None)),
    )
    # k-diffusion's ancestral Euler step, written out: sigma_up, sigma_down from eta = 1
    x = x0.clone()
    s = sigmas.numpy()
    for i in range(len(s) - 2):
        d = (x - denoiser(x, torch.full((8,), s[i]))) / s[i]
        up = min(s[i + 1], (s[i + 1] ** 2 * (s[i] ** 2 - s[i + 1] ** 2) / s[i] ** 2) ** 0.5)
        down = (s[i + 1] ** 2 - up**2) ** 0.5
        z = torch.randn(8, 3, generator=torch.Generator().manual_seed(i), dtype=torch.float64)
        x = x + d * (down - s[i]) + z * up
    x = denoiser(x, torch.full((8,), s[-2]))  # Euler to sigma = 0 lands on the denoised state
    assert torch.allclose(out, x, rtol=1e-12, atol=1e-12)
    assert [pytest.approx(a) for a, _ in draws] == list(s[:-2])
    assert [i for i, _, _ in seen] == list(range(len(s) - 1))
    assert all(has for _, _, has in seen)


def test_any_registered_sampler_runs_and_bad_input():
    sigmas = torch.tensor([20.0, 9.0, 4.0, 1.8, 0.7, 0.25, 0.08, 0.0], dtype=torch.float64)
    x0 = torch.randn(16, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64) * 20
    for name in ("deis-logrho2", "ipndm", "rhork-rk4", "ddim"):
        out = sample(denoiser, x0, sigmas, name)
        assert torch.isfinite(out).all()
    with pytest.raises(ValueError, match="strictly decreasing"):
        sample(denoiser, x0, torch.tensor([1.0, 2.0, 0.0]), "euler")
    with pytest.raises(ValueError, match="unknown sampler"):
        sample(denoiser, x0, sigmas, "dpmpp_2m")
    with pytest.raises(ValueError, match="expected shape"):
        sample(lambda x, s: x[:, :1], x0, sigmas, "euler")
    assert edm(80.0).noise_level(3.0) == pytest.approx(3.0)
    assert dm.sampler("pf-euler").name == "pf-euler"
