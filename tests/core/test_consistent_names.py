"""One name, one meaning: kinetic temperature with explicit units, one default reduction, one
flat state layout, ``.blocks`` as Block symbols with names in ``.block_names``, one
``Estimate``, ``weak_order`` a property (``weak_order_for(process)`` on samplers,
``estimate_weak_order`` for the Monte Carlo fit), one observer signature, one grid direction
per clock."""

from __future__ import annotations

import importlib
import inspect
import math

import numpy as np
import pytest
import scipy.stats
import torch

import splitsde as sd
import splitsde.diffusion as dm
from splitsde.compose.reduce import Reduction
from splitsde.diffusion.pfode import PFODEPlan
from splitsde.diffusion.protocols import PlanProtocol, SamplerProtocol
from splitsde.diffusion.samplers import Plan
from splitsde.langevin.units import OPENMM_UNITS, REDUCED_UNITS, Units
from splitsde.problems.harmonic import harmonic
from splitsde.runtime.integrator import Integrator, StateError
from splitsde.runtime.layout import BlockLayout, StateLayout
from splitsde.runtime.timegrid import time_grid
from splitsde.symbolic.symbols import Block


def test_kinetic_temperature_units_are_explicit():
    """2K/N_dof by hand: kT in energy units by default, kelvin with a Boltzmann constant."""
    p = torch.tensor([[1.0, 2.0, 2.0], [0.0, 3.0, 0.0]])
    mass = torch.tensor([1.0, 2.0, 4.0])
    K = 0.5 * (p * p / mass).sum(-1)  # [0.5 + 1 + 0.5, 2.25] = [2.0, 2.25]
    kT = sd.langevin.kinetic_temperature({"p": p}, mass)
    torch.testing.assert_close(kT, 2 * K / 3, rtol=0, atol=0)
    torch.testing.assert_close(kT, torch.tensor([4 / 3, 1.5]), rtol=1e-15, atol=0)
    kelvin = sd.langevin.kinetic_temperature({"p": p}, mass, 1, units=OPENMM_UNITS)
    torch.testing.assert_close(kelvin, 2 * K / (2 * 8.31446261815324e-3), rtol=1e-15, atol=0)
    assert REDUCED_UNITS.temperature == "kT, reduced units" and OPENMM_UNITS.temperature == "K"
    assert sd.langevin.temperature_from_kinetic_energy(3.0, 2, Units(boltzmann=0.5)) == 6.0
    with pytest.raises(ValueError, match="no kinetic degrees of freedom left"):
        sd.langevin.kinetic_temperature({"p": p}, mass, removed_dof=3)


def test_openmm_kinetic_temperature_uses_the_same_formula():
    openmm = pytest.importorskip("openmm")
    from splitsde.backends.openmm import kinetic_temperature

    system = openmm.System()
    for _ in range(3):
        system.addParticle(1.0)
    ke = np.array([1.0, 2.5])
    np.testing.assert_array_equal(
        kinetic_temperature(ke, system),
        sd.langevin.temperature_from_kinetic_energy(ke, 9, OPENMM_UNITS),
    )


def test_reduce_and_reduction_share_their_default():
    assert sd.reduce("BAOAB").reduction == Reduction()
    system = sd.langevin.underdamped(sd.potentials.Harmonic(1.0))
    a, b = system.integrator(sd.reduce("OBABO")), system.integrator("OBABO")
    assert a.evaluations_per_step == b.evaluations_per_step == 1


def test_blocks_are_symbols_and_names_are_block_names(tmp_path):
    system = sd.langevin.underdamped(sd.potentials.Harmonic(1.0))
    assert all(isinstance(b, Block) for b in system.sde.blocks)
    assert system.sde.block_names == ("q", "p")
    integ = system.integrator("BAOAB")
    assert integ.block_names == ("q", "p")
    assert integ.blocks == system.sde.blocks == integ.program.blocks
    assert all(isinstance(b, Block) for b in integ.blocks)
    assert tuple(b.name for b in integ.blocks) == integ.block_names
    # a state is keyed by names; Block keys get an error that says so
    y0 = system.initial_state(2, generator=torch.Generator().manual_seed(0))
    with pytest.raises(StateError, match=r"keyed by block names, \.block_names"):
        integ.check_state({b: y0[b.name] for b in integ.blocks})
    with pytest.raises(StateError, match="unknown block") as err:
        integ.check_state({**y0, "x": y0["q"]})
    assert ".block_names" not in str(err.value)
    res = sd.integrate(integ, y0, h=0.1, steps=3, seed=0, save_every=1)
    assert tuple(res.final) == tuple(res.states) == integ.block_names
    res = sd.integrate(integ, y0, h=0.1, steps=3, seed=0, save_every=1, trajectory=tmp_path)
    assert res.trajectory.block_names == ("q", "p") and not hasattr(res.trajectory, "blocks")
    prob = harmonic()
    assert all(isinstance(b, Block) for b in prob.blocks)
    assert prob.block_names == ("q", "p") and prob.dim == 2
    y0 = prob.initial_state(3, 0.0, 1.0, torch.Generator().manual_seed(0))
    assert tuple(y0) == prob.block_names


def test_one_state_layout_for_torch_and_numpy():
    lay = StateLayout.of(sd.blocks("q p"), {"q": (2, 3), "p": ()})
    assert lay.block_names == ("q", "p") and lay.dim == 7 and lay.index("p") == slice(6, 7)
    q = torch.arange(12.0).reshape(2, 2, 3)
    p = torch.tensor([-1.0, -2.0])
    y = lay.flatten({"q": q, "p": p})
    assert y.tolist() == [[0, 1, 2, 3, 4, 5, -1], [6, 7, 8, 9, 10, 11, -2]]
    back = lay.unflatten(y)
    assert torch.equal(back["q"], q) and torch.equal(back["p"], p)
    yn = lay.flatten({"q": q.numpy(), "p": p.numpy()})
    assert isinstance(yn, np.ndarray) and yn.tolist() == y.tolist()
    assert lay.flatten({"q": q[1], "p": p[1]}).tolist() == y[1].tolist()  # one walker
    with pytest.raises(ValueError, match="block q has event shape"):
        lay.flatten({"q": q[:, :, :2], "p": p})
    with pytest.raises(ValueError, match="different leading"):
        lay.flatten({"q": q[:, 0], "p": p})
    assert [(e.block, e.slice, e.shape, e.size) for e in lay] == [
        ("q", slice(0, 6), (2, 3), 6),
        ("p", slice(6, 7), (), 1),
    ]
    assert lay.entries() == tuple(lay) and lay.entry("q") == BlockLayout("q", slice(0, 6), (2, 3))
    from splitsde.interop import StateLayout as interop_layout

    assert interop_layout is StateLayout


def test_affine_map_and_torchsde_view_share_the_layout():
    """The exact analysis (``AffineMap.layout``, ``layout_of``, ``LinearSDE.layout``) and the
    torchsde view flatten a state the same way: one class, the same columns."""
    pytest.importorskip("torchsde")
    from splitsde.analysis import affine_step, layout_of, linear_sde
    from splitsde.interop import as_torchsde

    system = sd.langevin.underdamped(sd.potentials.Harmonic(1.0), gamma=0.5)
    integ = system.integrator("BAOAB")
    # q of shape (batch, 3) and a scalar p: the layout the analysis would probe on
    view = as_torchsde(system, like={"q": torch.zeros(4, 3), "p": torch.zeros(4)})
    lay = layout_of(integ, {"q": 3})
    assert type(lay) is type(view.layout) is StateLayout
    assert lay == view.layout and lay.offsets == view.layout.offsets == {"q": (0, 3), "p": (3, 4)}
    # a probed step (the step needs p shaped like q)
    amap = affine_step(integ, 0.0, 0.1, {"q": 3, "p": 3})
    view = as_torchsde(system, like={"q": (3,), "p": (3,)})
    assert (
        type(amap.layout) is type(view.layout) is type(linear_sde(integ, {"q": 3, "p": 3}).layout)
    )
    assert amap.layout == view.layout and amap.layout.offsets == {"q": (0, 3), "p": (3, 6)}
    assert all(type(e) is BlockLayout for e in amap.layout)  # the one per-block view
    gen = torch.Generator().manual_seed(0)
    state = {b: torch.randn(5, 3, dtype=torch.float64, generator=gen) for b in ("q", "p")}
    y = view.layout.flatten(state)
    np.testing.assert_array_equal(amap.flatten(state), y.numpy())
    # dq/dt = p: the view's q columns of f are the analysis' p columns of y
    f = view.f(0.0, y).numpy()
    np.testing.assert_array_equal(f[:, amap.index("q")], y.numpy()[:, amap.index("p")])


def test_one_estimate_class():
    """The weak-order fits and the diffusion metrics share ``splitsde.base.stats.Estimate``."""
    from splitsde.analysis import fit, montecarlo
    from splitsde.base.stats import Estimate
    from splitsde.diffusion import metrics

    assert fit.Estimate is metrics.Estimate is Estimate
    assert sd.analysis.Estimate is dm.Estimate is montecarlo.Estimate is Estimate
    e = Estimate(1.25, 0.5, samples=100)
    for level in (0.5, 0.95, 0.999):
        z = scipy.stats.norm.ppf(0.5 + level / 2)  # independent quantile implementation
        lo, hi = e.interval(level)
        assert lo == pytest.approx(1.25 - 0.5 * z, rel=1e-14)
        assert hi == pytest.approx(1.25 + 0.5 * z, rel=1e-14)
    assert Estimate(1.0, 0.1).samples == 0 and str(e) == "1.25 ± 0.5"
    for bad in (0.0, 1.0, 95):
        with pytest.raises(ValueError, match="level must be in"):
            e.interval(bad)
    # both producers make the same type: a batch metric and a Monte Carlo average
    mix = dm.GaussianMixture.ring(4)
    x = mix.sample(200, generator=torch.Generator().manual_seed(0))
    m = dm.mixture_metrics(x, mix, batches=4)
    assert type(m["energy"]) is Estimate and m["energy"].samples == 200
    assert math.isfinite(m["energy"].se)
    prob = sd.problems.ou(theta=1.0, mu=0.0, sigma=1.0)
    avg = sd.analysis.final_average(
        prob.integrator("BO"), {"x": torch.zeros(64)}, lambda s: s["x"], h=0.5, steps=2, seed=0
    )
    assert type(avg) is Estimate and avg.samples == 64
    assert avg.se > 0 and abs(avg.value) < 4 * avg.se  # E[x] = 0 from x = 0 at mu = 0


def test_weak_order_is_a_property_and_samplers_have_weak_order_for():
    for cls in (Integrator, Plan, PFODEPlan, PlanProtocol):
        assert isinstance(inspect.getattr_static(cls, "weak_order"), property), cls
    assert not hasattr(SamplerProtocol, "weak_order")
    assert inspect.isfunction(inspect.getattr_static(SamplerProtocol, "weak_order_for"))
    for name, s in dm.SAMPLERS.items():
        assert isinstance(s, SamplerProtocol), name
        assert not hasattr(s, "weak_order"), name
    # the plan's declared order is the sampler's order on the plan's process
    vp, psld = dm.process("vp"), dm.process("psld-cifar10")
    mix = dm.GaussianMixture.ring(4)
    for name, proc, order in [
        ("em", vp, 1),
        ("deis-tab2", vp, 3),
        ("ipndm", vp, 2),
        ("pf-rk4", vp, 4),
        ("sps", psld, 1),
    ]:
        s = dm.sampler(name)
        plan = s.plan(proc, mix.score(proc), steps=8)
        assert s.weak_order_for(proc) == plan.weak_order == order, name
    # the Monte Carlo measurement is estimate_weak_order; weak_order names no function
    assert callable(sd.analysis.estimate_weak_order)
    assert "weak_order" not in sd.analysis.__all__
    with pytest.raises(AttributeError, match="now estimate_weak_order"):
        sd.analysis.weak_order  # noqa: B018


def _subclasses(cls: type) -> set[type]:
    out = set(cls.__subclasses__())
    for c in list(out):
        out |= _subclasses(c)
    return out


def test_observers_have_one_signature():
    """``fn(t, state)`` for observe/Running; every Observer's ``on_step(step, t, state)``."""
    # the modules that define Observer subclasses
    for module in ("splitsde.diffusion.kdiffusion", "splitsde.langevin", "splitsde.runtime.work"):
        importlib.import_module(module)
    from splitsde.runtime.observers import Observer

    # the library's observers (test modules define their own, which the suite may have loaded)
    subs = [c for c in _subclasses(Observer) if c.__module__.startswith("splitsde.")]
    assert len(subs) >= 4
    for cls in (Observer, *subs):
        params = list(inspect.signature(cls.on_step).parameters)
        assert params == ["self", "step", "t", "state"], cls
    system = sd.langevin.underdamped(sd.potentials.Harmonic(1.0))
    y0 = system.initial_state(3, generator=torch.Generator().manual_seed(0))
    seen = []
    obs = sd.observe(lambda t, s: seen.append(t) or s["q"].mean(), "qbar")
    run = sd.Running(lambda t, s: s["q"] ** 2, "q2")
    sd.integrate(system.integrator("BAOAB"), y0, h=0.25, steps=4, seed=0, observers=[obs, run])
    assert seen == [0.25, 0.5, 0.75, 1.0]


def test_each_clock_has_one_grid_direction():
    """Integrators run on increasing times; diffusion grids list diffusion times decreasing
    from T to eps, the order sampling visits them (on the increasing reverse clock)."""
    g = time_grid(0.0, h=0.25, steps=4).array()
    np.testing.assert_array_equal(g, [0.0, 0.25, 0.5, 0.75, 1.0])
    system = sd.langevin.underdamped(sd.potentials.Harmonic(1.0))
    y0 = system.initial_state(2)
    with pytest.raises(ValueError, match="strictly increasing"):
        sd.integrate(system.integrator("BAOAB"), y0, grid=[1.0, 0.5, 0.0], seed=0)
    proc = dm.process("vp")
    d = dm.time_grid(proc, "uniform", 4)
    assert d[0] == proc.T and d[-1] == proc.eps and np.all(np.diff(d) < 0)
    with pytest.raises(dm.GridError, match="strictly decreasing"):
        dm.check_grid(proc, d[::-1])
    plan = dm.sampler("em").plan(proc, dm.GaussianMixture.ring(4).score(proc), grid=d)
    np.testing.assert_array_equal(plan.grid, d)
