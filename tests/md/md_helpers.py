"""Independent references for the MD tests: hand-composed harmonic step matrices, OpenMM test
systems, block averages."""

from __future__ import annotations

import math

import numpy as np
import openmm
import scipy.linalg

import splitsde as sd


def harmonic_step(
    word: str, h: float, *, k: dict[str, float], m: float, gamma: float, kT: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """One step ``z -> Phi z + N(0, Q)`` of ``word`` for one harmonic coordinate, written out
    letter by letter from the exact sub-flows (not from the library's program):
    A: q += s p/m;  B/Bk: p -= s k q;  O: p = c p + sqrt((1 - c^2) m kT) xi, c = exp(-gamma s)."""
    Phi, Q = np.eye(2), np.zeros((2, 2))
    for o in sd.word(word):
        s = float(o.weight) * h
        if o.letter == "A":
            P, R = np.array([[1.0, s / m], [0.0, 1.0]]), np.zeros((2, 2))
        elif o.letter.startswith("B"):
            P, R = np.array([[1.0, 0.0], [-k[o.letter] * s, 1.0]]), np.zeros((2, 2))
        elif o.letter == "O":
            c = math.exp(-gamma * s)
            P, R = np.diag([1.0, c]), np.diag([0.0, (1.0 - c * c) * m * kT])
        else:
            raise ValueError(o.letter)
        Phi, Q = P @ Phi, P @ Q @ P.T + R
    return Phi, Q


def harmonic_stationary(word: str, h: float, **kw) -> np.ndarray:
    """Exact stationary covariance of ``(q, p)`` from the discrete Lyapunov equation."""
    Phi, Q = harmonic_step(word, h, **kw)
    assert max(abs(np.linalg.eigvals(Phi))) < 1, "unstable step"
    return scipy.linalg.solve_discrete_lyapunov(Phi, Q)


def harmonic_openmm_system(
    masses: np.ndarray, k: float | list[float], groups: list[int] | None = None
) -> openmm.System:
    """Independent 3-D harmonic particles ``U = k |x|^2 / 2``; several ``k`` give one force per
    force group (``groups``)."""
    system = openmm.System()
    for m in masses:
        system.addParticle(float(m))
    ks = k if isinstance(k, list) else [k]
    for i, kk in enumerate(ks):
        f = openmm.CustomExternalForce(f"0.5*k{i}*(x^2 + y^2 + z^2)")
        f.addGlobalParameter(f"k{i}", kk)
        for j in range(len(masses)):
            f.addParticle(j, [])
        f.setForceGroup(groups[i] if groups else 0)
        system.addForce(f)
    return system


def block_mean(x: np.ndarray, blocks: int = 20) -> tuple[float, float]:
    """Mean and its standard error from ``blocks`` contiguous block averages."""
    x = np.asarray(x, dtype=float)
    n = len(x) // blocks * blocks
    b = x[:n].reshape(blocks, -1).mean(axis=1)
    return float(x[:n].mean()), float(b.std(ddof=1) / math.sqrt(blocks))


def within(a: float, sa: float, b: float, sb: float = 0.0, sigmas: float = 4.0) -> bool:
    return abs(a - b) <= sigmas * math.hypot(sa, sb)


def basin_restraint(system: openmm.System, topology) -> None:
    """Add flat-bottom restraints that keep alanine dipeptide's backbone dihedrals in the
    extended/C7eq basin: phi within 90 deg of -100 deg, psi within 100 deg of 110 deg (walls of
    100 kJ/mol/rad^2 beyond). Rare excursions elsewhere (phi ~ -150, psi ~ -50 deg: about
    20 kJ/mol higher, one visit of ~50 ps seen in a 0.6 ns GHMC run) otherwise dominate the
    standard error of the mean potential energy in runs of CI length."""
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
