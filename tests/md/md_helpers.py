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


def _benchmark(name: str):
    """A module of ``benchmarks/`` (the tests reuse its setup rather than a copy of it)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"bench_{name}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


#: Flat-bottom dihedral walls for alanine dipeptide (benchmarks/ghmc_constraints.py).
basin_restraint = _benchmark("ghmc_constraints").basin_restraint
