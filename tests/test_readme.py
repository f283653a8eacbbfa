"""The README's Python snippets run as written, in order, and what their comments claim holds
(exact values from the closed forms the comments state)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_snippets_run_and_their_comments_hold(capsys):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert len(blocks) >= 5
    ns: dict = {}
    for i, block in enumerate(blocks):
        exec(compile(block, f"README.md python block {i}", "exec"), ns)
    out = capsys.readouterr().out
    # the O flow's derived solver is the exact Ornstein-Uhlenbeck step
    assert "linear (exact)" in out and "exp(-2*gamma*h)" in out
    # BAOAB: weak order 2, one force evaluation per step (first-same-as-last)
    assert (ns["integ"].weak_order, ns["integ"].evaluations_per_step) == (2, 1)
    # stationary law of BAOAB on the unit harmonic oscillator at h = 0.5: positions exact,
    # momenta kT (1 - h^2/4)
    np.testing.assert_allclose(
        np.asarray(ns["cov"]), [[1.0, 0.0], [0.0, 1 - 0.5**2 / 4]], atol=1e-12
    )
