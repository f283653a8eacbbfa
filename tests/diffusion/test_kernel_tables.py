"""Kernel terms are computed once per grid (in a plan's KernelTable), never per score call.

Before, every call of a ScoreModel re-derived the perturbation kernel at its time (a matrix
exponential for PSLD/CLD): most of the sampling time with a small network. Here: the tables
hold the right numbers (closed forms, an independent Van Loan exponential), the same bits as
one time at a time, and a run of a plan asks the process for no kernel at all.
"""

import numpy as np
import pytest
import scipy.linalg
import torch

import splitsde.compose.codegen as codegen
import splitsde.diffusion as dm
from splitsde.diffusion.kernels import KernelTable, kernel_terms


class TinyNet(torch.nn.Module):
    """A fixed random eps-network on the concatenated blocks."""

    def __init__(self, channels: int, outputs: int | None = None) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.lin = torch.nn.Linear(channels + 1, outputs or channels).double()

    def forward(self, z, t):
        return 0.1 * torch.tanh(self.lin(torch.cat([z, t[:, None]], 1)))


def _old_terms(proc, t):
    """The per-call formula the samplers used before (one time at a time)."""
    a, S = proc.data_kernel(t)
    L = np.linalg.cholesky(S)
    L_inv = np.linalg.inv(L)
    return a, S, L, L_inv.T.copy(), L_inv.T @ L_inv


@pytest.mark.parametrize("name", ["vp", "vp-cosine", "ve", "psld-cifar10", "cld"])
def test_table_terms_are_the_one_time_terms_bit_for_bit(name):
    proc = dm.process(name)
    times = np.linspace(proc.eps, proc.T, 37)
    for k, t in zip(kernel_terms(proc, times), times):
        for new, old in zip((k.a, k.S, k.L, k.L_inv_T, k.S_inv), _old_terms(proc, float(t))):
            assert np.array_equal(new, old)


def test_vp_terms_match_the_closed_form():
    proc = dm.vp(0.1, 20.0)
    t = np.array([1e-3, 0.05, 0.4, 1.0])
    alpha = np.exp(-0.5 * (0.1 * t + 0.5 * (20.0 - 0.1) * t**2))
    S = 1 - alpha**2
    for k, a_, S_ in zip(kernel_terms(proc, t), alpha, S):
        np.testing.assert_allclose(k.a[0], a_, rtol=1e-13)
        np.testing.assert_allclose(k.L_inv_T[0, 0], 1 / np.sqrt(S_), rtol=1e-11)
        np.testing.assert_allclose(k.S_inv[0, 0], 1 / S_, rtol=1e-11)


def test_psld_terms_match_the_stationary_identity():
    """Sigma_t = Sigma_inf - Phi_t Sigma_inf Phi_t^T (the stationary law N(0, I) x N(0, M I) is
    invariant), with Phi_t = expm(F t) from scipy."""
    proc = dm.process("psld-cifar10")
    v = proc.values
    B, G, nu, Mi, kappa = v["beta"], v["Gamma"], v["nu"], v["Minv"], 0.04
    F = np.array([[-B * G / 2, B * Mi / 2], [-B / 2, -B * nu / 2]])
    stat = np.diag([1.0, 1.0 / Mi])
    for k, t in zip(kernel_terms(proc, [0.01, 0.3, 1.0]), [0.01, 0.3, 1.0]):
        phi = scipy.linalg.expm(F * t)
        S = stat - phi @ stat @ phi.T + phi @ np.diag([0.0, kappa / Mi]) @ phi.T
        np.testing.assert_allclose(k.a, phi[:, 0], rtol=1e-10, atol=1e-14)
        np.testing.assert_allclose(k.S, S, rtol=1e-9, atol=1e-13)
        np.testing.assert_allclose(k.L @ k.L.T, k.S, rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(k.S_inv @ k.S, np.eye(2), atol=1e-8)


def test_table_lookups_and_misses():
    proc = dm.process("cld")
    table = KernelTable(proc)
    table.extend([0.5, 0.25, 0.5])
    assert len(table) == 2 and 0.25 in table and table.misses == 0
    assert table(0.25) is table(0.25) and table.misses == 0
    k = table(0.75)  # not prepared: computed on its own and counted
    assert table.misses == 1 and np.array_equal(k.S, _old_terms(proc, 0.75)[1])
    assert table.stack("L_inv_T", np.array([[0.25, 0.75]])).shape == (1, 2, 2, 2)
    with pytest.raises(ValueError, match="t > 0"):
        table.extend([0.0])


#: One sampler per mechanism: score field at the step start, mid-step and stage times (RK),
#: naive words (two evaluations), masked evaluations (Poisson midpoint), the noise-prediction
#: field of the exponential integrators (direct from an eps-network, or converted).
MECHANISMS = {
    "vp": ["em", "pf-euler", "ddim", "ddpm", "deis-tab2", "deis-rhoab2", "rhork-kutta3", "ipndm",
           "ei-sde", "pmm1-k10"],
    "psld-cifar10": ["em", "sscs", "sps", "oba", "vv", "reduced-oba-mid", "deis-tab1"],
}  # fmt: skip
#: Samplers whose step coefficients need no kernel (the others' coefficient tables do, once
#: per grid, in the first run).
NO_KERNEL_COEFFICIENTS = {"em", "pf-euler", "rhork-kutta3", "sscs", "sps", "oba", "vv",
                          "reduced-oba-mid"}  # fmt: skip


def _plans(name):
    proc = dm.process(name)
    n = len(proc.blocks)
    out = []
    for s in MECHANISMS[name]:
        sampler = dm.sampler("reduced-oba", time_label="mid") if s == "reduced-oba-mid" else s
        for param in ("eps", "score", "data") if "deis" in s else ("eps",):
            net = TinyNet(n, 1 if param == "data" else n)
            model = dm.ScoreModel(net, proc, param)
            out.append((s, param, dm.plan(sampler, proc, model, nfe=12)))
    return proc, out


@pytest.mark.parametrize("name", ["vp", "psld-cifar10"])
def test_a_run_computes_no_kernel_and_every_lookup_is_prepared(name, monkeypatch):
    proc, plans = _plans(name)
    y0 = proc.prior(8, 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    calls = []
    real = proc.data_kernel
    monkeypatch.setattr(proc, "data_kernel", lambda t: calls.append(t) or real(t))
    for s, param, p in plans:
        calls.clear()
        first = p.run(y0, seed=0).x  # coefficient tables (DDIM, DEIS) are made here
        if s in NO_KERNEL_COEFFICIENTS:  # then the plan's table was the only kernel source
            assert calls == [], (s, param)
        calls.clear()
        again = p.run(y0, seed=0).x
        # per grid, never per call: the second run of a plan asks for no kernel at all
        assert calls == [], (s, param)
        assert torch.equal(first, again), (s, param)
        tables = [getattr(bf.fn, "kernels", None) for bf in p.integrator.fields]
        assert all(t.misses == 0 for t in tables if t is not None), (s, param)


def test_tabled_plan_is_bit_identical_to_per_call_conversion():
    proc = dm.process("psld-cifar10")
    model = dm.ScoreModel(TinyNet(6), proc, "eps")
    per_call = lambda *a: model(*a)  # noqa: E731  (process.terms at every call, as before)
    y0 = proc.prior(16, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    for s in ("em", "sps", "sscs", "reduced-obab", "pf-euler"):
        a = dm.plan(s, proc, model, nfe=15).run(y0, seed=3).x
        b = dm.plan(s, proc, per_call, nfe=15).run(y0, seed=3).x
        assert torch.equal(a, b), s


def test_second_run_generates_no_code_and_evaluates_no_coefficient(monkeypatch):
    proc = dm.process("cld")
    p = dm.plan("sscs", proc, dm.ScoreModel(TinyNet(4), proc, "eps"), nfe=10)
    y0 = proc.prior(4, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    p.run(y0, seed=0)
    counts = {"source": 0, "coefficients": 0}
    source = codegen._step_source
    evaluate = codegen.CoefficientTable.evaluate

    def count_source(*a, **k):
        counts["source"] += 1
        return source(*a, **k)

    def count_evaluate(self, *a, **k):
        counts["coefficients"] += 1
        return evaluate(self, *a, **k)

    monkeypatch.setattr(codegen, "_step_source", count_source)
    monkeypatch.setattr(codegen.CoefficientTable, "evaluate", count_evaluate)
    p.run(y0, seed=1)
    assert counts == {"source": 0, "coefficients": 0}
    dm.plan("sscs", proc, lambda x, m, tau: (-x, -m), nfe=7).run(y0, seed=0)  # a new plan
    assert counts["source"] > 0 and counts["coefficients"] > 0
