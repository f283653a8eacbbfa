"""Time grids in diffusion time and their validation."""

import numpy as np
import pytest

import splitsde.diffusion as dm


def test_uniform_and_quadratic_grids():
    proc = dm.process("psld-cifar10")
    g = dm.time_grid(proc, "uniform", 4, eps=1e-3)
    np.testing.assert_allclose(g, 1.0 - np.arange(5) / 4 * (1.0 - 1e-3), rtol=0, atol=1e-15)
    q = dm.time_grid(proc, "quadratic", 4, eps=1e-3)
    # the reference code's quadratic stride: tau_i = tf (1 - (1 - i/N)^2), t = T - tau
    tf = 1.0 - 1e-3
    tau = tf * (1 - (1 - np.arange(5) / 4) ** 2)
    np.testing.assert_allclose(q, 1.0 - tau, rtol=0, atol=1e-15)
    assert np.all(np.diff(np.diff(q)) > 0)  # steps shrink towards the data


@pytest.mark.parametrize("name", ["vp", "ve", "psld-cifar10"])
def test_edm_and_logsnr_grids_follow_their_noise_level_law(name):
    proc = dm.process(name)
    eps = proc.eps
    smax, smin = float(proc.noise_level(proc.T)), float(proc.noise_level(eps))
    u = np.arange(11) / 10
    edm = dm.time_grid(proc, "edm", 10)
    want = (smax ** (1 / 7) + u * (smin ** (1 / 7) - smax ** (1 / 7))) ** 7
    np.testing.assert_allclose(proc.noise_level(edm), want, rtol=1e-9)
    snr = dm.time_grid(proc, "logsnr", 10)
    np.testing.assert_allclose(
        np.log(proc.noise_level(snr)), np.log(smax) + u * np.log(smin / smax), rtol=1e-9, atol=1e-9
    )
    for g in (edm, snr):
        assert g[0] == proc.T and g[-1] == eps and np.all(np.diff(g) < 0)


@pytest.mark.parametrize(
    "grid, msg",
    [
        ([1.0, 0.5, 0.6, 0.001], "strictly decreasing.*index 1"),
        ([1.0, 0.5, 0.5, 0.001], "strictly decreasing"),
        ([1.2, 0.5, 0.001], r"leaves \[eps, T\]"),
        ([1.0, 0.5, 0.0], r"leaves \[eps, T\]"),
        ([1.0, float("nan"), 0.001], "non-finite"),
        ([1.0], "at least two"),
        ([[1.0, 0.5]], "1-D"),
    ],
)
def test_bad_grids_are_rejected(grid, msg):
    proc = dm.process("psld-cifar10")
    with pytest.raises(dm.GridError, match=msg):
        dm.check_grid(proc, grid, eps=1e-3)


def test_samplers_refuse_bad_grids_and_accept_good_ones():
    proc = dm.process("vp")
    mix = dm.GaussianMixture.ring(4)
    with pytest.raises(dm.GridError, match="strictly decreasing"):
        dm.sample("em", proc, mix.score(proc), 8, shape=2, grid=[0.001, 0.5, 1.0])
    with pytest.raises(dm.GridError, match="unknown grid"):
        dm.time_grid(proc, "cosine", 10)
    with pytest.raises(dm.GridError, match="at least one step"):
        dm.time_grid(proc, "uniform", 0)
    res = dm.sample("em", proc, mix.score(proc), 8, shape=2, grid=[1.0, 0.3, 0.01])
    assert res.steps == 2 and res.nfe == 3
