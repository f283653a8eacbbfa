"""Clean errors from the Python API: states that cannot run, objects that are not integrators,
and a field that raises, each with the library's own error type and an exact message."""

from __future__ import annotations

import pytest
import torch

import splitsde as sd
from splitsde.runtime.integrate import IntegratorTypeError


@pytest.fixture(scope="module")
def integ():
    return sd.langevin.underdamped(sd.potentials.Harmonic(1.0)).integrator("BAOAB")


def _f64(*shape):
    return torch.zeros(*shape, dtype=torch.float64)


@pytest.mark.parametrize(
    ("state", "message"),
    [
        (
            {"q": _f64(4, 2), "p": _f64(5, 2)},
            "block p has 5 walkers (shape (5, 2)) but block q has 4 (shape (4, 2)); every block "
            "needs the same number of walkers (first dimension)",
        ),
        (
            {"q": _f64(4, 2), "p": _f64(4, 3)},
            "block p of shape (4, 3) is updated from a value computed from q of shape (4, 2) in "
            "sub-step 0 (B[1/2]), which does not broadcast to (4, 3); give the blocks matching "
            "shapes",
        ),
        (
            {"q": torch.zeros(4, 2, device="meta"), "p": torch.zeros(4, 2, device="meta")},
            "block q is on the meta device, which has shapes but no data; create the state on a "
            "real device (cpu, cuda, ...)",
        ),
        (
            {"q": _f64(0, 2), "p": _f64(0, 2)},
            "block q has 0 walkers (shape (0, 2)); give at least one",
        ),
        (
            {"q": torch.full((2, 1), float("nan"), dtype=torch.float64), "p": _f64(2, 1)},
            "the initial state has non-finite values in block q",
        ),
        ([_f64(2, 1), _f64(2, 1)], "a state is a mapping block name -> tensor, got a list"),
    ],
)
def test_states_that_cannot_run_are_refused(integ, state, message):
    with pytest.raises(sd.StateError) as err:
        sd.integrate(integ, state, h=0.1, steps=3, seed=0)
    assert str(err.value) == message


def test_a_block_updated_from_a_block_of_another_shape():
    q, p = sd.blocks("q p")
    sde = sd.SDE([q, p], {"A": sd.Flow({q: p})})
    integ = sd.System(sde).integrator("A")
    with pytest.raises(sd.StateError) as err:
        sd.integrate(integ, {"q": _f64(3, 2), "p": _f64(3, 5)}, h=0.1, steps=1)
    assert str(err.value) == (
        "block q of shape (3, 2) is updated from block p of shape (3, 5) in sub-step 0 "
        "(A[1]), which does not broadcast to (3, 2); give the blocks matching shapes"
    )
    # broadcasting to the target's shape is fine (one value per walker against a vector)
    ok = sd.integrate(integ, {"q": _f64(3, 2), "p": torch.ones(3, 1, dtype=torch.float64)},
                      h=0.5, steps=2)  # fmt: skip
    assert torch.equal(ok.final["q"], torch.ones(3, 2, dtype=torch.float64))


def test_not_an_integrator(integ):
    system = sd.langevin.underdamped(sd.potentials.Harmonic(1.0))
    y0 = system.initial_state(2)
    with pytest.raises(IntegratorTypeError) as err:
        sd.integrate("BAOAB", y0, h=0.1, steps=2)
    assert str(err.value) == (
        "integrate runs a splitsde Integrator, got a builtins.str; build one from a system: "
        "system.integrator('BAOAB')"
    )
    with pytest.raises(IntegratorTypeError, match=r"LangevinSystem; call its \.integrator\(word\)"):
        sd.integrate(system, y0, h=0.1, steps=2)
    with pytest.raises(IntegratorTypeError, match=r"got a builtins\.NoneType \(build one with"):
        sd.integrate(None, y0, h=0.1, steps=2)
    assert isinstance(err.value, sd.SplitsdeError) and isinstance(err.value, TypeError)


def test_an_openmm_integrator_is_sent_to_an_openmm_simulation():
    pytest.importorskip("openmm")
    from splitsde.backends.openmm import LangevinSplittingIntegrator

    system = sd.langevin.underdamped(sd.potentials.Harmonic(1.0))
    y0 = system.initial_state(2)
    omm = LangevinSplittingIntegrator("BAOAB", timestep=0.002, temperature=300, friction=1.0)
    with pytest.raises(IntegratorTypeError) as err:
        sd.integrate(omm, y0, h=0.1, steps=2)
    assert str(err.value) == (
        "integrate runs a splitsde Integrator; got a "
        "splitsde.backends.openmm.LangevinSplittingIntegrator, which is an OpenMM integrator: "
        "run it with an OpenMM Simulation or Context (openmm.app.Simulation(topology, system, "
        "integrator).step(n)), or use system.integrator(word) for the torch backend"
    )


def test_openmm_integrators_are_recognised_without_importing_openmm():
    fake = type("LangevinMiddleIntegrator", (), {"__module__": "openmm.openmm"})()
    with pytest.raises(IntegratorTypeError, match="which is an OpenMM integrator"):
        sd.integrate(fake, {"q": _f64(1, 1)}, h=0.1, steps=1)


def _raising_at(t_fail: float):
    q, p = sd.blocks("q p")
    F = sd.Field("F", [q], time=True)
    sde = sd.SDE([q, p], {"A": sd.Flow({q: p}), "B": sd.Flow({p: F()})})

    def force(x, t):
        if t > t_fail:
            raise RuntimeError("lost connection to the force server")
        return -x

    return sd.System(sde, fields={"F": force}).integrator("BAB")


def test_a_field_that_raises_is_a_field_error_naming_the_field_and_the_step():
    integ = _raising_at(1.02)  # the step from t = 1.0 evaluates F at 1.0 and 1.05
    y0 = {"q": torch.ones(2, 1), "p": torch.zeros(2, 1)}
    with pytest.raises(sd.FieldError) as err:
        sd.integrate(integ, y0, h=0.1, steps=30, seed=0)
    assert str(err.value) == (
        "step 10 (t = 1): field F raised RuntimeError: lost connection to the force server"
    )
    assert (err.value.field, err.value.step) == ("F", 10)
    assert isinstance(err.value.__cause__, RuntimeError)
    assert "stability" not in str(err.value)
    # in the first (checked) step too
    with pytest.raises(sd.FieldError, match=r"^step 0 \(t = 0\): field F raised RuntimeError"):
        sd.integrate(_raising_at(-1.0), y0, h=0.1, steps=30, seed=0)


def test_a_field_inside_a_flow_map_that_raises_is_named():
    from splitsde.interop.torchdiffeq import ODESolver

    q = sd.Block("q")
    G = sd.Field("G", [q])
    sde = sd.SDE([q], {"N": sd.Flow({q: G()}, solver=ODESolver("rk4"))})

    def g(x):
        raise ValueError("bad input")

    integ = sd.System(sde, fields={"G": g}).integrator("N")
    with pytest.raises(sd.FieldError, match=r"step 0 \(t = 0\): field G raised ValueError"):
        sd.integrate(integ, {"q": _f64(2, 1)}, h=0.1, steps=3)


def test_keyboard_interrupt_in_a_field_is_not_wrapped():
    q, p = sd.blocks("q p")
    F = sd.Field("F", [q])
    sde = sd.SDE([q, p], {"A": sd.Flow({q: p}), "B": sd.Flow({p: F()})})

    def force(x):
        raise KeyboardInterrupt

    integ = sd.System(sde, fields={"F": force}).integrator("BAB")
    with pytest.raises(KeyboardInterrupt):
        sd.integrate(integ, {"q": _f64(2, 1), "p": _f64(2, 1)}, h=0.1, steps=3)
