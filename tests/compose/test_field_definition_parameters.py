"""A field whose symbolic definition uses a parameter lowers to working torch code."""

import math

import sympy
import torch

import splitsde as sd


def _sde():
    q, p = sd.blocks("q p")
    om, a = sd.parameters("omega a", positive=True)
    F = sd.Field("F", [q], definition=-(om**2) * sympy.sqrt(a) * sympy.exp(a - 4) * q)
    return sd.SDE([q, p], {"A": sd.Flow({q: p}), "B": sd.Flow({p: F()})})


def test_parameter_in_definition_with_float_values():
    integ = sd.Integrator(_sde(), "BAB", params={"omega": 1.5, "a": 4.0})
    h = 0.1
    y = integ.step({"q": torch.tensor([1.0]), "p": torch.tensor([0.5])}, 0.0, h)
    # velocity Verlet by hand: F(q) = -k q with k = omega^2 sqrt(a) e^(a-4) = 2 omega^2
    k = 2 * 1.5**2
    p_half = 0.5 - h / 2 * k * 1.0
    q1 = 1.0 + h * p_half
    p1 = p_half - h / 2 * k * q1
    assert math.isclose(float(y["q"]), q1, rel_tol=1e-14)
    assert math.isclose(float(y["p"]), p1, rel_tol=1e-14)


def test_parameter_in_definition_keeps_float32():
    integ = sd.Integrator(_sde(), "BAB", params={"omega": 1.5, "a": 2.0})
    state = {"q": torch.ones(3, dtype=torch.float32), "p": torch.zeros(3, dtype=torch.float32)}
    y = integ.step(state, 0.0, 0.1)
    assert y["q"].dtype == torch.float32 and y["p"].dtype == torch.float32
