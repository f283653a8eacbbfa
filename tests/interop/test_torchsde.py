"""torchsde interop: the SDE view, the Brownian noise source, path-wise equality and strong
orders against torchsde solvers and closed forms on the same Brownian path."""

from __future__ import annotations

import math

import numpy as np
import pytest
import sympy
import torch
import torchsde

import splitsde as sd
from splitsde.interop.torchsde import (
    BrownianNoise,
    StateLayout,
    as_torchsde,
    pathwise_report,
    pathwise_strong_order,
)
from splitsde.symbolic.solvers import EulerMaruyama


def _bm(batch: int, dim: int, t1: float, seed: int, levy: str = "none"):
    return torchsde.BrownianInterval(
        0.0,
        t1,
        size=(batch, dim),
        dtype=torch.float64,
        entropy=seed,
        levy_area_approximation=levy,
    )


def test_layout_round_trip():
    state = {"q": torch.randn(4, 3, 2), "p": torch.randn(4, 5)}
    layout = StateLayout.of(["q", "p"], state)
    assert layout.dim == 11 and layout.offsets == {"q": (0, 6), "p": (6, 11)}
    y = layout.flatten(state)
    assert torch.equal(y[:, :6], state["q"].reshape(4, 6))
    back = layout.unflatten(torch.stack([y, 2 * y]))  # leading axes kept
    assert torch.equal(back["q"][1], 2 * state["q"]) and torch.equal(back["p"][0], state["p"])
    with pytest.raises(ValueError, match="event shape"):
        layout.flatten({"q": torch.randn(4, 6), "p": torch.randn(4, 5)})


def test_view_is_the_sum_of_the_flows():
    """Underdamped Langevin with per-particle masses: f = (p/M, F(q) - gamma p) and
    g = (0, sqrt(2 gamma kT M)), checked against the potential's own force."""
    pot = sd.potentials.DoubleWell()
    mass = torch.tensor([1.0, 2.0, 4.0])
    system = sd.langevin.underdamped(pot, gamma=0.7, kT=1.3, mass=mass)
    state = {"q": torch.randn(5, 3), "p": torch.randn(5, 3)}
    view = as_torchsde(system, like=state)
    y = view.layout.flatten(state)
    f, g = view.f_and_g(0.0, y)
    want_f = torch.cat([state["p"] / mass, pot.force(state["q"]) - 0.7 * state["p"]], dim=-1)
    want_g = torch.cat([torch.zeros(5, 3), torch.sqrt(2 * 0.7 * 1.3 * mass).expand(5, 3)], dim=-1)
    torch.testing.assert_close(f, want_f, rtol=1e-14, atol=1e-14)
    torch.testing.assert_close(g, want_g, rtol=1e-14, atol=1e-14)
    torch.testing.assert_close(view.f(0.0, y), want_f, rtol=1e-14, atol=1e-14)
    torch.testing.assert_close(view.g(0.0, y), want_g, rtol=1e-14, atol=1e-14)
    assert view.nfe_by_field == {"F": 2}  # f_and_g shares one evaluation; g needs none
    assert view.noise_type == "diagonal" and view.sde_type == "ito"


def test_view_sums_noise_variances_of_several_flows():
    q = sd.Block("q")
    a, b = sd.parameters("a b", positive=True)
    sde = sd.SDE(
        [q], {"B": sd.Flow({q: -q}), "O": sd.Flow(noise={q: a}), "P": sd.Flow(noise={q: b * q})}
    )
    view = as_torchsde(sde, {"a": 0.6, "b": 0.8}, like={"q": (2,)})
    y = torch.tensor([[1.0, -2.0]])
    torch.testing.assert_close(view.g(0.0, y), torch.sqrt(0.36 + 0.64 * y**2))
    view2 = as_torchsde((sde, {"a": 0.6, "b": 0.8}, {}), like={"q": (2,)})
    torch.testing.assert_close(view2.f(0.0, y), -y)


def test_view_bad_input():
    system = sd.langevin.overdamped(sd.potentials.Harmonic(1.0))
    with pytest.raises(TypeError, match="System, an Integrator"):
        as_torchsde("BO", like={"q": (1,)})
    with pytest.raises(ValueError, match="no shape for block"):
        as_torchsde(system, like={})
    with pytest.raises(ValueError, match="unknown field"):
        as_torchsde(system, fields={"G": lambda x: x}, like={"q": (1,)})
    with pytest.raises(ValueError, match="missing value"):
        as_torchsde(system.sde, {}, like={"q": (1,)})


def _same_path(integ, view, y0, h, steps, seed):
    bm = _bm(next(iter(y0.values())).shape[0], view.layout.dim, h * steps, seed)
    res = sd.integrate(
        integ, y0, h=h, steps=steps, noise=BrownianNoise(integ, bm, like=y0), save_every=1
    )
    ys = torchsde.sdeint(
        view, view.layout.flatten(y0), torch.tensor(res.times), bm=bm, method="euler", dt=h
    )
    ours = view.layout.flatten({k: v.flatten(0, 1) for k, v in res.states.items()})
    return ours.reshape(ys.shape), ys


def test_euler_maruyama_paths_equal_torchsde_euler_overdamped_bo():
    """Overdamped Langevin, word BO (Euler kick then exact noise shear) = Euler-Maruyama:
    the same path as torchsde's Euler on the view, driven by one BrownianInterval. The step
    is dyadic so both query W at the same floating-point times."""
    system = sd.langevin.overdamped(sd.potentials.DoubleWell(), kT=0.5)
    integ = system.integrator("BO")
    y0 = {"q": torch.linspace(-1.0, 1.0, 24).reshape(8, 3)}
    view = as_torchsde(system, like=y0)
    ours, theirs = _same_path(integ, view, y0, 2.0**-6, 64, seed=3)
    assert theirs.shape == (65, 8, 3)
    assert (theirs[-1] - theirs[0]).abs().max() > 0.1  # the path moved
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-12)


def test_euler_maruyama_paths_equal_torchsde_euler_multiplicative_and_timed():
    """A single-flow SDE with multiplicative, time-dependent noise and a time-dependent field,
    solved with solver=EulerMaruyama(): path-wise equal to torchsde's Euler."""
    x, v = sd.blocks("x v")
    k, s = sd.parameters("k s", positive=True)
    S = sd.Field("S", [x], time=True)  # opaque, time-dependent
    flow = sd.Flow(
        {x: v, v: -k * x + S()},
        {v: s * (1 + sd.t) * sympy.cos(x)},
        solver=EulerMaruyama(),
    )
    sde = sd.SDE([x, v], {"E": flow})
    fields = {"S": lambda x_, t_: torch.sin(x_) * math.exp(-t_)}
    integ = sd.Integrator(sde, "E", {"k": 2.0, "s": 0.4}, fields)
    assert pathwise_strong_order(integ) == 0.5
    y0 = {
        "x": torch.randn(6, 2, generator=torch.Generator().manual_seed(0)),
        "v": torch.zeros(6, 2),
    }
    view = as_torchsde(integ, like=y0)
    ours, theirs = _same_path(integ, view, y0, 2.0**-5, 64, seed=11)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-12)


def test_pathwise_report_and_refusal():
    system = sd.langevin.underdamped(sd.potentials.Harmonic(1.0))
    baoab = system.integrator("BAOAB")
    (r,) = pathwise_report(baoab)
    assert (r.letter, r.block, r.consistent) == ("O", "p", False)
    assert "whole path" in r.reason
    assert pathwise_strong_order(baoab) is None
    y0 = system.initial_state(4)
    bm = _bm(4, 2, 1.0, 0)
    with pytest.raises(ValueError, match=r"sub-step 2 \(O on p\) is not path-wise consistent"):
        BrownianNoise(baoab, bm, like=y0)
    em = system.integrator("BAOAB", solvers={"O": EulerMaruyama()})
    assert all(r.consistent for r in pathwise_report(em))
    assert pathwise_strong_order(em) == 1.0
    # law-only use: runs, and the path fixes the result
    noise = BrownianNoise(baoab, bm, like=y0, pathwise=False)
    a = sd.integrate(baoab, y0, h=0.125, steps=8, noise=noise).final["q"]
    b = sd.integrate(baoab, y0, h=0.125, steps=8, noise=noise).final["q"]
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="outside the motion's interval"):
        sd.integrate(em, y0, h=0.25, steps=8, noise=BrownianNoise(em, bm, like=y0))
    with pytest.raises(ValueError, match=r"shape \(batch, 2\)"):
        BrownianNoise(em, _bm(4, 3, 1.0, 0), like=y0)


def test_second_flow_on_a_block_reads_extra_coordinates():
    """dq = a dW1 + b dW2 from two flows: after any number of exact shear steps,
    q(T) = q(0) + a W1(T) + b W2(T) with W1 from bm (the view's columns) and W2 from extra."""
    q = sd.Block("q")
    a, b = sd.parameters("a b", positive=True)
    sde = sd.SDE([q], {"O": sd.Flow(noise={q: a}), "P": sd.Flow(noise={q: b})})
    integ = sd.Integrator(sde, "OPO", {"a": 0.5, "b": 2.0})
    y0 = {"q": torch.zeros(5, 2)}
    bm, extra = _bm(5, 2, 1.0, 1), _bm(5, 2, 1.0, 2)
    with pytest.raises(ValueError, match=r"P:q.*shape \(batch, 2\)"):
        BrownianNoise(integ, bm, like=y0)
    res = sd.integrate(
        integ, y0, h=0.125, steps=8, noise=BrownianNoise(integ, bm, like=y0, extra=extra)
    )
    want = 0.5 * bm(0.0, 1.0) + 2.0 * extra(0.0, 1.0)
    torch.testing.assert_close(res.final["q"], want, rtol=0, atol=1e-13)


def _rms_slope(errors_sq: torch.Tensor, hs: list[float], boot: int = 200) -> tuple[float, float]:
    """Least-squares slope of log RMS error vs log h, and its bootstrap standard error over
    paths (the paths are independent; the step sizes share them)."""
    x = np.log(hs)

    def slope(e):
        return float(np.polyfit(x, 0.5 * np.log(e.mean(1).numpy()), 1)[0])

    g = torch.Generator().manual_seed(0)
    n = errors_sq.shape[1]
    boots = [slope(errors_sq[:, torch.randint(0, n, (n,), generator=g)]) for _ in range(boot)]
    return slope(errors_sq), float(np.std(boots))


def test_strong_order_euler_maruyama_multiplicative_noise_vs_closed_form():
    """Geometric Brownian motion dX = mu X dt + s X dW with Euler-Maruyama: declared strong
    order 1/2; the reference is the closed form X0 exp((mu - s^2/2) T + s W(T)) on the same
    path. Tolerance: 4 bootstrap standard errors of the fitted slope (which must itself be small
    enough to tell 1/2 from 1)."""
    x = sd.Block("x")
    mu, s = sd.parameters("mu s", positive=True)
    sde = sd.SDE([x], {"E": sd.Flow({x: mu * x}, {x: s * x}, solver=EulerMaruyama())})
    integ = sd.Integrator(sde, "E", {"mu": 0.5, "s": 1.0})
    declared = pathwise_strong_order(integ)
    assert declared == 0.5
    n, T = 4000, 1.0
    y0 = {"x": torch.ones(n, 1)}
    bm = _bm(n, 1, T, seed=5)
    exact = torch.exp((0.5 - 0.5) * T + bm(0.0, T))
    hs = [2.0**-k for k in range(4, 9)]
    errs = torch.stack(
        [
            (
                sd.integrate(
                    integ, y0, h=hh, steps=round(T / hh), noise=BrownianNoise(integ, bm, like=y0)
                ).final["x"]
                - exact
            )[:, 0]
            ** 2
            for hh in hs
        ]
    )
    slope, se = _rms_slope(errs, hs)
    assert se < 0.1
    assert abs(slope - declared) < 4 * se, (slope, se)


def test_strong_order_of_a_splitting_word_vs_fine_torchsde_reference():
    """Overdamped Langevin on the double well, word BO (declared path-wise strong order 1 for
    additive noise) against torchsde's strong order 1.5 SRK at dt = 2^-10 on the same path
    (its own error, ~5e-5 RMS by halving dt, is 0.5% of the smallest error measured here).
    Tolerance: 4 bootstrap standard errors of the fitted slope."""
    system = sd.langevin.overdamped(sd.potentials.DoubleWell(), kT=0.5)
    integ = system.integrator("BO")
    declared = pathwise_strong_order(integ)
    assert declared == 1.0
    n, T = 2000, 1.0
    y0 = {"q": torch.full((n, 1), 0.5)}
    view = as_torchsde(system, like=y0)
    bm = _bm(n, 1, T, seed=8, levy="space-time")
    ref = torchsde.sdeint(
        view, view.layout.flatten(y0), torch.tensor([0.0, T]), bm=bm, method="srk", dt=2.0**-10
    )[-1]
    hs = [2.0**-k for k in range(5, 9)]
    errs = torch.stack(
        [
            (
                sd.integrate(
                    integ, y0, h=hh, steps=round(T / hh), noise=BrownianNoise(integ, bm, like=y0)
                ).final["q"]
                - ref
            )[:, 0]
            ** 2
            for hh in hs
        ]
    )
    slope, se = _rms_slope(errs, hs)
    assert se < 0.1
    assert abs(slope - declared) < 4 * se, (slope, se)


def test_strong_order_of_underdamped_words_vs_fine_torchsde_reference():
    """Underdamped Langevin on the double well (gamma = 1, kT = 1/2, M = 1), words BAOAB and
    OBABO with Euler-Maruyama O steps (path-wise consistent; declared strong order 1 for
    additive noise), errors in (q, p) at T = 1 against torchsde's SRK at dt = 2^-9 on the same
    path (its own error, 2.6e-6 RMS by halving dt, is 0.05% of the smallest error measured
    here, ~5e-3 at h = 2^-7). Longer words than BO: the draws of the O steps (one full slice in
    BAOAB, two half slices in OBABO) must read the path over their own slices: reading each
    increment one step late gives slope 0.51 and RMS error 0.13 at h = 2^-7 (checked by
    hand). Tolerance: 4 bootstrap standard errors of the fitted slope (~0.011; measured slopes
    1.02-1.03)."""
    system = sd.langevin.underdamped(sd.potentials.DoubleWell(), gamma=1.0, kT=0.5)
    n, T = 1000, 1.0
    y0 = {"q": torch.full((n, 1), 0.5), "p": torch.zeros(n, 1)}
    view = as_torchsde(system, like=y0)
    bm = _bm(n, view.layout.dim, T, seed=4, levy="space-time")
    ref = torchsde.sdeint(
        view, view.layout.flatten(y0), torch.tensor([0.0, T]), bm=bm, method="srk", dt=2.0**-9
    )[-1]
    hs = [2.0**-k for k in range(3, 8)]
    for word in ("BAOAB", "OBABO"):
        integ = system.integrator(word, solvers={"O": EulerMaruyama()})
        declared = pathwise_strong_order(integ)
        assert declared == 1.0
        errs = torch.stack(
            [
                (
                    view.layout.flatten(
                        sd.integrate(
                            integ,
                            y0,
                            h=hh,
                            steps=round(T / hh),
                            noise=BrownianNoise(integ, bm, like=y0),
                        ).final
                    )
                    - ref
                )
                .pow(2)
                .sum(-1)
                for hh in hs
            ]
        )
        slope, se = _rms_slope(errs, hs)
        assert se < 0.1
        assert abs(slope - declared) < 4 * se, (word, slope, se)
        assert errs[-1].mean().sqrt() < 0.01  # converging to the reference, not just scaling
