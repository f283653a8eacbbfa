"""Langevin observables against exact values."""

from __future__ import annotations

import math

import numpy as np
import torch

import splitsde as sd


def test_configurational_and_kinetic_temperature():
    omega, kT = 2.0, 0.7
    system = sd.langevin.underdamped(sd.potentials.Harmonic(omega), gamma=1.0, kT=kT)
    integ = system.integrator("BAOAB")
    y0 = system.initial_state(4000, dim=2, generator=torch.Generator().manual_seed(0))
    tconf = sd.langevin.ConfigurationalTemperature(system, burn_in=100)
    tkin = sd.Running(lambda t, s: sd.langevin.kinetic_temperature(s), "T_kin", burn_in=100)
    res = sd.integrate(integ, y0, h=0.2, steps=400, seed=2, observers=[tconf, tkin])
    fin = res.finals["T_conf"]
    # per-walker ratio estimates are independent; BAOAB samples q exactly, so T_conf = kT
    ratio = (fin["grad2"] / fin["laplacian"]).numpy()
    se = ratio.std(ddof=1) / math.sqrt(len(ratio))
    assert abs(fin["value"] - kT) < 4 * se + 1e-12
    assert abs(ratio.mean() - kT) < 4 * se
    # kinetic temperature is biased for BAOAB: kT (1 - h^2 omega^2 / 4)
    per_walker = res.finals["T_kin"]["mean"].numpy()
    se_k = per_walker.std(ddof=1) / math.sqrt(len(per_walker))
    assert abs(per_walker.mean() - kT * (1 - 0.04 * 4 / 4)) < 4 * se_k


def test_autograd_force_and_laplacian_match_analytic():
    dw = sd.potentials.DoubleWell(barrier=1.5)
    auto = sd.potentials.TorchPotential(dw.energy)
    q = torch.linspace(-2, 2, 12, dtype=torch.float64).reshape(4, 3)
    torch.testing.assert_close(auto.force(q), dw.force(q))
    torch.testing.assert_close(auto.laplacian(q), dw.laplacian(q))
    e = sd.potentials.Potential.laplacian(sd.potentials.Harmonic(3.0), q)
    torch.testing.assert_close(e, torch.full((4,), 27.0, dtype=torch.float64))


def test_muller_brown_moments_by_independent_quadrature():
    import scipy.integrate

    mb = sd.potentials.MullerBrown()
    mom = mb.moments(1.0)
    (x0, x1), (y0, y1) = mb.bounds
    umin = min(mb.u(-0.558, 1.442), mb.u(0.623, 0.028))

    def w(y, x):
        return math.exp(-(mb.u(x, y) - umin))

    z = scipy.integrate.dblquad(w, x0, x1, y0, y1, epsrel=1e-7)[0]
    mx = scipy.integrate.dblquad(lambda y, x: x * w(y, x), x0, x1, y0, y1, epsrel=1e-7)[0] / z
    assert np.isclose(mom["mean"][0], mx, rtol=1e-5)
    q = torch.tensor([[0.1, 0.2]], dtype=torch.float64)
    auto = sd.potentials.TorchPotential(mb.energy, event_shape=(2,))
    torch.testing.assert_close(mb.force(q), auto.force(q))


def test_potential_energy_is_the_closed_form_per_walker():
    g = torch.Generator().manual_seed(4)
    harmonic = sd.langevin.underdamped(sd.potentials.Harmonic(1.7), gamma=1.0, kT=1.0)
    well = sd.langevin.underdamped(sd.potentials.DoubleWell(barrier=1.5), gamma=1.0, kT=1.0)
    both = sd.langevin.underdamped(
        [sd.potentials.Harmonic(1.7), sd.potentials.DoubleWell(barrier=1.5)], force_groups=True
    )
    for shape in [(5, 1), (5, 3), (4, 2, 3)]:
        q = torch.randn(shape, generator=g, dtype=torch.float64) * 1.5
        state = {"q": q, "p": torch.randn(shape, generator=g, dtype=torch.float64)}
        x = q.reshape(shape[0], -1).numpy()
        u_harm = 0.5 * 1.7**2 * (x * x).sum(axis=1)
        u_well = 1.5 * ((x * x - 1.0) ** 2).sum(axis=1)
        for system, expected in [(harmonic, u_harm), (well, u_well), (both, u_harm + u_well)]:
            u = sd.langevin.potential_energy(state, system)
            assert u.shape == (shape[0],) and u.dtype == torch.float64
            np.testing.assert_allclose(u.numpy(), expected, rtol=1e-14, atol=1e-14)
    # the minima of the double well and the origin of the harmonic well have zero energy
    ones = {"q": torch.tensor([[1.0, -1.0]], dtype=torch.float64)}
    assert float(sd.langevin.potential_energy(ones, well)) == 0.0
    assert float(sd.langevin.potential_energy({"q": torch.zeros(1, 2)}, harmonic)) == 0.0


def test_mean_potential_energy_under_baoab_is_equipartition():
    # BAOAB samples harmonic positions exactly at any stable h: <U> = d kT / 2
    omega, kT, dim = 2.0, 0.7, 3
    system = sd.langevin.underdamped(sd.potentials.Harmonic(omega), gamma=1.0, kT=kT)
    y0 = system.initial_state(4000, dim=dim, generator=torch.Generator().manual_seed(0))
    u = sd.Running(lambda t, s: sd.langevin.potential_energy(s, system), "U", burn_in=100)
    res = sd.integrate(system.integrator("BAOAB"), y0, h=0.4, steps=400, seed=3, observers=[u])
    per_walker = res.finals["U"]["mean"].numpy()
    assert per_walker.shape == (4000,)
    se = per_walker.std(ddof=1) / math.sqrt(len(per_walker))
    assert abs(per_walker.mean() - dim * kT / 2) < 4 * se, (per_walker.mean(), se)
    # and resolves the kinetic energy's BAOAB bias (1 - h^2 omega^2 / 4) had U read p for q
    assert abs(per_walker.mean() - dim * kT * (1 - 0.16) / 2) > 4 * se
