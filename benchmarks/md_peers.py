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

Prints a table and writes ``benchmarks/results/md_peers.json``. Full size (the default) is
10,000 particles x 1,000 steps and 20,000 alanine steps; ``--small`` runs a quick check.

    python benchmarks/md_peers.py [--small] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import openmm
import torch
from openmm import unit

import splitsde as sd
from splitsde.backends.openmm import BOLTZMANN, LangevinSplittingIntegrator

RESULTS = Path(__file__).resolve().parent / "results" / "md_peers.json"
T, GAMMA, DT = 300.0, 1.0, 0.002


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


def time_openmm(
    system: openmm.System,
    integ: openmm.Integrator,
    positions,
    steps: int,
    threads: int,
    repeats: int = 3,
) -> float:
    """Best-of wall time of ``steps`` steps (context creation and a warm-up excluded)."""
    props = {"Threads": str(threads)}
    ctx = openmm.Context(system, integ, openmm.Platform.getPlatformByName("CPU"), props)
    ctx.setPositions(positions)
    ctx.setVelocitiesToTemperature(T, 1)
    integ.step(max(10, steps // 20))
    best = float("inf")
    for _ in range(repeats):
        ctx.getState(getPositions=True)  # synchronise
        t0 = time.perf_counter()
        integ.step(steps)
        ctx.getState(getPositions=True)
        best = min(best, time.perf_counter() - t0)
    del ctx
    return best


def time_torch(
    n: int, k: float, masses: np.ndarray, steps: int, threads: int, repeats: int = 3
) -> float:
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
    best = float("inf")
    for r in range(repeats):
        res = sd.integrate(integ, y0, h=DT, steps=steps, seed=r, progress=False)
        best = min(best, res.wall_time)
    return best


def harmonic(n: int, steps: int, threads: int) -> list[dict]:
    rng = np.random.default_rng(0)
    masses = np.array([1.0, 4.0, 12.0, 16.0])[np.arange(n) % 4]
    k = 100.0  # kJ/mol/nm^2: omega dt < 0.02 for every mass
    positions = rng.normal(size=(n, 3)) * 0.1
    system = harmonic_system(n, k, masses)
    from openmmtools.integrators import LangevinIntegrator

    rows = []
    cases = [
        (
            "splitsde BAOAB -> OpenMM CustomIntegrator",
            lambda: LangevinSplittingIntegrator("BAOAB", DT, T, GAMMA),
        ),
        (
            "openmmtools LangevinIntegrator 'V R O R V'",
            lambda: LangevinIntegrator(
                T * unit.kelvin,
                GAMMA / unit.picosecond,
                DT * unit.picoseconds,
                splitting="V R O R V",
            ),
        ),
        (
            "OpenMM LangevinMiddleIntegrator (C++)",
            lambda: openmm.LangevinMiddleIntegrator(T, GAMMA, DT),
        ),
    ]
    for name, make in cases:
        wall = time_openmm(system, make(), positions, steps, threads)
        rows.append(
            {
                "benchmark": "harmonic",
                "method": name,
                "particles": n,
                "steps": steps,
                "seconds": wall,
                "us_per_step": 1e6 * wall / steps,
            }
        )
    wall = time_torch(n, k, masses, steps, threads)
    rows.append(
        {
            "benchmark": "harmonic",
            "method": "splitsde BAOAB, torch backend (CPU)",
            "particles": n,
            "steps": steps,
            "seconds": wall,
            "us_per_step": 1e6 * wall / steps,
        }
    )
    ref = rows[1]["seconds"]
    for r in rows:
        r["time_vs_openmmtools"] = r["seconds"] / ref
    return rows


def alanine(steps: int, threads: int) -> list[dict]:
    from openmmtools import testsystems
    from openmmtools.integrators import LangevinIntegrator

    ala = testsystems.AlanineDipeptideVacuum()
    cases = [
        (
            "splitsde BAOAB -> OpenMM CustomIntegrator",
            LangevinSplittingIntegrator("BAOAB", DT, T, GAMMA),
        ),
        (
            "openmmtools LangevinIntegrator 'V R O R V'",
            LangevinIntegrator(
                T * unit.kelvin,
                GAMMA / unit.picosecond,
                DT * unit.picoseconds,
                splitting="V R O R V",
            ),
        ),
        ("OpenMM LangevinMiddleIntegrator (C++)", openmm.LangevinMiddleIntegrator(T, GAMMA, DT)),
    ]
    rows = []
    for name, integ in cases:
        wall = time_openmm(ala.system, integ, ala.positions, steps, threads)
        ns_day = steps * DT * 1e-3 / wall * 86400
        rows.append(
            {
                "benchmark": "alanine dipeptide (vacuum, HBonds, 2 fs)",
                "method": name,
                "steps": steps,
                "seconds": wall,
                "ns_per_day": ns_day,
            }
        )
    ref = rows[1]["seconds"]
    for r in rows:
        r["time_vs_openmmtools"] = r["seconds"] / ref
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--particles", type=int, default=10_000)
    ap.add_argument("--steps", type=int, default=1_000)
    ap.add_argument("--alanine-steps", type=int, default=20_000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument(
        "--small", action="store_true", help="1,000 particles x 100 steps; 2,000 alanine steps"
    )
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    if args.small:
        args.particles, args.steps, args.alanine_steps = 1_000, 100, 2_000
    rows = harmonic(args.particles, args.steps, args.threads) + alanine(
        args.alanine_steps, args.threads
    )
    print(
        f"{'benchmark':<42} {'method':<45} {'seconds':>9} {'us/step':>9} {'ns/day':>8} "
        f"{'vs tools':>8}"
    )
    for r in rows:
        us = 1e6 * r["seconds"] / r["steps"]
        nsd = f"{r['ns_per_day']:8.1f}" if "ns_per_day" in r else f"{'':8}"
        bench = r["benchmark"] + (f" ({r['particles']})" if "particles" in r else "")
        print(
            f"{bench:<42} {r['method']:<45} {r['seconds']:9.3f} {us:9.1f} {nsd} "
            f"{r['time_vs_openmmtools']:7.2f}x"
        )
    meta = {
        "openmm": openmm.__version__,
        "torch": torch.__version__,
        "threads": args.threads,
        "machine": platform.machine(),
        "processor": platform.processor(),
        "python": platform.python_version(),
        "small": args.small,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
