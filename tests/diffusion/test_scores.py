"""Exact scores of the analytic targets and the score parametrisations / network wrapper."""

import math

import numpy as np
import pytest
import torch

import splitsde as sd
import splitsde.diffusion as dm

PROCESSES = ["psld-cifar10", "cld", "vp", "vp-cosine", "ve"]


def _state(target, proc, t, n, seed):
    return target.sample_marginal(proc, t, n, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", PROCESSES)
@pytest.mark.parametrize("t", [2e-3, 0.1, 0.6])
def test_mixture_score_matches_autograd_of_log_marginal(name, t):
    proc = dm.process(name)
    mix = dm.GaussianMixture.random(3, 3, seed=4, radius=1.5, std=0.4)
    z = _state(mix, proc, t, 64, seed=1)
    zg = {k: v.clone().requires_grad_(True) for k, v in z.items()}
    logp = mix.log_marginal(proc, t, zg).sum()
    grads = torch.autograd.grad(logp, list(zg.values()))
    score = mix.score_at(proc, t, list(z.values()))
    for g, s in zip(grads, score):
        np.testing.assert_allclose(
            s.numpy(), g.numpy(), rtol=1e-9, atol=1e-9 * g.abs().max().item()
        )


def test_mixture_log_density_integrates_to_one_in_2d():
    proc = dm.vp()
    mix = dm.GaussianMixture.ring(4, radius=1.0, std=0.3)
    xs = torch.linspace(-6, 6, 401, dtype=torch.float64)
    X, Y = torch.meshgrid(xs, xs, indexing="ij")
    z = {"x": torch.stack([X.ravel(), Y.ravel()], 1)}
    dens = mix.log_marginal(proc, 0.3, z).exp().reshape(X.shape)
    total = torch.trapezoid(torch.trapezoid(dens, xs), xs)
    assert abs(float(total) - 1.0) < 1e-8


def test_gaussian_score_is_minus_precision_times_residual():
    proc = dm.process("psld-cifar10")
    data = dm.GaussianData.random(4, seed=2)
    t = 0.05
    mean, cov = data.law(proc, t)
    z = _state(data, proc, t, 16, seed=3)
    flat = torch.cat([z["x"], z["m"]], 1)
    ref = -(flat - mean) @ torch.linalg.inv(cov)
    s = torch.cat(data.score_at(proc, t, [z["x"], z["m"]]), 1)
    np.testing.assert_allclose(s.numpy(), ref.numpy(), rtol=1e-9, atol=1e-9)


def test_marginal_sampling_matches_the_law():
    proc = dm.process("psld-cifar10")
    data = dm.GaussianData([1.0, -2.0], [[0.5, 0.1], [0.1, 0.3]])
    n = 200_000
    z = _state(data, proc, 0.2, n, seed=5)
    flat = torch.cat([z["x"], z["m"]], 1)
    mean, cov = data.law(proc, 0.2)
    se = torch.sqrt(torch.diagonal(cov) / n)
    assert ((flat.mean(0) - mean).abs() / se).max() < 4.0
    emp = torch.cov(flat.T)
    se_cov = torch.sqrt((cov**2 + torch.outer(torch.diagonal(cov), torch.diagonal(cov))) / n)
    assert ((emp - cov).abs() / se_cov).max() < 4.0


@pytest.mark.parametrize("name", ["psld-cifar10", "vp"])
def test_eps_parametrisation_is_minus_inverse_transpose_cholesky(name):
    proc = dm.process(name)
    t = 0.3
    g = torch.Generator().manual_seed(0)
    eps = [torch.randn(8, 5, generator=g, dtype=torch.float64) for _ in proc.blocks]
    s = dm.score_from_eps(proc, eps, t)
    L = np.linalg.cholesky(proc.data_kernel(t)[1])
    ref = -np.linalg.inv(L).T @ np.stack([e.numpy() for e in eps]).reshape(len(eps), -1)
    got = np.stack([x.numpy() for x in s]).reshape(len(eps), -1)
    np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-12)
    back = dm.eps_from_score(proc, s, t)
    for a, b in zip(back, eps):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-11, atol=1e-12)


def test_data_prediction_with_the_exact_posterior_mean_gives_the_exact_score():
    """Tweedie: with x0_hat = E[x0 | z_t] (closed form for Gaussian data) the data
    parametrisation returns the exact score."""
    proc = dm.process("psld-cifar10")
    data = dm.GaussianData.random(3, seed=1)
    t = 0.2
    mean, cov = data.law(proc, t)
    a, _ = proc.data_kernel(t)
    # Cov(x0, z_t) = Sigma0 (a^T kron I)
    cross = torch.cat([data.cov * float(ab) for ab in a], 1)
    z = _state(data, proc, t, 32, seed=2)
    flat = torch.cat([z["x"], z["m"]], 1)
    x0_hat = data.mean + (flat - mean) @ torch.linalg.solve(cov, cross.T)
    s = dm.score_from_data(proc, [z["x"], z["m"]], x0_hat, t)
    exact = data.score_at(proc, t, [z["x"], z["m"]])
    for a_, b_ in zip(s, exact):
        np.testing.assert_allclose(a_.numpy(), b_.numpy(), rtol=1e-8, atol=1e-8)


class _EpsNet(torch.nn.Module):
    """A 'network' that returns the exact epsilon of a target (float32, channel concat)."""

    def __init__(self, target, proc):
        super().__init__()
        self.target, self.proc = target, proc
        self.w = torch.nn.Parameter(torch.zeros(1, dtype=torch.float32))
        self.times = []

    def forward(self, z, time):
        self.times.append(float(time[0]))
        assert z.dtype == torch.float32 and time.shape == (z.shape[0],)
        t = float(time[0])
        blocks = list(torch.chunk(z.double(), len(self.proc.blocks), dim=1))
        s = self.target.score_at(self.proc, t, blocks)
        return torch.cat(dm.eps_from_score(self.proc, s, t), 1).float()


def test_score_model_wrapper_converts_time_and_parametrisation():
    proc = dm.process("psld-cifar10")
    mix = dm.GaussianMixture.ring(4)
    net = _EpsNet(mix, proc)
    model = dm.ScoreModel(net, proc, "eps")
    z = _state(mix, proc, 0.4, 10, seed=0)
    tau = proc.T - 0.4
    sx, sm = model(z["x"], z["m"], tau)
    assert net.times == [pytest.approx(0.4, abs=1e-7)]
    assert sx.dtype == torch.float64
    ex, em = mix.score_at(proc, 0.4, [z["x"], z["m"]])
    np.testing.assert_allclose(sx.numpy(), ex.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(sm.numpy(), em.numpy(), rtol=1e-4, atol=1e-4)


def test_score_model_time_input_noise_level():
    proc = dm.vp()
    seen = []

    def net(x, time):
        seen.append(float(time[0]))
        return torch.zeros_like(x)

    model = dm.ScoreModel(net, proc, "score", time_input="noise_level")
    model(torch.zeros(3, 2), proc.T - 0.25)
    assert seen[0] == pytest.approx(float(proc.noise_level(0.25)))


def test_score_model_drives_a_sampler_like_the_exact_score():
    proc = dm.process("psld-cifar10")
    mix = dm.GaussianMixture.ring(4)
    model = dm.ScoreModel(_EpsNet(mix, proc), proc, "eps")
    a = dm.sample("sps", proc, model, 64, shape=2, nfe=12, seed=3, dtype=torch.float64)
    b = dm.sample("sps", proc, mix.score(proc), 64, shape=2, nfe=12, seed=3, dtype=torch.float64)
    np.testing.assert_allclose(a.x.numpy(), b.x.numpy(), rtol=1e-3, atol=1e-3)


def test_wrong_shape_score_model_is_a_clear_error():
    proc = dm.process("psld-cifar10")

    def bad(z, time):
        return z[:, :1]

    model = dm.ScoreModel(bad, proc, "eps")
    with pytest.raises(ValueError, match=r"expected \(4, 4\).*concatenated along dim 1"):
        dm.sample("em", proc, model, 4, shape=2, nfe=5)
    model = dm.ScoreModel(lambda z, time: [z, z, z], proc, "score")
    with pytest.raises(ValueError, match="returned 3 outputs, expected 2"):
        dm.sample("em", proc, model, 4, shape=2, nfe=5)
    model = dm.ScoreModel(lambda x, time: x[:, :1], dm.vp(), "score")
    with pytest.raises(ValueError, match=r"for x, expected shape \(4, 2\)"):
        dm.sample("em", "vp", model, 4, shape=2, nfe=5)


def test_non_finite_score_model_is_a_clear_error():
    proc = dm.vp()
    calls = []

    def nan_late(x, time):
        calls.append(1)
        out = -x
        if len(calls) > 3:
            out = out * math.nan
        return out

    model = dm.ScoreModel(nan_late, proc, "score")
    # the core reports a non-finite field output as a FieldError or (naming the sub-step) a
    # NonFiniteError, depending on where it is caught
    with pytest.raises((sd.FieldError, sd.NonFiniteError), match="field s returned non-finite"):
        dm.sample("em", proc, model, 4, shape=2, nfe=10)


def test_bad_score_model_arguments():
    with pytest.raises(ValueError, match="parametrisation"):
        dm.ScoreModel(lambda z, t: z, dm.vp(), "velocity")
    with pytest.raises(TypeError, match="callable"):
        dm.ScoreModel(3, dm.vp())
    with pytest.raises(ValueError, match="positive definite"):
        dm.GaussianData([0.0, 0.0], [[1.0, 2.0], [2.0, 1.0]])
    with pytest.raises(ValueError, match="weights"):
        dm.GaussianMixture([1.0, -1.0], [[0.0], [1.0]], [1.0, 1.0])


def test_data_parametrisation_through_the_wrapper_with_separate_blocks():
    proc = dm.process("psld-cifar10")
    data = dm.GaussianData.random(3, seed=1)
    t = 0.3
    mean, cov = data.law(proc, t)
    a, _ = proc.data_kernel(t)
    cross = torch.cat([data.cov * float(ab) for ab in a], 1)

    def denoiser(x, m, time):  # blocks as separate arguments, returns E[x0 | z_t]
        assert float(time[0]) == pytest.approx(t)
        flat = torch.cat([x, m], 1)
        return data.mean + (flat - mean) @ torch.linalg.solve(cov, cross.T)

    model = dm.ScoreModel(denoiser, proc, "data", concat_dim=None)
    z = _state(data, proc, t, 8, seed=4)
    sx, sm = model(z["x"], z["m"], proc.T - t)
    ex, em = data.score_at(proc, t, [z["x"], z["m"]])
    np.testing.assert_allclose(sx.numpy(), ex.numpy(), rtol=1e-8, atol=1e-8)
    np.testing.assert_allclose(sm.numpy(), em.numpy(), rtol=1e-8, atol=1e-8)
