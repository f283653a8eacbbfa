"""Quadrature references of the nonlinear problems against closed forms and identities that
do not use the quadrature code: the virial theorem <q U'(q)> = kT, symmetry, convergence."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import splitsde as sd
from splitsde import problems


@pytest.mark.parametrize(("a", "b", "kT"), [(1.0, 0.0, 1.0), (2.0, -1.0, 0.7), (0.5, 1.5, 2.0)])
def test_quartic_virial(a, b, kT):
    """U = a q^4/4 + b q^2/2: <q U'> = a<q^4> + b<q^2> = kT; for b = 0, <U> = kT/4."""
    prob = problems.quartic(a, b, kT=kT)
    ref = prob.stationary_moments_exact()
    assert a * ref["q4"] + b * ref["q2"] == pytest.approx(kT, rel=1e-11)
    assert abs(ref["q"]) < 1e-12
    if b == 0:
        assert ref["U"] == pytest.approx(kT / 4, rel=1e-11)


@pytest.mark.parametrize(("barrier", "kT"), [(1.0, 1.0), (2.0, 0.5), (0.5, 1.5)])
def test_double_well_virial_and_symmetry(barrier, kT):
    """U = a (q^2 - 1)^2: <q U'> = 4a(<q^4> - <q^2>) = kT; <q> = 0; the potential's own
    moments (another quadrature) agree."""
    prob = problems.double_well(barrier, kT=kT)
    ref = prob.stationary_moments_exact()
    assert 4 * barrier * (ref["q4"] - ref["q2"]) == pytest.approx(kT, rel=1e-10)
    assert abs(ref["q"]) < 1e-12
    mom = sd.potentials.DoubleWell(barrier).moments(kT)
    assert ref["q2"] == pytest.approx(float(mom["var"]), rel=1e-10)


def test_muller_brown_virial_and_convergence():
    """<x dU/dx> = <y dU/dy> = kT (gradient by autograd at the quadrature nodes), and the rule
    has converged (32 and 48 panels agree to 1e-12); the box holds the mass (edges 60 kT up)."""
    prob = problems.muller_brown(kT=1.0)
    pot = prob.potential

    def virial(axis: int):
        def f(x, y):
            q = torch.tensor(np.stack([x, y], -1).reshape(-1, 2), requires_grad=True)
            (g,) = torch.autograd.grad(pot.energy(q.reshape(-1, 1, 2)).sum(), q)
            g = g.detach().numpy().reshape(*x.shape, 2)
            return (x, y)[axis] * g[..., axis]

        return f

    assert prob.average(virial(0)) == pytest.approx(1.0, rel=1e-9)
    assert prob.average(virial(1)) == pytest.approx(1.0, rel=1e-9)
    finer = problems.muller_brown(kT=1.0, panels=48)
    for k in ("x", "y", "x2", "y2", "U"):
        assert prob.reference(k) == pytest.approx(finer.reference(k), rel=1e-12, abs=1e-13)
    (x0, x1), (y0, y1) = prob.box
    edge = np.linspace(0, 1, 101)
    border = np.concatenate(
        [
            pot._terms(x0 + (x1 - x0) * edge, np.full(101, y0), np),
            pot._terms(np.full(101, x1), y0 + (y1 - y0) * edge, np),
        ]
    )
    assert border.min() - prob._rule[4] >= 60.0


def test_named_observables_and_bad_names():
    prob = problems.double_well()
    state = {"q": torch.tensor([[0.5, -1.0]]), "p": torch.zeros(1, 2)}
    assert torch.allclose(prob.observable("U")(state), torch.tensor([[0.5625, 0.0]]))
    with pytest.raises(ValueError, match="no observable 'q3'; choose one of q, q2, q4, U"):
        prob.reference("q3")


def test_stationary_monte_carlo_agrees_with_quadrature():
    """BAOAB's configurational bias on the double well at h = 0.05 is ~4e-4 (O(h^2)): the
    stationary <q^2> of 4000 walkers over 100 time units agrees with the quadrature within
    4 standard errors plus that bias."""
    from splitsde.analysis import stationary_average

    prob = problems.double_well()
    y0 = prob.initial_state(4000, torch.Generator().manual_seed(3))
    est = stationary_average(
        prob.integrator("BAOAB"), y0, prob.observable("q2"), h=0.05, steps=2000,
        burn_in=100, seed=4,
    )  # fmt: skip
    assert abs(est.value - prob.reference("q2")) < 4 * est.se + 1e-3
