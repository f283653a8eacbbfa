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
#: Points inside each function's real domain (argument tuples for atan2).
POINTS = {
    "log": (0.3, 1.0, 4.5),
    "sqrt": (0.3, 1.0, 4.5),
    "asin": (-0.7, 0.1, 0.9),
    "acos": (-0.7, 0.1, 0.9),
    "acosh": (1.2, 2.0, 4.5),
    "atanh": (-0.7, 0.1, 0.9),
    "loggamma": (0.3, 1.0, 4.5),
    "atan2": ((-1.3, 0.4), (0.4, -2.0), (-0.5, -0.2)),
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
            vs = v if isinstance(v, tuple) else (v,)
            want = float(sympy.N(CALLS[name](*(sympy.Float(a, 30) for a in vs)), 20))
            args = [torch.tensor(a, dtype=torch.float64) if backend == "torch" else a for a in vs]
            got = float(fn(*args))
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


def test_lepton_templates_of_the_inverse_hyperbolic_and_rounding_functions():
    # Lepton's ^ is Python's **; the rest of these templates is valid Python over math
    ns = {k: getattr(math, k) for k in ("log", "sqrt", "atan2", "floor", "ceil")}
    for name, v in [
        ("asinh", -1.3),
        ("acosh", 2.0),
        ("atanh", 0.4),
        ("atan2", (-1.3, 0.4)),
        ("floor", -1.3),
        ("ceiling", -1.3),
    ]:
        vs = v if isinstance(v, tuple) else (v,)
        names = sympy.symbols(f"a0:{len(vs)}")
        text = lepton(getattr(sympy, name)(*names)).replace("^", "**")
        got = eval(text, {**ns, **{str(n): a for n, a in zip(names, vs)}})
        want = float(sympy.N(getattr(sympy, name)(*(sympy.Float(a, 30) for a in vs)), 20))
        assert got == pytest.approx(want, rel=1e-14), name


def test_lambdify_prints_the_table_not_sympys_own_spelling():
    # sympy's math printer writes sign with copysign and its torch printer has no erfc
    v = torch.tensor([[-1.5, 0.0], [0.25, 2.0]], dtype=torch.float64)
    e = sympy.sign(x) * sympy.erfc(x)
    with pytest.raises(sympy.printing.codeprinter.PrintMethodNotImplementedError):
        sympy.lambdify([x], e, modules="torch")
    got = lambdify([x], e, "torch")(v)
    torch.testing.assert_close(got, torch.sign(v) * torch.special.erfc(v), rtol=0, atol=0)
    for backend in ("numpy", "math"):
        got = [float(lambdify([x], e, backend)(a)) for a in (-1.5, 0.0, 2.0)]
        assert got == pytest.approx([-math.erfc(-1.5), 0.0, math.erfc(2.0)], rel=1e-15, abs=0)
    with pytest.raises(UnsupportedFunctionError, match="erfi cannot be expressed in the torch"):
        lambdify([x], sympy.Matrix([[sympy.erfi(x)]]), "torch")
    with pytest.raises(ValueError, match="torch, numpy and math"):
        lambdify([x], e, "lepton")


def test_field_definitions_with_sign_max_and_heaviside_act_on_a_batch():
    import splitsde as sd

    z = sd.Block("z")
    v = torch.tensor([[-1.5, 0.0, 2.0], [0.3, -0.2, 0.0]], dtype=torch.float64)
    cases = [
        (sympy.sign(z), torch.sign(v)),
        (sympy.sign(z) * sympy.Abs(z) ** 3, torch.sign(v) * v.abs() ** 3),
        (sympy.Max(z, 0) + sympy.Min(1, 2 * z), v.clamp(min=0) + (2 * v).clamp(max=1)),
        (sympy.Heaviside(z), torch.heaviside(v, torch.tensor(0.5, dtype=torch.float64))),
    ]
    for definition, want in cases:
        field = sd.Field("F", [z], definition=definition)
        integ = sd.Integrator(sd.SDE([z], {"N": sd.Flow({z: field()})}), "N", {})
        got = integ.field_function("F")(v)
        torch.testing.assert_close(got, want, rtol=0, atol=0, msg=str(definition))
        # and through a step: z + h F(z), with the same values on every walker
        out = sd.integrate(integ, {"z": v}, h=0.1, steps=1)
        torch.testing.assert_close(out.final["z"], v + 0.1 * want, rtol=1e-15, atol=0)


def _erfc_energy_sde():
    import splitsde as sd

    q, p = sd.blocks("q p")
    (a,) = sd.parameters("a", positive=True)
    flows = {
        "A": sd.Flow({q: p}),
        "B": sd.Flow({p: 2 * a * sympy.exp(-(q**2)) / sympy.sqrt(sympy.pi)}),
    }
    energy = sd.Energy(elementwise=a * sympy.erfc(q) + p**2 / 2, kT=1, momenta=[p])
    return sd.SDE([q, p], flows, energy=energy), q


def test_energy_of_an_sde_uses_the_table_on_a_batch_of_walkers():
    import scipy.special

    import splitsde as sd

    sde, q = _erfc_energy_sde()
    integ = sd.Integrator(sde, "BAB", {"a": 1.7})
    H = sd.energy_function(integ)
    qv = torch.tensor([[-1.2, 0.3], [0.0, 2.5], [0.7, -0.1]], dtype=torch.float64)
    pv = torch.tensor([[0.5, -1.0], [2.0, 0.0], [0.1, 0.3]], dtype=torch.float64)
    want = (1.7 * scipy.special.erfc(qv.numpy()) + pv.numpy() ** 2 / 2).sum(-1)
    np.testing.assert_allclose(H({"q": qv, "p": pv}).numpy(), want, rtol=1e-15)
    refused = sd.SDE(
        sde.blocks,
        dict(sde.flows),
        energy=sd.Energy(elementwise=sympy.erfi(q) + sde.blocks[1] ** 2, kT=1),
    )
    with pytest.raises(UnsupportedFunctionError, match="erfi cannot be expressed in the torch"):
        sd.energy_function(sd.Integrator(refused, "BAB", {"a": 1.7}))


def test_sympy_potential_uses_the_table_on_a_batch_of_walkers():
    import scipy.special

    import splitsde as sd

    pot = sd.potentials.SympyPotential("erfc(q) + q**2/2")
    qv = torch.tensor([[-1.2, 0.3], [0.0, 2.5], [0.7, -0.1]], dtype=torch.float64)
    qn = qv.numpy()
    u = scipy.special.erfc(qn) + qn**2 / 2
    np.testing.assert_allclose(pot.energy(qv).numpy(), u.sum(-1), rtol=1e-15)
    # -U' = 2 e^{-q^2}/sqrt(pi) - q; U'' = 4 q e^{-q^2}/sqrt(pi) + 1
    f = 2 * np.exp(-(qn**2)) / math.sqrt(math.pi) - qn
    np.testing.assert_allclose(pot.force(qv).numpy(), f, rtol=1e-14, atol=1e-15)
    lap = 4 * qn * np.exp(-(qn**2)) / math.sqrt(math.pi) + 1
    np.testing.assert_allclose(pot.laplacian(qv).numpy(), lap.sum(-1), rtol=1e-14)
    np.testing.assert_allclose(pot.u(qn), u, rtol=1e-15)
    with pytest.raises(UnsupportedFunctionError, match="erfi cannot be expressed in the torch"):
        sd.potentials.SympyPotential(sympy.erfi(sympy.Symbol("q", real=True)))


def test_linear_sde_probe_uses_the_table():
    import splitsde as sd
    from splitsde.analysis import linear_sde

    (y,) = sd.blocks("y")
    drift = -(sympy.erfc(sympy.Rational(1, 2)) + sympy.erf(sd.t)) * y + sympy.sign(sd.t - 1)
    sde = sd.SDE([y], {"B": sd.Flow({y: drift}), "O": sd.Flow({}, {y: sympy.erfc(sd.t)})})
    lin = linear_sde(sd.Integrator(sde, "BO", {}))
    for tt in (0.4, 1.6):
        A, b, K = lin.coefficients(tt)
        assert A[0, 0] == pytest.approx(-(math.erfc(0.5) + math.erf(tt)), rel=1e-15)
        assert b[0] == math.copysign(1.0, tt - 1)
        assert K[0, 0] == pytest.approx(math.erfc(tt) ** 2, rel=1e-15)
    refused = sd.SDE([y], {"B": sd.Flow({y: -sympy.erfi(sd.t) * y})})
    with pytest.raises(UnsupportedFunctionError, match="erfi cannot be expressed in the torch"):
        linear_sde(sd.Integrator(refused, "B", {}))


def test_verify_observable_uses_the_table():
    import scipy.special

    import splitsde as sd
    from splitsde.apps.cli.verify import _observable

    (y,) = sd.blocks("y")
    integ = sd.Integrator(sd.SDE([y], {"B": sd.Flow({y: -y})}), "B", {})
    fn, name, quad = _observable("erfc(y) + sign(y)", integ, None)
    v = torch.tensor([[-1.2], [0.0], [0.8]], dtype=torch.float64)
    want = scipy.special.erfc(v.numpy()) + np.sign(v.numpy())
    np.testing.assert_allclose(fn({"y": v}).numpy(), want, rtol=1e-15)
    assert name == "erfc(y) + sign(y)" and quad is None
