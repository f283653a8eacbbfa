"""The Energy of an SDE: validation, and the Langevin energy the MD tools rely on."""

from __future__ import annotations

import pytest
import torch

import splitsde as sd


def test_langevin_energy_is_potential_plus_kinetic():
    m = torch.tensor([1.0, 2.0])
    system = sd.langevin.underdamped(sd.potentials.DoubleWell(0.5), mass=m)
    integ = system.integrator("BAOAB")
    H = sd.energy_function(integ)
    q = torch.tensor([[0.3, -1.2], [2.0, 0.0]])
    p = torch.tensor([[1.0, -0.5], [0.0, 3.0]])
    expected = (0.5 * (q * q - 1) ** 2).sum(-1) + (p * p / (2 * m)).sum(-1)
    torch.testing.assert_close(H({"q": q, "p": p}), expected, rtol=1e-14, atol=0)
    assert [b.name for b in integ.sde.energy.momenta] == ["p"]


def test_energy_validation_names_the_problem():
    q, p = sd.blocks("q p")
    (kT,) = sd.parameters("kT", positive=True)
    U = sd.Field("U", [q], like=[None])
    F = sd.Field("F", [q])
    with pytest.raises(ValueError, match="bare block"):
        sd.Energy(U() + q, kT=kT)
    with pytest.raises(ValueError, match="like=\\[None\\]"):
        sd.Energy(F(), kT=kT)
    with pytest.raises(ValueError, match="per_walker="):
        sd.Energy(0, U() * p, kT=kT)
    with pytest.raises(ValueError, match="parameters only"):
        sd.Energy(U(), kT=q)
    with pytest.raises(ValueError, match="nonzero term"):
        sd.Energy(0, 0, kT=kT)
    flows = {"A": sd.Flow({q: p})}
    (r,) = sd.blocks("r")
    with pytest.raises(ValueError, match="not in the SDE"):
        sd.SDE([q, p], flows, energy=sd.Energy(0, r**2, kT=kT))


class _Stop(sd.Observer):
    name = "stop"

    def __init__(self, at=None):
        self.at = at

    def on_step(self, k, t, state):
        if k + 1 == self.at:
            raise KeyboardInterrupt


def test_configurational_temperature_survives_a_resume(tmp_path):
    system = sd.langevin.underdamped(sd.potentials.DoubleWell(1.0))
    integ = system.integrator("BAOAB")
    y0 = system.initial_state(16, dim=2)
    ck = tmp_path / "c.ckpt"

    def run(stop_at=None, **kw):
        obs = [_Stop(stop_at), sd.langevin.ConfigurationalTemperature(system, burn_in=5)]
        return sd.integrate(integ, y0, h=0.1, steps=40, seed=3, observers=obs, **kw)

    ref = run()
    with pytest.raises(KeyboardInterrupt):
        run(stop_at=27, checkpoint=ck, checkpoint_every=10)
    res = run(checkpoint=ck, checkpoint_every=10, resume=True)
    assert res.finals["T_conf"]["value"] == ref.finals["T_conf"]["value"]
    assert torch.equal(res.finals["T_conf"]["grad2"], ref.finals["T_conf"]["grad2"])
