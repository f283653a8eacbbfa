"""Euler-type updates lower to in-place axpy operations (regression test for the codegen)."""

import sympy
import torch

import splitsde as sd
from splitsde.runtime.noise import FixedNoise
from splitsde.symbolic.solvers import EulerMaruyama


def test_euler_update_is_collected_per_tensor_and_lowered_in_place():
    x, m = sd.blocks("x m")
    a, b = sd.parameters("a b", positive=True)
    F = sd.Field("F", [x, m], outputs=["x", "m"])
    sde = sd.SDE(
        [x, m],
        {
            "B": sd.Flow({m: a * (x + b * m) + F["m"]}, {m: sympy.sqrt(a)}),
            "A": sd.Flow({x: -m + F["x"]}),
        },
    )
    integ = sd.Integrator(
        sde,
        "BA",
        {"a": 0.7, "b": 1.3},
        {"F": lambda x, m: (-x, -m)},
        solvers={"A": EulerMaruyama(), "B": EulerMaruyama()},
    )
    state = {"x": torch.tensor([[0.3, -1.0]]), "m": torch.tensor([[2.0, 0.5]])}
    xi = torch.tensor([[0.1, -0.2]])
    run = integ.prepare(tuple(state.values()), [0.0, 0.1], FixedNoise([xi]))
    step = run.source.split("def _step_checked")[0]
    assert "b_m.mul_(" in step and "b_x.add_(" in step
    assert "b_m = (" not in step and "b_x = (" not in step
    out = integ.step(state, 0.0, 0.1, noise=[xi])
    h, x0, m0 = 0.1, state["x"], state["m"]
    m1 = m0 + h * (0.7 * (x0 + 1.3 * m0) - m0) + (0.7 * h) ** 0.5 * xi
    x1 = x0 + h * (-m1 - x0)
    torch.testing.assert_close(out["m"], m1, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(out["x"], x1, rtol=1e-6, atol=1e-6)
