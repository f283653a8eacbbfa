"""docs/architecture.md shows BAOAB's step program and generated fast step: both must be what
the current code produces, verbatim."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

import splitsde as sd
from splitsde.runtime.noise import GaussianNoise

PAGE = (Path(__file__).resolve().parents[2] / "docs" / "architecture.md").read_text()


def _baoab():
    system = sd.langevin.underdamped(sd.potentials.Harmonic(1.0), gamma=1.0, kT=1.0)
    return system, system.integrator(sd.word("BAOAB"))


def test_program_listing_is_current():
    _, integ = _baoab()
    assert integ.program.listing() in PAGE


def test_generated_fast_step_is_current():
    system, integ = _baoab()
    y0 = system.initial_state(4, generator=torch.Generator().manual_seed(0))
    run = integ.prepare(
        tuple(y0[b] for b in integ.block_names),
        np.array([0.0, 0.1, 0.2]),
        GaussianNoise(torch.Generator()),
    )
    src = run.lowered.source
    start = src.index("def _step_fast")
    fast = src[start : src.index("\ndef ", start)].rstrip()
    assert "```python\n" + fast + "\n```" in PAGE
