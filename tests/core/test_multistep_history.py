"""Multistep history in the core: past field values carried by the program.

References: the closed-form exponential Adams-Bashforth-2 (ETD2) coefficients of Cox & Matthews
(J. Comput. Phys. 176, 2002) for a constant linear part; a checkpointed run resumed bit for bit.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import splitsde as sd
from splitsde.compose.program import Recall
from splitsde.symbolic.expint import ExponentialMultistep, GridTooShortError

z = sd.Block("z")
a = sd.Parameter("a", positive=True)


def _integrator(order: int, **kw) -> sd.Integrator:
    field = sd.Field("F", [z])
    sde = sd.SDE([z], {"N": sd.Flow({z: -a * z + field()})})
    return sd.Integrator(
        sde,
        "N",
        {"a": 1.7},
        {"F": lambda v: torch.sin(3 * v) + v**2 / 4},
        solvers={"N": ExponentialMultistep(order, "t", **kw)},
    )


def phi1(x: float) -> float:
    return math.expm1(x) / x


def phi2(x: float) -> float:
    return (math.expm1(x) - x) / x**2


def test_etd2_matches_the_closed_form_coefficients():
    integ = _integrator(1)
    prog = integ.program
    assert [type(s).__name__ for s in prog.statements].count("Recall") == 1
    assert prog.evaluations_per_step() == 1 and len(prog.carry) == 1
    h, n = 0.05, 40
    y0 = torch.linspace(-1, 1, 7)[:, None]
    res = sd.integrate(integ, {"z": y0}, h=h, steps=n, seed=0)
    f = lambda v: torch.sin(3 * v) + v**2 / 4  # noqa: E731
    x, prev = y0.clone(), None
    e, ah = math.exp(-1.7 * h), -1.7 * h
    for k in range(n):
        u = f(x)
        if k == 0:  # warm start: exponential Euler (ETD1)
            x = e * x + h * phi1(ah) * u
        else:
            x = e * x + h * (phi1(ah) + phi2(ah)) * u - h * phi2(ah) * prev
        prev = u
    assert torch.allclose(res.final["z"], x, rtol=1e-12, atol=1e-13)
    assert res.nfe == n


def test_global_order_of_etd2():
    integ = _integrator(1)
    assert integ.weak_order == 2
    y0 = {"z": torch.tensor([[0.3], [-0.8]])}
    ref = sd.integrate(_integrator(3), y0, h=1 / 1280, steps=1280, seed=0).final["z"]
    errs = []
    steps = [20, 40, 80]
    for n in steps:
        out = sd.integrate(integ, y0, h=1 / n, steps=n, seed=0).final["z"]
        errs.append(float((out - ref).abs().max()))
    slope = -np.polyfit(np.log(steps), np.log(errs), 1)[0]
    assert abs(slope - 2) < 0.3, errs


@pytest.mark.parametrize("order", [1, 2, 3])
def test_local_order_with_exact_history(order):
    """One step of order r from exact past values: local error O(h^(r+2)) on
    z' = -a z + sin(3 t) (exact solution in closed form). The lower-order warm start of a run
    has local error O(h^2) in its first step, so a run's global order is min(r + 1, 2) unless
    the field barely changes at the start (as in diffusion models, see the DEIS tests)."""
    field = sd.Field("F", [], time=True)
    sde = sd.SDE([z], {"N": sd.Flow({z: -a * z + field()})})
    integ = sd.Integrator(
        sde,
        "N",
        {"a": 1.7},
        {"F": lambda t: torch.tensor([math.sin(3 * t)])},
        solvers={"N": ExponentialMultistep(order, "t")},
    )
    assert integ.weak_order == order + 1

    def exact(t0: float, t1: float, z0: float) -> float:
        # z(t) = e^{-a t} (z0 e^{a t0} + int_{t0}^{t} e^{a s} sin 3s ds)
        def prim(s: float) -> float:
            return math.exp(1.7 * s) * (1.7 * math.sin(3 * s) - 3 * math.cos(3 * s)) / 11.89

        return math.exp(-1.7 * t1) * (z0 * math.exp(1.7 * t0) + prim(t1) - prim(t0))

    errs, hs = [], [0.02, 0.01, 0.005, 0.0025]
    for h in hs:
        times = 0.3 + h * np.arange(order + 2)
        state = (torch.tensor([[0.5]]),)
        run = integ.prepare(state, times, sd.ZeroNoise())
        k = order  # the first step that uses the full history
        carry = tuple(torch.tensor([[math.sin(3 * times[k - j])]]) for j in range(1, order + 1))
        out, _ = run.call(k, state, carry)
        errs.append(abs(float(out[0]) - exact(times[k], times[k + 1], 0.5)))
    slope = np.polyfit(np.log(hs), np.log(errs), 1)[0]
    assert abs(slope - (order + 2)) < 0.3, errs


def test_checkpoint_resume_carries_the_history(tmp_path):
    integ = _integrator(3)
    y0 = {"z": torch.linspace(-1, 1, 5)[:, None]}
    full = sd.integrate(integ, y0, h=0.02, steps=60, seed=0).final["z"]
    path = tmp_path / "run.pt"
    sd.integrate(integ, y0, h=0.02, steps=60, seed=0, checkpoint=path, checkpoint_every=25)
    # resume from the checkpoint written at step 50 (the last periodic one before the end)
    part = sd.integrate(integ, y0, h=0.02, steps=60, seed=0, checkpoint=path, resume=True)
    assert torch.equal(part.final["z"], full)


def test_history_slots_shift_and_start_at_zero():
    integ = _integrator(3)
    recalls = [s for s in integ.program.statements if isinstance(s, Recall)]
    assert [r.lag for r in recalls] == [1, 2, 3]
    (hist,) = integ.program.history
    assert hist.depth == 3 and hist.slots == (0, 1, 2)
    with pytest.raises(GridTooShortError, match="at least 4 steps"):
        sd.integrate(integ, {"z": torch.zeros(1, 1)}, h=0.1, steps=3, seed=0)
