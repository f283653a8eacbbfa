"""The adaptive probability-flow sampler ``pf-dopri5`` (splitsde.diffusion.pfode): the NFE
budget search, its refusal of impossible budgets, and its accuracy on Gaussian data.

References: score calls counted by a wrapper around the score (not by the library's counter);
the closed-form probability-flow map of Gaussian data (eigenbasis of the data covariance).
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

import splitsde.diffusion as dm

pytest.importorskip("torchdiffeq")


class Counted:
    """A score callable that counts its calls."""

    def __init__(self, score) -> None:
        self.score = score
        self.calls = 0

    def __call__(self, *args):
        self.calls += 1
        return self.score(*args)


@pytest.fixture(scope="module")
def problem():
    proc = dm.process("vp")
    data = dm.target("gaussian-4")
    y0 = proc.prior(16, data.dim, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    return proc, data, y0


@pytest.fixture(scope="module")
def loosest(problem) -> int:
    """Score calls of the loosest solve the search tries (rtol = atol = 1), counted here."""
    proc, data, y0 = problem
    counted = Counted(data.score(proc))
    dm.ProbabilityFlow(proc, counted).solve(y0, [0.0, proc.T - proc.eps], rtol=1.0, atol=1.0)
    return counted.calls


def closed_form_flow(proc, data, x: np.ndarray, t1: float) -> np.ndarray:
    """The probability-flow map T -> t1 for Gaussian data N(mu, Sigma): in the eigenbasis of
    Sigma each coordinate of x - a_t mu scales by sqrt(v(t1) / v(T)), v = a_t^2 w + s_t."""
    mean, cov = data.mean.numpy(), data.cov.numpy()
    a, S = proc.data_kernel(np.array([proc.T, t1]))
    (aT, a1), (sT, s1) = a[:, 0], S[:, 0, 0]
    w, V = np.linalg.eigh(cov)
    scale = np.sqrt((a1**2 * w + s1) / (aT**2 * w + sT))
    return a1 * mean + ((x - aT * mean) @ V) * scale @ V.T


# ---------------------------------------------------------------------------------------------
# the NFE budget
# ---------------------------------------------------------------------------------------------
def test_budget_search_fits_the_budget_and_tightens_with_it(problem, loosest):
    """For each budget, down to the loosest solve plus the denoising step, the searched
    tolerance gives a run whose NFE (counted score calls, denoising step included) is within
    the budget; a smaller budget never gives a tighter tolerance (the bisection makes the same
    decisions until a budget separates them)."""
    proc, data, y0 = problem
    tols = []
    budgets = [loosest + 1, 2 * loosest, 4 * loosest]  # the smallest: loosest solve + denoising
    for budget in budgets:
        res = dm.plan("pf-dopri5", proc, data.score(proc), nfe=budget).run(y0, seed=0)
        assert res.nfe <= budget
        assert (res.nfe_denoise, res.nfe) == (1, res.nfe_steps + 1)
        # the reported NFE is what the score was called: rerun at the searched tolerance
        counted = Counted(data.score(proc))
        fixed = dm.sampler("pf-dopri5").with_options(rtol=res.tolerance).plan(proc, counted)
        again = fixed.run(y0, seed=0)
        assert counted.calls == res.nfe == again.nfe
        assert torch.equal(again.x, res.x)
        tols.append(res.tolerance)
    assert all(a >= b for a, b in itertools.pairwise(tols)), tols
    assert tols[-1] < tols[0] / 10, tols  # the budget does steer the tolerance


def test_a_budget_below_any_dopri5_solve_is_a_clear_error(problem, loosest):
    """dopri5 needs at least 2 evaluations to choose its first step and 6 per step, plus the
    denoising step: 8 cannot be met by any tolerance. The message names the budget, the
    sampler and the cost of the cheapest tolerance tried."""
    proc, data, y0 = problem
    assert loosest >= 8
    for budget in (5, 8):
        plan = dm.plan("pf-dopri5", proc, data.score(proc), nfe=budget)
        with pytest.raises(
            dm.BudgetError,
            match=rf"budget of {budget} is too small for pf-dopri5: the cheapest tolerance "
            r"tried \(rtol = atol = [0-9.e-]+\) takes \d+ score evaluations",
        ):
            plan.run(y0, seed=0)


def test_the_search_does_not_assume_cost_is_monotone_in_the_tolerance(problem, loosest):
    """dopri5's cost is not monotone in the tolerance (step rejections): on this problem a
    tolerance tighter than 1 is cheaper than 1 itself. The search scans quarter decades, so
    the cheapest solve among them (counted here by a wrapper) plus the denoising step is an
    accepted budget, and one evaluation less is refused naming that cost."""
    proc, data, y0 = problem
    cheapest = {}
    for k in range(13):  # 1 ... 1e-3: tighter tolerances only cost more here
        counted = Counted(data.score(proc))
        tol = 10.0 ** (-0.25 * k)
        dm.ProbabilityFlow(proc, counted).solve(y0, [0.0, proc.T - proc.eps], rtol=tol, atol=tol)
        cheapest[tol] = counted.calls
    c_min = min(cheapest.values())
    assert c_min < loosest  # the premise: the loosest tolerance is not the cheapest
    res = dm.plan("pf-dopri5", proc, data.score(proc), nfe=c_min + 1).run(y0, seed=0)
    assert res.nfe <= c_min + 1
    with pytest.raises(dm.BudgetError, match=rf"takes {c_min} score evaluations"):
        dm.plan("pf-dopri5", proc, data.score(proc), nfe=c_min).run(y0, seed=0)


# ---------------------------------------------------------------------------------------------
# accuracy
# ---------------------------------------------------------------------------------------------
def test_dopri5_output_agrees_with_the_closed_form_flow_to_its_tolerance(problem):
    """Without denoising the output is the flow map T -> eps. dopri5 keeps each step's local
    error estimate within tol * (1 + |y|) in the RMS norm over all N entries, so an entry's
    local error is at most sqrt(N) tol (1 + |y|); the flow of this data does not expand errors
    (each eigen-direction scales by sqrt(v(t1)/v(t)) <= 1 for eigenvalues w <= 1), so over at
    most (nfe - 2) / 6 steps the error is at most that many local errors."""
    proc, data, y0 = problem
    assert float(torch.linalg.eigvalsh(data.cov).max()) <= 1 + 1e-12
    x = y0["x"].numpy()
    exact = closed_form_flow(proc, data, x, proc.eps)
    size = 1.0 + np.abs(x).max() + np.abs(exact).max()
    errs = {}
    for tol in (1e-6, 1e-8):
        plan = (
            dm.sampler("pf-dopri5")
            .with_options(rtol=tol)
            .plan(proc, data.score(proc), denoise=False)
        )
        res = plan.run(y0)
        assert res.tolerance == tol and res.nfe_denoise == 0
        errs[tol] = float(np.abs(res.x.numpy() - exact).max())
        steps = (res.nfe - 2) / 6
        assert errs[tol] <= steps * np.sqrt(x.size) * tol * size, (tol, errs[tol], res.nfe)
    assert errs[1e-8] < errs[1e-6] / 10, errs  # the error follows the tolerance
