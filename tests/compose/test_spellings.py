"""One table of function spellings per backend: complete, correct against sympy's own
evaluation, and explicit about what a backend cannot express."""

from __future__ import annotations

import math

import numpy as np
import pytest
import sympy
import torch

from splitsde.backends.openmm_lepton import lepton
from splitsde.compose.codegen import _Printer
from splitsde.symbolic.numeric import phi1
from splitsde.symbolic.spellings import (
    BACKENDS,
    FUNCTIONS,
    UnsupportedFunctionError,
    lambdify,
    namespace,
    spelling,
)

x = sympy.Symbol("x", real=True)

#: A sympy expression for every registered name (sqrt is a power in sympy).
CALLS = {name: getattr(sympy, name, None) for name in FUNCTIONS}
CALLS["phi1"] = phi1
CALLS["sqrt"] = sympy.sqrt
#: Points inside each function's real domain.
POINTS = {
    "log": (0.3, 1.0, 4.5),
    "sqrt": (0.3, 1.0, 4.5),
    "asin": (-0.7, 0.1, 0.9),
    "acos": (-0.7, 0.1, 0.9),
}
DEFAULT = (-1.3, 0.4, 2.1)


def test_every_function_is_spelled_or_marked_unsupported_in_every_backend():
    for name, row in FUNCTIONS.items():
        assert set(row) == set(BACKENDS), name
        for backend in BACKENDS:
            if row[backend] is None:
                with pytest.raises(UnsupportedFunctionError, match=f"{name}.*{backend}"):
                    spelling(backend, name)
            else:
                assert spelling(backend, name) == row[backend]
    for backend in BACKENDS:
        with pytest.raises(UnsupportedFunctionError, match=f"{backend} backend.*besselj"):
            spelling(backend, "besselj")


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_python_spellings_agree_with_sympy(name):
    for backend in ("torch", "numpy", "math"):
        if FUNCTIONS[name][backend] is None:
            continue
        fn = namespace(backend)[name]
        for v in POINTS.get(name, DEFAULT):
            want = float(sympy.N(CALLS[name](sympy.Float(v, 30)), 20))
            arg = torch.tensor(v, dtype=torch.float64) if backend == "torch" else v
            got = float(fn(arg))
            assert got == pytest.approx(want, rel=1e-13, abs=1e-15), (backend, name, v)


def test_erfi_evaluates_in_numpy_and_math_and_is_refused_where_not_defined():
    # sympy's own lambdify prints erfi(x) into a namespace without it: a NameError at call time
    with pytest.raises(NameError):
        sympy.lambdify([x], sympy.erfi(x), modules="math")(0.5)
    want = float(sympy.N(sympy.erfi(sympy.Rational(1, 2)), 20))
    for backend in ("numpy", "math"):
        assert float(lambdify([x], sympy.erfi(x), backend)(0.5)) == pytest.approx(want, rel=1e-14)
    with pytest.raises(UnsupportedFunctionError, match="erfi cannot be expressed in the lepton"):
        lepton(sympy.erfi(x))
    q = sympy.Symbol("q")
    pr = _Printer({q: "b_q"})
    with pytest.raises(UnsupportedFunctionError, match="erfi cannot be expressed in the torch"):
        pr(sympy.erfi(q))


def test_torch_step_source_spells_from_the_table():
    q = sympy.Symbol("q")
    pr = _Printer({q: "b_q"})
    assert pr(sympy.erf(q)) == "torch.special.erf(b_q)"
    assert pr(sympy.Abs(q)) == "torch.abs(b_q)"
    ns = {"torch": torch, "math": math, "b_q": torch.tensor([-0.5, 0.25], dtype=torch.float64)}
    got = eval(pr(sympy.erfc(q) + sympy.sign(q)), ns)
    want = [math.erfc(-0.5) - 1.0, math.erfc(0.25) + 1.0]
    assert got.tolist() == pytest.approx(want, rel=1e-15)


def test_lepton_spellings():
    assert lepton(sympy.Abs(x)) == "abs(x)"
    assert lepton(sympy.erf(x)) == "erf(x)"
    assert lepton(phi1(-2 * x)) == "select(-2*x, (exp(-2*x) - 1)/(-2*x), 1)"
    # sign through Lepton's step (1 at 0): evaluate the printed form with step defined alike
    text = lepton(sympy.sign(x))
    for v in (-2.0, 0.0, 3.0):
        step = lambda a: 1.0 if a >= 0 else 0.0  # noqa: E731
        assert eval(text, {"step": step, "x": v}) == float(np.sign(v))


def test_field_definitions_use_the_table():
    import splitsde as sd

    z = sd.Block("z")
    refused = sd.Field("F", [z], definition=sympy.erfi(z))
    with pytest.raises(UnsupportedFunctionError, match="erfi cannot be expressed in the torch"):
        sd.Integrator(sd.SDE([z], {"N": sd.Flow({z: refused()})}), "N", {})
    # erf on a batch of walkers (math.erf would take one number only); one Euler step
    field = sd.Field("F", [z], definition=sympy.erf(z))
    integ = sd.Integrator(sd.SDE([z], {"N": sd.Flow({z: field()})}), "N", {})
    z0 = [-0.8, 0.1, 1.7]
    out = sd.integrate(
        integ, {"z": torch.tensor([[v] for v in z0], dtype=torch.float64)}, h=0.1, steps=1
    )
    want = [v + 0.1 * math.erf(v) for v in z0]
    assert out.final["z"][:, 0].tolist() == pytest.approx(want, rel=1e-15)


def test_implemented_functions_keep_their_own_callable():
    from sympy.utilities.lambdify import implemented_function

    g = implemented_function("g_table", lambda v: 2.0 * v)
    assert lambdify([x], g(x) + sympy.exp(x), "numpy")(0.5) == pytest.approx(1.0 + math.exp(0.5))
