"""splitsde samplers as a diffusers scheduler (splitsde.interop.diffusers).

A tiny randomly initialised UNet2DModel drives the scheduler in diffusers' own pipelines and
in the pipelines' loop written out; DDIM is compared with diffusers' DDIMScheduler step by step
(the tolerance is the float32 rounding of diffusers' schedule arithmetic); multistep samplers
are compared with the same plan run in one go by splitsde.integrate.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

diffusers = pytest.importorskip("diffusers")

import splitsde.diffusion as dm  # noqa: E402
from splitsde import integrate  # noqa: E402
from splitsde.interop.diffusers import (  # noqa: E402
    SchedulerError,
    SplitsdeScheduler,
    spaced_timesteps,
)

U32 = 2.0**-24  # float32 unit roundoff


@pytest.fixture(scope="module")
def unet():
    torch.manual_seed(0)
    model = diffusers.UNet2DModel(
        sample_size=8,
        in_channels=1,
        out_channels=1,
        layers_per_block=1,
        block_out_channels=(8, 16),
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
        norm_num_groups=4,
    )
    return model.double().eval()


def _loop(scheduler, unet, n, seed=0, **step_kw):
    """The loop of diffusers' DDPM/DDIM pipelines, written out (float64)."""
    scheduler.set_timesteps(n)
    x = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        for t in scheduler.timesteps:
            eps = unet(scheduler.scale_model_input(x, t), t).sample
            x = scheduler.step(eps, t, x, **step_kw).prev_sample
    return x


def _ddim_terms(abar, i, j, x, eps):
    """The DDIM step from timestep i to j (j < 0: alpha_bar = 1) in float64, split into its
    two terms: x_prev = sqrt(ap / at) x + (sqrt(1 - ap) - sqrt(ap (1 - at) / at)) eps."""
    at, ap = abar[i], abar[j] if j >= 0 else 1.0
    c1 = np.sqrt(ap / at)
    c2 = np.sqrt(1 - ap) - np.sqrt(ap * (1 - at) / at)
    size = c1 * x.abs() + (np.sqrt(1 - ap) + np.sqrt(ap * (1 - at) / at)) * eps.abs()
    return c1 * x + c2 * eps, size


def test_ddim_steps_equal_diffusers_ddim(unet):
    """Each step from the same sample and model output (leading spacing, where diffusers'
    DDIM steps from one timestep to the next): diffusers evaluates sqrt(abar) and
    sqrt(1 - abar) in float32 (its schedule's dtype), splitsde in float64, so the outputs
    differ by the rounding of those coefficients (a few u32, relative, on each of the two
    terms of the update: bound 6 u32 times their sizes) and nothing else."""
    ref = diffusers.DDIMScheduler(clip_sample=False)
    ours = SplitsdeScheduler(sampler="ddim")
    ref.set_timesteps(12)
    ours.set_timesteps(12)
    assert torch.equal(ours.timesteps, ref.timesteps) and ours.order == 1
    x = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    abar = ours.alphas_cumprod.numpy()
    with torch.no_grad():
        for t in ref.timesteps:
            eps = unet(x, t).sample
            a = ref.step(eps, t, x).prev_sample
            b = ours.step(eps, t, x).prev_sample  # ours adopts the sample it is given
            _, size = _ddim_terms(abar, int(t), int(t) - 1000 // 12, x, eps)
            assert torch.all((a - b).abs() <= 6 * U32 * size)
            x = a
    assert ours._index == len(ours.timesteps)


@pytest.mark.parametrize("spacing", ["trailing", "linspace"])
def test_ddim_steps_between_consecutive_timesteps(unet, spacing):
    """With trailing / linspace spacing diffusers' DDIMScheduler steps to t - N // n, which is
    not the next timestep of its own list; splitsde's DDIM steps to the next timestep: the
    closed form in float64 (splitsde's coefficients come from the kernel at the matched
    diffusion times, ~1e-15 relative)."""
    ours = SplitsdeScheduler(sampler="ddim", timestep_spacing=spacing)
    ours.set_timesteps(7)
    ts = ours.timesteps.tolist()
    assert ts == spaced_timesteps(7, 1000, spacing).tolist()
    abar = ours.alphas_cumprod.numpy()
    x = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        for k, t in enumerate(ts):
            eps = unet(x, torch.tensor(t)).sample
            b = ours.step(eps, t, x).prev_sample
            ref, size = _ddim_terms(abar, t, ts[k + 1] if k + 1 < len(ts) else -1, x, eps)
            assert torch.all((ref - b).abs() <= 1e-12 * size)
            x = b


def test_pipelines_run_with_the_splitsde_scheduler(unet):
    unet32 = diffusers.UNet2DModel.from_config(unet.config)
    unet32.load_state_dict({k: v.float() for k, v in unet.state_dict().items()})
    unet32.eval()
    for name in ("ddim", "deis-tab3", "em"):
        pipe = diffusers.DDPMPipeline(unet32, SplitsdeScheduler(sampler=name))
        pipe.set_progress_bar_config(disable=True)
        gen = torch.Generator().manual_seed(0)
        out = pipe(batch_size=2, generator=gen, num_inference_steps=6, output_type="np").images
        assert out.shape == (2, 8, 8, 1) and np.isfinite(out).all()
    # DDIMPipeline rebuilds its scheduler as a DDIMScheduler; assigning ours afterwards works
    pipe = diffusers.DDIMPipeline(unet32, diffusers.DDIMScheduler(clip_sample=False))
    pipe.set_progress_bar_config(disable=True)
    pipe.scheduler = SplitsdeScheduler(sampler="ddim")
    a = pipe(batch_size=2, generator=torch.Generator().manual_seed(3), num_inference_steps=5)
    pipe.scheduler = diffusers.DDIMScheduler(clip_sample=False)
    b = pipe(batch_size=2, generator=torch.Generator().manual_seed(3), num_inference_steps=5)
    assert len(a.images) == 2 and a.images[0].size == (8, 8)
    assert np.abs(np.asarray(a.images[0], float) - np.asarray(b.images[0], float)).max() <= 1


def _direct(unet, name, n, seed=0):
    """The same sampler as one splitsde plan (integrate runs every step), then one DDIM step
    to alpha_bar = 1: what the scheduler must reproduce across its step calls."""
    sch = SplitsdeScheduler(sampler=name)
    ts = spaced_timesteps(n, 1000, "leading")
    grid = sch._t_of_step[ts]

    def timestep(t: float) -> float:
        return float(np.interp(t, sch._t_of_step, np.arange(1000.0)).round())

    model = dm.ScoreModel(
        lambda x, time: unet(x, time).sample, sch.process, "eps", time_input=timestep
    )
    x = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        x = dm.plan(name, sch.process, model, grid=grid, denoise=False).run({"x": x}).x
        ddim = dm.sampler("ddim").integrator(sch.process, model)
        tau = np.array([sch.process.T - grid[-1], sch.process.T])
        x = integrate(ddim, {"x": x}, grid=tau, seed=0).final["x"]
    return x


@pytest.mark.parametrize("name", ["deis-tab2", "ipndm", "deis-logrho3"])
def test_multistep_history_persists_across_steps_and_resets(unet, name):
    sch = SplitsdeScheduler(sampler=name)
    first = _loop(sch, unet, 8)
    assert torch.equal(first, _direct(unet, name, 8))  # history kept across the calls
    # abandon a run after three steps, then sample again: nothing of the old run leaks in
    sch.set_timesteps(8)
    x = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        for t in sch.timesteps[:3]:
            x = sch.step(unet(x, t).sample, t, x).prev_sample
    assert torch.equal(_loop(sch, unet, 8), first)
    # a lower-order start would differ: the history really is used
    assert not torch.equal(first, _loop(SplitsdeScheduler(sampler="ddim"), unet, 8))


def test_runge_kutta_stages_are_extra_timesteps(unet):
    sch = SplitsdeScheduler(sampler="rhork-heun")
    sch.set_timesteps(5)
    ts = sch.timesteps.numpy()
    # 4 Heun steps of 2 evaluations, the second at the next timestep, then the DDIM end step
    assert sch.order == 2 and len(ts) == 9
    np.testing.assert_allclose(ts[::2], [800, 600, 400, 200, 0], atol=1e-9)
    np.testing.assert_allclose(ts[1:8:2], [600, 400, 200, 0], atol=1e-9)
    x = _loop(sch, unet, 5)
    assert torch.isfinite(x).all()


def test_stochastic_sampler_uses_the_pipelines_generator(unet):
    def run(seed):
        sch = SplitsdeScheduler(sampler="ddpm")
        return _loop(sch, unet, 6, generator=torch.Generator().manual_seed(seed))

    a, b, c = run(1), run(1), run(2)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_config_round_trip(tmp_path):
    sch = SplitsdeScheduler(sampler="deis-tab3", timestep_spacing="trailing", seed=4)
    sch.save_pretrained(tmp_path)
    back = SplitsdeScheduler.from_pretrained(tmp_path)
    assert back.config.sampler == "deis-tab3" and back.config.timestep_spacing == "trailing"
    assert back.config.seed == 4
    # a DDIMScheduler's config carries over (the schedule and spacing)
    ddim = diffusers.DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085)
    ours = SplitsdeScheduler.from_config(ddim.config, sampler="ipndm")
    assert torch.allclose(ours.alphas_cumprod, ddim.alphas_cumprod.double(), rtol=0, atol=0)
    assert ours.init_noise_sigma == 1.0 and len(ours) == 1000
    x = torch.ones(2, 1, 2, 2)
    assert ours.scale_model_input(x, 10) is x
    noisy = ours.add_noise(x, torch.zeros_like(x), torch.tensor([0, 999]))
    np.testing.assert_allclose(noisy[:, 0, 0, 0], ddim.alphas_cumprod[[0, 999]].sqrt(), rtol=1e-6)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"sampler": "sps"}, "does not run on VP"),
        ({"sampler": "pf-dopri5"}, "whole trajectory"),
        ({"sampler": "heun"}, "unknown sampler"),
        ({"prediction_type": "v_prediction"}, "noise-prediction"),
        ({"timestep_spacing": "karras"}, "unknown timestep_spacing"),
    ],
)
def test_refused_configurations(kwargs, message):
    with pytest.raises(SchedulerError, match=message):
        SplitsdeScheduler(**kwargs)


def test_refused_calls(unet):
    sch = SplitsdeScheduler(sampler="pmm1-k10")
    with pytest.raises(SchedulerError, match="random number of times"):
        sch.set_timesteps(10)
    sch = SplitsdeScheduler(sampler="deis-tab3")
    with pytest.raises(SchedulerError, match="at least 4 steps"):
        sch.set_timesteps(3)
    sch = SplitsdeScheduler()
    x = torch.zeros(1, 1, 8, 8)
    with pytest.raises(SchedulerError, match="set_timesteps"):
        sch.step(x, 999, x)
    sch.set_timesteps(4)
    with pytest.raises(SchedulerError, match="expects timestep 750, got 500"):
        sch.step(x, 500, x)
    with pytest.raises(SchedulerError, match="eta"):
        sch.step(x, 750, x, eta=1.0)


def test_missing_diffusers_gives_an_install_hint():
    code = (
        "import sys; sys.modules['diffusers'] = None\n"
        "try:\n    import splitsde.interop.diffusers\n"
        "except ImportError as e:\n    print(type(e).__name__, e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == (
        "MissingDependencyError splitsde.interop.diffusers needs diffusers: "
        "pip install 'splitsde[diffusers]'"
    )


def test_peers_benchmark_quick(tmp_path):
    """benchmarks/diffusers_peers.py at tiny sizes. Cross-check of its two implementations:
    diffusers' Euler scheduler (Euler in sigma = DDIM) on linspace timesteps runs on the same
    grid as splitsde's DDIM on the uniform grid at NFE 5 (t = 1, 0.75025, ..., 0.001); only
    the last step differs (to sigma = 0 vs splitsde's Euler denoising step from t = 0.001), so
    the exact KLs (probed affine map vs splitsde's analysis) and the ring's sliced W2 (same
    prior draws) agree to 1e-2 relative. splitsde's table rows use the recommended grids, so
    the benchmark records the uniform-grid DDIM run separately as ``cross_check``."""
    import json
    import os

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    subprocess.run(
        [sys.executable, os.path.join(root, "benchmarks", "diffusers_peers.py"), "--quick",
         "--out", str(tmp_path), "--no-progress"],
        check=True, capture_output=True, env=env, timeout=300,
    )  # fmt: skip
    data = json.loads((tmp_path / "diffusers_peers_quick.json").read_text())
    gauss, ring = data["blocks"]
    assert gauss["metric"] == "kl" and ring["metric"] == "sliced_w2" and ring["floor"] > 0
    for block in (gauss, ring):
        libs = {r["library"] for r in block["rows"]}
        assert libs == {"splitsde", "diffusers"}
        rows = {(r["library"], r["sampler"]): r for r in block["rows"]}
        assert len([r for r in block["rows"] if r["library"] == "diffusers"]) == 8
        m = block["metric"]
        check = block["cross_check"]
        assert check["diffusers Euler"] == rows[("diffusers", "Euler")][m]
        a, b = check["splitsde ddim, uniform grid"], check["diffusers Euler"]
        assert abs(a - b) <= 1e-2 * a
