"""GHMC with constraints: mean potential energy of alanine dipeptide against the time step.

A Metropolized integrator samples the Boltzmann distribution exactly at every time step, so
its mean potential energy must not depend on the step. With constraints this holds only if a
rejection restores the positions *and* OpenMM's constraint reference (the positions the next
position and velocity constraints are computed against). This script measures, on alanine
dipeptide in vacuum (amber99sb-ildn, HBonds constraints, 300 K, Reference platform):

- splitsde ``LangevinSplittingIntegrator("GHMC")`` (``O{BAB}O``) at 1, 2, 3, 4 fs,
- openmmtools ``GHMCIntegrator`` (``"O { V R V } O"``) at the same steps,
- a long ``openmm.LangevinMiddleIntegrator`` reference at 1 fs (friction 20/ps: the fastest
  decorrelation; the friction does not change the sampled distribution),

with flat-bottom restraints keeping the backbone dihedrals in the extended/C7eq basin (the same
as the test suite's ``tests/md/test_ghmc_constraints.py``: rare, long excursions elsewhere
would otherwise dominate the error bars; ``--no-restraint`` drops them),

and reports the mean potential energy with its standard error (batch means over time), the
difference to the reference in combined standard errors and the fitted slope of the mean
against the step (with its standard error).

    python benchmarks/ghmc_constraints.py [--steps 600000] [--reference-steps 2000000]
        [--burn 5000] [--friction 5] [--reference-friction 20] [--no-restraint]

Prints a table and writes ``benchmarks/results/ghmc_constraints.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
from pathlib import Path

import numpy as np
import openmm
from openmm import unit

from splitsde.backends.openmm import LangevinSplittingIntegrator

RESULTS = Path(__file__).resolve().parent / "results" / "ghmc_constraints.json"
T = 300.0
EVERY = 10  # steps between energy samples
BATCHES = 20


def basin_restraint(system: openmm.System, topology) -> None:
    """Add flat-bottom restraints that keep alanine dipeptide's backbone dihedrals in the
    extended/C7eq basin: phi within 90 deg of -100 deg, psi within 100 deg of 110 deg (walls of
    100 kJ/mol/rad^2 beyond). Rare excursions elsewhere (phi ~ -150, psi ~ -50 deg: about
    20 kJ/mol higher, one visit of ~50 ps seen in a 0.6 ns GHMC run) otherwise dominate the
    standard error of the mean potential energy in runs of CI length. Also used by
    tests/md/test_ghmc_constraints.py."""
    import mdtraj

    top = mdtraj.Topology.from_openmm(topology)
    frame = mdtraj.Trajectory(np.zeros((1, top.n_atoms, 3)), top)
    (phi,), (psi,) = mdtraj.compute_phi(frame)[0], mdtraj.compute_psi(frame)[0]
    f = openmm.CustomTorsionForce(
        "0.5*k*max(0, d - w)^2; d = min(a, 6.283185307179586 - a); a = abs(theta - theta0)"
    )
    f.addGlobalParameter("k", 100.0)
    f.addPerTorsionParameter("theta0")
    f.addPerTorsionParameter("w")
    f.addTorsion(*map(int, phi), [math.radians(-100.0), math.radians(90.0)])
    f.addTorsion(*map(int, psi), [math.radians(110.0), math.radians(100.0)])
    system.addForce(f)


def sample_potential(system, positions, integrator, steps: int, seed: int, burn: int = 5000):
    """Potential energies (kJ/mol) every EVERY steps after ``burn`` steps."""
    integrator.setRandomNumberSeed(seed)
    ctx = openmm.Context(system, integrator, openmm.Platform.getPlatformByName("Reference"))
    ctx.setPositions(positions)
    ctx.applyConstraints(1e-8)
    ctx.setVelocitiesToTemperature(T * unit.kelvin, seed)
    integrator.step(burn)
    out = np.empty(steps // EVERY)
    for k in range(len(out)):
        integrator.step(EVERY)
        out[k] = (
            ctx.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
        )
    naccept = ntrials = None
    names = set()
    if isinstance(integrator, openmm.CustomIntegrator):
        names = {
            integrator.getGlobalVariableName(i) for i in range(integrator.getNumGlobalVariables())
        }
    for a, n in (("naccept0", "ntrials0"), ("naccept", "ntrials")):
        if a in names:
            naccept = integrator.getGlobalVariableByName(a)
            ntrials = integrator.getGlobalVariableByName(n)
            break
    del ctx
    return out, (naccept / ntrials if ntrials else None)


def batch_mean(x: np.ndarray, batches: int = BATCHES) -> tuple[float, float]:
    """Mean and its standard error from ``batches`` contiguous batch means."""
    n = len(x) // batches * batches
    b = x[:n].reshape(batches, -1).mean(axis=1)
    return float(x[:n].mean()), float(b.std(ddof=1) / math.sqrt(batches))


def slope(steps_fs, means, ses) -> tuple[float, float]:
    """Weighted least-squares slope of mean vs step and its standard error."""
    x, y, w = np.asarray(steps_fs), np.asarray(means), 1.0 / np.asarray(ses) ** 2
    xm = (w * x).sum() / w.sum()
    sxx = (w * (x - xm) ** 2).sum()
    b = (w * (x - xm) * (y - (w * y).sum() / w.sum())).sum() / sxx
    return float(b), float(1.0 / math.sqrt(sxx))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=600_000, help="steps per GHMC run")
    ap.add_argument("--reference-steps", type=int, default=2_000_000)
    ap.add_argument("--friction", type=float, default=5.0, help="GHMC friction (1/ps)")
    ap.add_argument("--reference-friction", type=float, default=20.0, help="1/ps")
    ap.add_argument("--burn", type=int, default=5000, help="equilibration steps of every run")
    ap.add_argument("--no-restraint", action="store_true")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    from openmmtools import integrators as tools
    from openmmtools import testsystems

    ala = testsystems.AlanineDipeptideVacuum()  # HBonds constraints
    if not args.no_restraint:
        basin_restraint(ala.system, ala.topology)
    system, positions = ala.system, ala.positions
    t0 = time.perf_counter()
    ref, _ = sample_potential(
        system, positions, openmm.LangevinMiddleIntegrator(T, args.reference_friction, 0.001),
        args.reference_steps, seed=1, burn=args.burn,
    )  # fmt: skip
    ref_mean, ref_se = batch_mean(ref)
    rows = [{"method": "OpenMM LangevinMiddleIntegrator (reference)", "step_fs": 1.0,
             "steps": args.reference_steps, "mean": ref_mean, "se": ref_se}]  # fmt: skip
    makers = {
        "splitsde GHMC (O{BAB}O)": lambda h: LangevinSplittingIntegrator(
            "GHMC", h * 1e-3, T, args.friction
        ),
        "openmmtools GHMCIntegrator": lambda h: tools.GHMCIntegrator(
            T * unit.kelvin, args.friction / unit.picosecond, h * unit.femtoseconds
        ),
    }
    fits = {}
    for name, make in makers.items():
        means, ses = [], []
        for h in (1.0, 2.0, 3.0, 4.0):
            pe, acc = sample_potential(
                system, positions, make(h), args.steps, seed=2 + int(h), burn=args.burn
            )
            m, se = batch_mean(pe)
            means.append(m)
            ses.append(se)
            z = (m - ref_mean) / math.hypot(se, ref_se)
            rows.append(
                {"method": name, "step_fs": h, "steps": args.steps, "mean": m, "se": se,
                 "acceptance": acc, "z_vs_reference": z}
            )  # fmt: skip
        b, sb = slope([1, 2, 3, 4], means, ses)
        fits[name] = {"slope_per_fs": b, "slope_se": sb}
    wall = time.perf_counter() - t0
    print(f"{'method':<44} {'fs':>3} {'<U> kJ/mol':>12} {'se':>6} {'accept':>7} {'z':>7}")
    for r in rows:
        acc = f"{r['acceptance']:7.3f}" if r.get("acceptance") is not None else f"{'':7}"
        z = f"{r['z_vs_reference']:7.1f}" if "z_vs_reference" in r else f"{'':7}"
        print(f"{r['method']:<44} {r['step_fs']:3.0f} {r['mean']:12.2f} {r['se']:6.2f} {acc} {z}")
    for name, f in fits.items():
        print(f"{name}: slope {f['slope_per_fs']:+.2f} +- {f['slope_se']:.2f} kJ/mol per fs")
    meta = {"openmm": openmm.__version__, "python": platform.python_version(),
            "friction_per_ps": args.friction, "reference_friction_per_ps": args.reference_friction,
            "restraint": not args.no_restraint, "temperature_K": T, "sample_every": EVERY,
            "batches": BATCHES, "burn_steps": args.burn, "wall_seconds": wall}  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"meta": meta, "rows": rows, "slopes": fits}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
