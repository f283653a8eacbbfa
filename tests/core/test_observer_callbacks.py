"""One callback signature for observers: ``fn(t, state)`` (torchsde's ``f(t, y)`` order) for
both :func:`splitsde.observe` and :class:`splitsde.Running`; names from the function or given,
never ``'<lambda>'``; the old one-argument form of the transition warns."""

from __future__ import annotations

import functools
import warnings

import numpy as np
import pytest
import torch

import splitsde as sd
from splitsde.runtime.observers import ObserverError


@pytest.fixture(scope="module")
def run_setup():
    system = sd.langevin.underdamped(sd.potentials.Harmonic(1.3), gamma=0.7, kT=1.0)
    integ = system.integrator("BAOAB")
    y0 = system.initial_state(16, dim=2, generator=torch.Generator().manual_seed(5))
    return integ, y0


def _run(run_setup, observers, steps=12, h=0.1, **kw):
    integ, y0 = run_setup
    return sd.integrate(
        integ, y0, h=h, steps=steps, seed=3, observers=observers, save_every=1, **kw
    )


def test_observe_and_running_call_fn_with_time_and_state(run_setup):
    def clock(t, state):
        return t

    def q_mean(t, state):
        return state["q"].mean()

    burn = 4
    res = _run(
        run_setup,
        [
            sd.observe(clock),
            sd.observe(q_mean, every=3),
            sd.Running(lambda t, s: s["q"] * t, "qt", burn_in=burn),
        ],
    )
    grid = 0.1 * np.arange(13)
    # t is the time at the end of each step; names come from __name__
    np.testing.assert_array_equal(res.observables["clock"], grid[1:])
    np.testing.assert_array_equal(res.observable_times["q_mean"], grid[3::3])
    saved_q = res.states["q"]
    torch.testing.assert_close(
        res.observables["q_mean"], saved_q[3::3].mean(dim=(1, 2)), rtol=0, atol=0
    )
    # Running averages fn(t, state) over the steps after the burn-in
    expected = (saved_q[burn + 1 :] * torch.as_tensor(grid[burn + 1 :])[:, None, None]).mean(0)
    torch.testing.assert_close(res.finals["qt"]["mean"], expected, rtol=1e-13, atol=1e-15)
    assert res.finals["qt"]["count"] == 12 - burn


def test_the_one_argument_form_still_works_and_warns_at_the_callers_line(run_setup):
    new = _run(run_setup, [sd.Running(lambda t, s: s["p"] ** 2, "p2", burn_in=2)])
    with pytest.warns(DeprecationWarning, match=r"called as fn\(t, state\)") as record:
        old = sd.Running(lambda s: s["p"] ** 2, "p2", burn_in=2)
    assert record[0].filename == __file__
    with pytest.warns(DeprecationWarning, match=r"observe 'pbar'.*deprecated"):
        old_obs = sd.observe(lambda s: s["p"].mean(), "pbar")
    res = _run(run_setup, [old, old_obs])
    torch.testing.assert_close(res.finals["p2"]["mean"], new.finals["p2"]["mean"], rtol=0, atol=0)
    torch.testing.assert_close(res.observables["pbar"], res.states["p"][1:].mean(dim=(1, 2)))


def test_the_new_form_does_not_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sd.Running(lambda t, s: s["q"], "q")
        sd.observe(lambda t, s: s["q"], "q")
        sd.observe(lambda *args: args[1]["q"], "q")  # any number of arguments: new form


def test_a_lambda_must_be_named():
    with pytest.raises(ObserverError) as info:
        sd.observe(lambda t, s: s["q"].mean())
    assert str(info.value) == (
        "observe: a lambda has no name to record its values under; give one, e.g. "
        "observe(lambda t, state: ..., name='energy')"
    )
    with pytest.raises(ObserverError, match=r"^Running: a lambda has no name"):
        sd.Running(lambda t, s: s["q"])
    with pytest.raises(ObserverError, match=r"^observe: a partial has no name"):
        sd.observe(functools.partial(lambda t, s, k: s["q"] * k, k=2))
    with pytest.raises(ObserverError, match="name must be a non-empty string, got ''"):
        sd.observe(lambda t, s: 0, name="")
    # errors of the library's type, still ValueErrors
    assert issubclass(ObserverError, sd.SplitsdeError) and issubclass(ObserverError, ValueError)


def test_wrong_signatures_and_options_are_refused():
    with pytest.raises(ObserverError, match="takes 0 required positional arguments"):
        sd.observe(lambda: 0, "zero")
    with pytest.raises(ObserverError, match="takes 3 required positional arguments"):
        sd.Running(lambda a, b, c: 0, "three")
    with pytest.raises(ObserverError, match=r"expected a function of \(t, state\)"):
        sd.observe(3.0, "x")
    with pytest.raises(ObserverError, match=r"observe 'x': every must be an integer >= 1, got 0"):
        sd.observe(lambda t, s: 0, "x", every=0)
    with pytest.raises(ObserverError, match=r"burn_in must be an integer >= 0, got -1"):
        sd.Running(lambda t, s: 0, "x", burn_in=-1)


class _Crash(Exception):
    pass


class _CrashAt(sd.Observer):
    """Stops the run after step ``at`` (past the last checkpoint), like a killed job."""

    name = "crash"

    def __init__(self, at: int | None) -> None:
        self.at = at

    def on_step(self, step, t, state):
        if self.at is not None and step + 1 == self.at:
            raise _Crash


def test_observers_still_checkpoint_and_resume_bit_for_bit(run_setup, tmp_path):
    ck = tmp_path / "run.ckpt"

    def observers(crash_at=None):
        return [
            sd.Running(lambda t, s: s["q"] * t, "qt", burn_in=3),
            sd.observe(lambda t, s: s["q"].sum(), "qsum", every=2),
            _CrashAt(crash_at),
        ]

    full = _run(run_setup, observers(), steps=20)
    with pytest.raises(_Crash):
        _run(run_setup, observers(17), steps=20, checkpoint=ck, checkpoint_every=7)
    again = _run(run_setup, observers(), steps=20, checkpoint=ck, resume=True)
    torch.testing.assert_close(
        again.finals["qt"]["mean"], full.finals["qt"]["mean"], rtol=0, atol=0
    )
    torch.testing.assert_close(again.observables["qsum"], full.observables["qsum"], rtol=0, atol=0)
