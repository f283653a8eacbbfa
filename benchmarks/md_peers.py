"""MD peers: our words on OpenMM and torch against openmmtools and OpenMM's own integrators.

1. Harmonic particles: N independent 3-D harmonic particles (``U = k |x|^2 / 2``, masses 1-16
   amu), S steps of BAOAB on OpenMM's CPU platform:
   - ours: ``LangevinSplittingIntegrator("BAOAB")`` (a CustomIntegrator translated from the
     step program),
   - openmmtools ``LangevinIntegrator(splitting="V R O R V")`` (also a CustomIntegrator),
   - OpenMM ``LangevinMiddleIntegrator`` (compiled C++, BAOA),
   - our torch backend (``splitsde.integrate``, same word, the particles as walkers).
2. Alanine dipeptide in vacuum (HBonds constraints, 2 fs): ns/day on the CPU platform, ours
   vs openmmtools (same word) and LangevinMiddleIntegrator.
3. Water box (openmmtools ``WaterBox``: TIP3P, rigid water, PME) at 2 and 4 fs: ns/day of our
   ``BAOAB`` and ``BAOA`` against openmmtools' ``"V R O R V"`` (the splitting of BAOAB) and
   OpenMM's ``LangevinMiddleIntegrator`` (the splitting of BAOA).

Timing: within each section every integrator gets its own Context (created and warmed up
first); then ``--rounds`` rounds each time ``steps`` steps of every integrator in turn, so
that a load change on a shared machine hits all of them alike. Each run records its wall time
and the CPU time of the process (``time.process_time``: all threads; on an idle machine the
two agree, on a loaded one the CPU time is what the run cost, without the time spent waiting
for a core). Ratios are medians over rounds of the per-round ratios of CPU times; ``seconds``
and ``cpu_seconds`` are the best round, ``ns_per_day`` is from the best CPU time.

Prints a table and writes ``benchmarks/results/md_peers.json``. Full size (the default) is
10,000 particles x 1,000 steps, 20,000 alanine steps and a 2.5 nm water box (about 1,500
atoms) x 100 steps per round, 5 rounds for harmonic particles and alanine, 20 for water;
``--small`` runs a quick check.

    python benchmarks/md_peers.py [--small] [--threads 1] [--rounds 5] [--water-rounds 20]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import openmm
import torch
from openmm import unit

import splitsde as sd
from splitsde.backends.openmm import BOLTZMANN, LangevinSplittingIntegrator

RESULTS = Path(__file__).resolve().parent / "results" / "md_peers.json"
T, GAMMA, DT = 300.0, 1.0, 0.002
TOOLS = "openmmtools LangevinIntegrator 'V R O R V'"
MIDDLE = "OpenMM LangevinMiddleIntegrator (C++)"


def harmonic_system(n: int, k: float, masses: np.ndarray) -> openmm.System:
    system = openmm.System()
    for m in masses:
        system.addParticle(float(m))
    f = openmm.CustomExternalForce("0.5*k*(x^2 + y^2 + z^2)")
    f.addGlobalParameter("k", k)
    for i in range(n):
        f.addParticle(i, [])
    system.addForce(f)
    return system


Timer = Callable[[], tuple[float, float]]


def openmm_runner(system, integ, positions, steps: int, threads: int) -> Timer:
    """A Context for ``integ`` (created and warmed up now) and a function returning the wall and
    CPU time of ``steps`` steps of it."""
    props = {"Threads": str(threads)}
    ctx = openmm.Context(system, integ, openmm.Platform.getPlatformByName("CPU"), props)
    ctx.setPositions(positions)
    ctx.setVelocitiesToTemperature(T, 1)
    integ.step(max(10, steps // 20))

    def run() -> tuple[float, float]:
        ctx.getState(getPositions=True)  # synchronise
        t0, c0 = time.perf_counter(), time.process_time()
        integ.step(steps)
        ctx.getState(getPositions=True)
        return time.perf_counter() - t0, time.process_time() - c0

    run.context = ctx  # keep the Context alive with the runner
    return run


def torch_runner(n, k, masses, steps: int, threads: int) -> Timer:
    torch.set_num_threads(threads)
    kT = BOLTZMANN * T
    mass = torch.tensor(masses, dtype=torch.float64).reshape(-1, 1)
    system = sd.langevin.underdamped(sd.potentials.Harmonic(k**0.5), gamma=GAMMA, kT=kT, mass=mass)
    integ = system.integrator("BAOAB")
    g = torch.Generator().manual_seed(0)
    y0 = {
        "q": torch.randn(n, 3, generator=g, dtype=torch.float64) * (kT / k) ** 0.5,
        "p": torch.randn(n, 3, generator=g, dtype=torch.float64) * (mass * kT).sqrt(),
    }
    sd.integrate(integ, y0, h=DT, steps=max(10, steps // 20), seed=0, progress=False)
    seed = iter(range(1, 10**6))

    def run() -> tuple[float, float]:
        t0, c0 = time.perf_counter(), time.process_time()
        sd.integrate(integ, y0, h=DT, steps=steps, seed=next(seed), progress=False)
        return time.perf_counter() - t0, time.process_time() - c0

    return run


Times = dict[str, list[tuple[float, float]]]


def interleaved(runners: dict[str, Timer], rounds: int) -> Times:
    """Per-round (wall, CPU) times, every runner once per round in turn (the order rotates
    from round to round, so no runner always follows the same one)."""
    times: Times = {name: [] for name in runners}
    names = list(runners)
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            times[name].append(runners[name]())
    return times


def ratio(times: Times, a: str, b: str) -> float:
    """Median over rounds of CPU time(a) / CPU time(b)."""
    return statistics.median(x[1] / y[1] for x, y in zip(times[a], times[b]))


def best(times: Times, name: str) -> tuple[float, float]:
    """Best wall time and best CPU time over the rounds."""
    return min(t[0] for t in times[name]), min(t[1] for t in times[name])


def tools_integrator(dt: float, splitting: str = "V R O R V"):
    from openmmtools.integrators import LangevinIntegrator

    return LangevinIntegrator(
        T * unit.kelvin, GAMMA / unit.picosecond, dt * unit.picoseconds, splitting=splitting
    )


def harmonic(n: int, steps: int, threads: int, rounds: int) -> list[dict]:
    rng = np.random.default_rng(0)
    masses = np.array([1.0, 4.0, 12.0, 16.0])[np.arange(n) % 4]
    k = 100.0  # kJ/mol/nm^2: omega dt < 0.02 for every mass
    positions = rng.normal(size=(n, 3)) * 0.1
    system = harmonic_system(n, k, masses)
    ours = "splitsde BAOAB -> OpenMM CustomIntegrator"
    runners = {
        ours: openmm_runner(
            system, LangevinSplittingIntegrator("BAOAB", DT, T, GAMMA), positions, steps, threads
        ),
        TOOLS: openmm_runner(system, tools_integrator(DT), positions, steps, threads),
        MIDDLE: openmm_runner(
            system, openmm.LangevinMiddleIntegrator(T, GAMMA, DT), positions, steps, threads
        ),
        "splitsde BAOAB, torch backend (CPU)": torch_runner(n, k, masses, steps, threads),
    }
    times = interleaved(runners, rounds)
    return [
        {
            "benchmark": "harmonic",
            "method": name,
            "particles": n,
            "steps": steps,
            "dt_fs": DT * 1e3,
            "seconds": best(times, name)[0],
            "cpu_seconds": best(times, name)[1],
            "us_per_step": 1e6 * best(times, name)[1] / steps,
            "time_vs_openmmtools": ratio(times, name, TOOLS),
        }
        for name in times
    ]


def _ns_rows(benchmark: str, times, steps: int, dt: float, pairs: dict[str, str], **extra):
    rows = []
    for name in times:
        wall, cpu = best(times, name)
        row = {
            "benchmark": benchmark,
            "method": name,
            **extra,
            "steps": steps,
            "dt_fs": dt * 1e3,
            "seconds": wall,
            "cpu_seconds": cpu,
            "ns_per_day": steps * dt * 1e-3 / cpu * 86400,
            "time_vs_openmmtools": ratio(times, name, TOOLS),
            "time_vs_langevin_middle": ratio(times, name, MIDDLE),
        }
        if name in pairs:  # our word against the peer running the same splitting
            row["same_splitting_peer"] = pairs[name]
            row["ns_per_day_vs_same_splitting_peer"] = 1.0 / ratio(times, name, pairs[name])
        rows.append(row)
    return rows


def alanine(steps: int, threads: int, rounds: int) -> list[dict]:
    from openmmtools import testsystems

    ala = testsystems.AlanineDipeptideVacuum()
    ours = "splitsde BAOAB -> OpenMM CustomIntegrator"
    integs = {
        ours: LangevinSplittingIntegrator("BAOAB", DT, T, GAMMA),
        TOOLS: tools_integrator(DT),
        MIDDLE: openmm.LangevinMiddleIntegrator(T, GAMMA, DT),
    }
    runners = {
        name: openmm_runner(ala.system, integ, ala.positions, steps, threads)
        for name, integ in integs.items()
    }
    times = interleaved(runners, rounds)
    return _ns_rows(
        "alanine dipeptide (vacuum, HBonds)", times, steps, DT, {ours: TOOLS}, particles=22
    )


def water(edge_nm: float, steps: int, threads: int, rounds: int) -> list[dict]:
    from openmmtools import testsystems

    cutoff = min(0.9, 0.45 * edge_nm)
    box = testsystems.WaterBox(
        box_edge=edge_nm * unit.nanometers,
        cutoff=cutoff * unit.nanometers,
        switch_width=min(0.15, 0.2 * cutoff) * unit.nanometers,
    )  # TIP3P, rigid water (SETTLE), PME
    n = box.system.getNumParticles()
    ctx = openmm.Context(box.system, openmm.VerletIntegrator(0.001))
    ctx.setPositions(box.positions)
    openmm.LocalEnergyMinimizer.minimize(ctx, 10.0, 200)  # start every run from a relaxed box
    positions = ctx.getState(getPositions=True).getPositions(asNumpy=True)
    del ctx
    rows = []
    for dt_fs in (2.0, 4.0):
        dt = dt_fs * 1e-3
        baoab, baoa = "splitsde BAOAB -> OpenMM CustomIntegrator", "splitsde BAOA -> OpenMM"
        integs = {
            baoab: LangevinSplittingIntegrator("BAOAB", dt, T, GAMMA),
            baoa: LangevinSplittingIntegrator("BAOA", dt, T, GAMMA),
            TOOLS: tools_integrator(dt),
            MIDDLE: openmm.LangevinMiddleIntegrator(T, GAMMA, dt),
        }
        runners = {
            name: openmm_runner(box.system, integ, positions, steps, threads)
            for name, integ in integs.items()
        }
        times = interleaved(runners, rounds)
        rows += _ns_rows(
            f"water box (TIP3P, rigid, PME, {n} atoms)",
            times,
            steps,
            dt,
            {baoab: TOOLS, baoa: MIDDLE},
            particles=n,
            box_edge_nm=edge_nm,
            cutoff_nm=cutoff,
        )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--particles", type=int, default=10_000)
    ap.add_argument("--steps", type=int, default=1_000)
    ap.add_argument("--alanine-steps", type=int, default=20_000)
    ap.add_argument("--water-edge", type=float, default=2.5, help="water box edge (nm)")
    ap.add_argument("--water-steps", type=int, default=100, help="water steps per round")
    ap.add_argument("--water-rounds", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument(
        "--sections", default="harmonic,alanine,water", help="comma-separated sections to run"
    )
    ap.add_argument(
        "--small",
        action="store_true",
        help="1,000 particles x 100 steps; 2,000 alanine steps; 2 nm water box x 50 steps",
    )
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    if args.small:
        args.particles, args.steps, args.alanine_steps = 1_000, 100, 2_000
        args.water_edge, args.water_steps, args.rounds, args.water_rounds = 2.0, 50, 3, 3
    sections = set(args.sections.split(","))
    rows = []
    if "harmonic" in sections:
        rows += harmonic(args.particles, args.steps, args.threads, args.rounds)
    if "alanine" in sections:
        rows += alanine(args.alanine_steps, args.threads, args.rounds)
    if "water" in sections:
        rows += water(args.water_edge, args.water_steps, args.threads, args.water_rounds)
    print(
        f"{'benchmark':<44} {'method':<42} {'fs':>3} {'wall s':>8} {'CPU s':>8} {'ns/day':>8} "
        f"{'vs tools':>8} {'vs Middle':>9} {'ns/day vs same splitting':>24}"
    )
    for r in rows:
        nsd = f"{r['ns_per_day']:8.2f}" if "ns_per_day" in r else f"{'':8}"
        mid = f"{r['time_vs_langevin_middle']:8.3f}x" if "time_vs_langevin_middle" in r else ""
        same = (
            f"{r['ns_per_day_vs_same_splitting_peer']:23.3f}x"
            if "ns_per_day_vs_same_splitting_peer" in r
            else ""
        )
        bench = r["benchmark"] + (f" ({r['particles']})" if r["benchmark"] == "harmonic" else "")
        print(
            f"{bench:<44} {r['method']:<42} {r['dt_fs']:3.0f} {r['seconds']:8.3f} "
            f"{r['cpu_seconds']:8.3f} {nsd} {r['time_vs_openmmtools']:7.3f}x {mid:>9} {same:>24}"
        )
    meta = {
        "openmm": openmm.__version__,
        "torch": torch.__version__,
        "threads": args.threads,
        "rounds": args.rounds,
        "machine": platform.machine(),
        "processor": platform.processor(),
        "python": platform.python_version(),
        "small": args.small,
        "timing": "interleaved rounds; seconds / cpu_seconds = best round (wall / process CPU); "
        "ratios = median of per-round CPU-time ratios; ns_per_day from cpu_seconds",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
