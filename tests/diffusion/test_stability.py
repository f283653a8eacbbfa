"""Stability bounds on the stationary linearisation and the plan-time StabilityWarning.

References: the closed-form Euler--Maruyama amplification factor on the stationary dynamics
(the eigenvalues of the forward drift), solved for the horizon-doubling threshold by brentq;
the exact law of the flagged run (it diverges) and of an unflagged one.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from scipy.optimize import brentq

import splitsde.diffusion as dm
from splitsde.diffusion.metrics import exact_law, gaussian_kl
from splitsde.diffusion.stability import amplification, stationary_score, threshold


def em_reference_bound(rate: float, span: float) -> float:
    """EM on ``dz = -rate z dtau`` (the stationary reverse dynamics): amplification
    ``|1 - h rate|`` reaches ``2^(h/span)`` at the returned step."""
    return brentq(lambda h: (h * rate - 1.0) - 2.0 ** (h / span), 2.0 / rate, 10.0 / rate)


@pytest.mark.parametrize(
    "proc_name, rate",
    [
        # PSLD/CLD: the reverse drift under the stationary score is V F^T V^{-1}, with the
        # (double, critically damped) eigenvalue -beta (Gamma + nu) / 4 of F
        ("psld-cifar10", 8.0 * (0.01 + 4.01) / 4),
        ("cld", 8.0 * 4.0 / 4),
        # VP at the prior: 1 + h (beta/2 - beta) with beta(T) = 20
        ("vp", 10.0),
    ],
)
def test_euler_maruyama_bound_matches_the_closed_form(proc_name, rate):
    proc = dm.process(proc_name)
    b = dm.stability_bound("em", proc)
    ref = em_reference_bound(rate, proc.T - proc.eps)
    assert b.bound == pytest.approx(ref, rel=5e-3)  # resolved to 3 significant digits
    # the probed amplification is the closed-form factor
    h = 0.9 * ref
    assert amplification(dm.sampler("em"), proc, h) == pytest.approx(abs(1 - h * rate), rel=1e-9)


def test_neutral_flows_are_not_unstable():
    """Under the stationary score VP's probability flow is the identity: DDIM and the
    probability-flow Euler step are neutral (radius 1), not unstable."""
    proc = dm.process("vp")
    for name in ("pf-euler", "ddim", "cddim"):
        assert dm.stability_bound(name, proc).bound is None
        assert amplification(dm.sampler(name), proc, 0.5) <= threshold(proc, 0.5)


def test_warning_names_the_bound_and_the_step_and_the_run_diverges():
    proc = dm.process("psld-cifar10")
    tgt = dm.GaussianData.random(4, seed=0)
    score = tgt.score(proc)
    with pytest.warns(dm.StabilityWarning) as rec:
        p = dm.plan("sps", proc, score, nfe=10, grid="uniform")
    (w,) = [r.message for r in rec if isinstance(r.message, dm.StabilityWarning)]
    assert w.bound == dm.stability_bound("sps", proc).bound
    assert w.step == pytest.approx((proc.T - proc.eps) / 9)
    assert w.step > w.bound
    assert "h* = " in str(w) and "sps on psld-cifar10" in str(w)
    var = torch.tensor([v for v in proc.prior_variance() for _ in range(4)], dtype=torch.float64)
    m, c = exact_law(p, torch.zeros(8), torch.diag(var))
    assert gaussian_kl(m[:4], c[:4, :4], tgt.mean, tgt.cov) > 1e4
    # twice the steps: no warning
    with warnings.catch_warnings():
        warnings.simplefilter("error", dm.StabilityWarning)
        dm.plan("sps", proc, score, nfe=20, grid="uniform")
        dm.plan("sps", proc, score, nfe=10, grid="uniform", check_stability=False)


def test_what_is_not_computed_says_why():
    b = dm.stability_bound("pf-dopri5", "psld-cifar10")
    assert b.bound is None and "adaptive" in b.reason
    b = dm.stability_bound("pmm1-k20", "vp")
    assert b.bound is None and "randomized" in b.reason
    b = dm.stability_bound("em", "ve")
    assert b.bound is None and "no stationary law" in b.reason
    with pytest.raises(ValueError, match="has no stationary law"):
        stationary_score(dm.process("ve"))


def test_stationary_score_is_the_stationary_gaussian_score():
    proc = dm.process("psld-cifar10")
    x, m = torch.randn(5, 3, dtype=torch.float64), torch.randn(5, 3, dtype=torch.float64)
    sx, sm = stationary_score(proc)(x, m, 0.3)
    v = proc.stationary_variance
    assert torch.allclose(sx, -x / v[0]) and torch.allclose(sm, -m / v[1])
    assert np.isclose(v[1], 0.25)


@pytest.mark.parametrize("name", ["em", "sps", "reduced-obab"])
def test_uniform_plans_warn_exactly_above_the_bound(name):
    """The plan check measures what the bound measures: a uniform grid warns exactly when its
    step exceeds h* (steps within 1% of h*, the bound's resolution, are not tested)."""
    proc = dm.process("psld-cifar10")
    b = dm.stability_bound(name, proc).bound
    span = proc.T - proc.eps
    score = dm.GaussianData.random(2, seed=0).score(proc)
    tested = set()
    for steps in range(1, 16):
        h = span / steps
        if abs(h / b - 1) < 0.01:
            continue
        with warnings.catch_warnings(record=True) as rec:
            warnings.simplefilter("always", dm.StabilityWarning)
            dm.plan(name, proc, score, steps=steps, grid="uniform", denoise=False)
        got = any(isinstance(r.message, dm.StabilityWarning) for r in rec)
        assert got == (h > b), (name, steps, h, b)
        tested.add(got)
    assert tested == {True, False}
