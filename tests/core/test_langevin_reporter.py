"""The Langevin reporter: every column against closed forms recomputed from the saved states,
units in the header, acceptance and speed, and checkpoint/resume without duplicated or lost
lines; its reader, its plot and ``splitsde sample --log``."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import splitsde as sd
from splitsde.langevin import reporter as reporter_module
from splitsde.langevin.reporter import Reporter, ReporterError, plot_report, read_report
from splitsde.langevin.units import OPENMM_UNITS, Units

BARRIER = 1.3
MASS = torch.tensor([1.0, 2.5], dtype=torch.float64)  # per-coordinate masses
H, EVERY, STEPS = 0.25, 5, 40


class _Clock:
    """A deterministic wall clock: every step takes 0.01 s."""

    def __init__(self) -> None:
        self.now = 0.0

    def perf_counter(self) -> float:
        return self.now


class _Tick(sd.Observer):
    name = "tick"

    def __init__(self, clock: _Clock) -> None:
        self.clock = clock

    def on_step(self, step, t, state):
        self.clock.now += 0.01


class _Crash(Exception):
    pass


class _CrashAt(sd.Observer):
    name = "crash"

    def __init__(self, at):
        self.at = at

    def on_step(self, step, t, state):
        if self.at is not None and step + 1 == self.at:
            raise _Crash


@pytest.fixture
def clock(monkeypatch) -> _Clock:
    c = _Clock()
    monkeypatch.setattr(reporter_module, "_time", c)
    return c


def _system(units=None):
    pot = sd.potentials.DoubleWell(BARRIER)
    return sd.langevin.underdamped(pot, gamma=0.8, kT=0.9, mass=MASS, units=units)


def _run(system, path, clock, *, word="GHMC", crash=None, steps=STEPS, **kw):
    y0 = system.initial_state(64, dim=2, generator=torch.Generator().manual_seed(3))
    rep = Reporter(
        path,
        system,
        every=EVERY,
        kinetic_energy=True,
        total_energy=True,
        elapsed_time=True,
        **kw.pop("reporter", {}),
    )
    return sd.integrate(
        system.integrator(word),
        y0,
        h=H,
        steps=steps,
        seed=7,
        observers=[_Tick(clock), rep, _CrashAt(crash)],
        save_every=EVERY,
        **kw,
    )


def test_every_column_is_the_closed_form_of_the_saved_states(tmp_path, clock):
    path = tmp_path / "run.csv"
    res = _run(_system(), path, clock)
    header = path.read_text().splitlines()[0]
    assert header == (
        '#"Step","Time (reduced units)","Potential Energy (reduced units)",'
        '"Kinetic Energy (reduced units)","Total Energy (reduced units)",'
        '"Temperature (kT, reduced units)","Configurational Temperature (kT, reduced units)",'
        '"Acceptance {B A B}","Speed (steps/s)","Elapsed Time (s)"'
    )
    data = read_report(path)
    np.testing.assert_array_equal(data["Step"], np.arange(EVERY, STEPS + 1, EVERY))
    np.testing.assert_allclose(data["Time (reduced units)"], H * data["Step"], rtol=1e-15)
    # closed forms of the double well from the saved states (the first saved state is t0)
    q = res.states["q"][1:].numpy()
    p = res.states["p"][1:].numpy()
    m = MASS.numpy()
    u = (BARRIER * (q * q - 1) ** 2).sum(-1)
    k = 0.5 * (p * p / m).sum(-1)
    grad2 = ((4 * BARRIER * q * (q * q - 1)) ** 2).sum(-1)
    lap = (BARRIER * (12 * q * q - 4)).sum(-1)
    close = {"rtol": 1e-12, "atol": 1e-14}
    np.testing.assert_allclose(data["Potential Energy (reduced units)"], u.mean(1), **close)
    np.testing.assert_allclose(data["Kinetic Energy (reduced units)"], k.mean(1), **close)
    np.testing.assert_allclose(data["Total Energy (reduced units)"], (u + k).mean(1), **close)
    np.testing.assert_allclose(data["Temperature (kT, reduced units)"], k.mean(1), **close)
    np.testing.assert_allclose(
        data["Configurational Temperature (kT, reduced units)"],
        grad2.sum(1) / lap.sum(1),
        **close,
    )
    # acceptance per interval: weighted by the interval length it adds up to the run's total
    rates = data["Acceptance {B A B}"]
    assert ((rates > 0) & (rates <= 1)).all()
    total = int(res.acceptance[0].accepted.sum())
    assert rates.sum() * 64 * EVERY == pytest.approx(total, abs=1e-9)
    # speed and elapsed time on the deterministic clock: 0.01 s per step
    np.testing.assert_allclose(data["Speed (steps/s)"], 100.0, rtol=1e-9)
    np.testing.assert_allclose(data["Elapsed Time (s)"], 0.01 * data["Step"], rtol=1e-9)


def test_units_label_columns_and_convert_temperatures_to_kelvin(tmp_path, clock):
    openmm = pytest.importorskip("splitsde.backends.openmm")
    assert OPENMM_UNITS.boltzmann == pytest.approx(openmm.BOLTZMANN, rel=1e-12)
    _run(_system(), tmp_path / "r.csv", clock)
    reduced = read_report(tmp_path / "r.csv")
    path = tmp_path / "k.jsonl"
    _run(_system(OPENMM_UNITS), path, clock)
    first = json.loads(path.read_text().splitlines()[0])
    assert list(first) == [
        "Step",
        "Time (ps)",
        "Potential Energy (kJ/mole)",
        "Kinetic Energy (kJ/mole)",
        "Total Energy (kJ/mole)",
        "Temperature (K)",
        "Configurational Temperature (K)",
        "Acceptance {B A B}",
        "Speed (ns/day)",
        "Elapsed Time (s)",
    ]
    kelvin = read_report(path)
    kb = OPENMM_UNITS.boltzmann
    for name in ("Temperature", "Configurational Temperature"):
        np.testing.assert_allclose(
            kelvin[f"{name} (K)"], reduced[f"{name} (kT, reduced units)"] / kb, rtol=1e-14
        )
    # 0.25 ps per step at 0.01 s per step: 25 ps/s = 2160 ns/day
    np.testing.assert_allclose(kelvin["Speed (ns/day)"], 0.25e-3 / 0.01 * 86400, rtol=1e-9)
    # explicit units win over the system's; unknown time units give steps/s
    custom = Units(time="fs", energy="eV", boltzmann=8.617333262e-5)
    rep = Reporter(tmp_path / "x.csv", _system(OPENMM_UNITS), units=custom)
    assert rep.units is custom and custom.nanoseconds == 1e-6
    assert Units(time="tau").nanoseconds is None


@pytest.mark.parametrize("suffix", ["csv", "jsonl"])
def test_a_resumed_run_has_no_duplicated_or_lost_lines(tmp_path, clock, suffix):
    reference = tmp_path / f"ref.{suffix}"
    _run(_system(), reference, clock)
    path, ck = tmp_path / f"job.{suffix}", tmp_path / "job.ckpt"
    # killed at step 33: the checkpoint is at step 21, lines for 25 and 30 were written after it
    with pytest.raises(_Crash):
        _run(_system(), path, clock, crash=33, checkpoint=ck, checkpoint_every=21)
    assert len(read_report(path)["Step"]) == 6
    _run(_system(), path, clock, checkpoint=ck, resume=True)
    got, ref = read_report(path), read_report(reference)
    np.testing.assert_array_equal(got["Step"], np.arange(EVERY, STEPS + 1, EVERY))
    for column in ref:
        if column not in ("Speed (steps/s)", "Elapsed Time (s)"):
            np.testing.assert_array_equal(got[column], ref[column], err_msg=column)
    # elapsed time counts the steps of the run as resumed (like Result.wall_time): the killed
    # run's work after its checkpoint is replayed, not counted twice
    np.testing.assert_allclose(got["Elapsed Time (s)"], 0.01 * got["Step"], rtol=1e-9)
    # resuming a finished run changes nothing
    before = path.read_bytes()
    _run(_system(), path, clock, checkpoint=ck, resume=True)
    assert path.read_bytes() == before
    # a report file cut short since the checkpoint cannot be continued
    path.write_bytes(before[:40])
    with pytest.raises(ReporterError, match=r"has 40 bytes but the checkpoint was taken after"):
        _run(_system(), path, clock, checkpoint=ck, resume=True)


def test_columns_follow_what_the_run_has(tmp_path):
    over = sd.langevin.overdamped(sd.potentials.DoubleWell(BARRIER), kT=0.9)
    y0 = {"q": torch.zeros(16, 2)}
    path = tmp_path / "over.csv"
    sd.integrate(
        over.integrator("BO"), y0, h=0.01, steps=10, seed=0,
        observers=[Reporter(path, over, every=5, speed=False)],
    )  # fmt: skip
    assert list(read_report(path)) == [
        "Step",
        "Time (reduced units)",
        "Potential Energy (reduced units)",
        "Configurational Temperature (kT, reduced units)",
    ]
    with pytest.raises(ReporterError) as info:
        sd.integrate(
            over.integrator("BO"), y0, h=0.01, steps=10, seed=0,
            observers=[Reporter(path, over, temperature=True)],
        )  # fmt: skip
    assert str(info.value) == (
        "reporter 'reporter': cannot write temperature: the state has no momenta p "
        "(overdamped dynamics)"
    )
    system = _system()
    y0 = system.initial_state(4, dim=2)
    with pytest.raises(ReporterError, match="no Metropolized"):
        sd.integrate(
            system.integrator("BAOAB"), y0, h=0.1, steps=2, seed=0,
            observers=[Reporter(path, system, acceptance=True)],
        )  # fmt: skip

    # a potential without a Laplacian (forces from outside torch's autograd, as OpenMM's)
    class External(sd.potentials.Potential):
        def energy(self, q):
            return torch.as_tensor((q.detach().numpy() ** 2).sum(-1))

        def force(self, q):
            return -2 * q

    ext = sd.langevin.underdamped(External())
    sd.integrate(
        ext.integrator("BAOAB"), ext.initial_state(4), h=0.1, steps=2, seed=0,
        observers=[Reporter(path, ext, every=1)],
    )  # fmt: skip
    assert not any(c.startswith("Configurational") for c in read_report(path))
    with pytest.raises(ReporterError, match="cannot write configurational_temperature"):
        sd.integrate(
            ext.integrator("BAOAB"), ext.initial_state(4), h=0.1, steps=2, seed=0,
            observers=[Reporter(path, ext, configurational_temperature=True)],
        )  # fmt: skip
    with pytest.raises(ReporterError, match="every must be an integer >= 1, got 0"):
        Reporter(path, ext, every=0)
    with pytest.raises(ReporterError, match="unknown format 'xml'"):
        Reporter(path, ext, format="xml")


def test_plot_report_draws_each_column_from_the_file(tmp_path, clock):
    path = tmp_path / "run.csv"
    _run(_system(), path, clock)
    data = read_report(path)
    png = tmp_path / "run.png"
    fig = plot_report(path, ["Temperature", "Potential"], out=png, reference={"Temp": 0.9})
    assert png.stat().st_size > 0
    ax_t, ax_u = fig.axes
    np.testing.assert_array_equal(ax_t.lines[0].get_xdata(), data["Time (reduced units)"])
    np.testing.assert_array_equal(
        ax_t.lines[0].get_ydata(), data["Temperature (kT, reduced units)"]
    )
    assert ax_t.lines[1].get_ydata()[0] == 0.9  # the reference line
    np.testing.assert_array_equal(
        ax_u.lines[0].get_ydata(), data["Potential Energy (reduced units)"]
    )
    assert len(plot_report(path).axes) == len(data) - 3  # all but step, time, elapsed
    with pytest.raises(ReporterError, match=r"^'Energy' is not a column of report .*; columns: "):
        plot_report(path, ["Energy"])
    with pytest.raises(ReporterError, match=r"^'T' matches several columns"):
        plot_report(path, ["T"])


def test_sample_log_writes_the_reporter_file_of_the_same_run(tmp_path):
    from splitsde.apps.cli import main

    path = tmp_path / "log.csv"
    argv = ["sample", "--system", "double-well", "--word", "OBABO", "--steps", "40"]
    argv += ["--burn-in", "10", "--walkers", "32", "--seed", "5", "--h", "0.2"]
    assert main([*argv, "--log", str(path), "--log-every", "10", "--json"]) == 0
    got = read_report(path)
    np.testing.assert_array_equal(got["Step"], [10, 20, 30, 40, 50])
    # the same run through the Python API
    system = sd.langevin.underdamped(sd.potentials.DoubleWell(), gamma=1.0, kT=1.0)
    y0 = system.initial_state(32, generator=torch.Generator().manual_seed(6))
    ref = tmp_path / "ref.csv"
    sd.integrate(
        system.integrator("OBABO"), y0, h=0.2, steps=50, seed=5,
        observers=[
            sd.Running(lambda t, s: s["q"], "q", burn_in=10),
            sd.Running(lambda t, s: s["p"], "p", burn_in=10),
            Reporter(ref, system, every=10),
        ],
    )  # fmt: skip
    want = read_report(ref)
    for column in want:
        if not column.startswith("Speed"):
            np.testing.assert_array_equal(got[column], want[column], err_msg=column)
    assert main([*argv, "--log-every", "10"]) == 2  # --log-every without --log
