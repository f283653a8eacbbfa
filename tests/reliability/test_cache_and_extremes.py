"""Damaged weight caches are retrained, never used; the extremes of the command line's ranges
give exact references and certificates instead of tracebacks."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch

from splitsde.apps.examples.cache import CacheError, load_or_train
from splitsde.langevin import potentials


def _tiny(directory, trained: list[int]):
    def build():
        torch.manual_seed(0)
        return torch.nn.Linear(3, 2)

    def train(module):
        trained.append(1)
        with torch.no_grad():
            module.weight.fill_(0.25)
        return {"final_loss": 0.5}

    return load_or_train("net", {"width": 3}, build, train, directory)


def _entry(directory):
    (pt,) = directory.glob("net-*.pt")
    return pt


@pytest.mark.parametrize(
    "damage",
    ["truncate", "flip", "garbage", "meta"],
)
def test_a_damaged_cache_entry_is_retrained_with_a_warning(tmp_path, damage):
    trained: list[int] = []
    net, info = _tiny(tmp_path, trained)
    assert not info["cached"] and trained == [1]
    good = _entry(tmp_path).read_bytes()
    meta = json.loads(_entry(tmp_path).with_suffix(".json").read_text())
    assert len(meta["sha256"]) == 64
    net, info = _tiny(tmp_path, trained)
    assert info["cached"] and trained == [1] and info["final_loss"] == 0.5

    pt = _entry(tmp_path)
    if damage == "truncate":
        pt.write_bytes(good[: len(good) // 2])
    elif damage == "flip":  # one bit in the middle: torch may still load it, the digest won't
        raw = bytearray(good)
        raw[len(raw) // 2] ^= 0x01
        pt.write_bytes(bytes(raw))
    elif damage == "garbage":
        pt.write_bytes(b"not a torch file")
    else:
        pt.with_suffix(".json").write_text('{"sha256": "trunc')
    damaged = r"cached weights .*net-.*\.pt are damaged \(.+\); training"
    with pytest.warns(UserWarning, match=damaged):
        net, info = _tiny(tmp_path, trained)
    assert not info["cached"] and trained == [1, 1]
    assert torch.equal(net.weight, torch.full((2, 3), 0.25))
    saved = torch.load(_entry(tmp_path), weights_only=True)  # rewritten whole
    assert torch.equal(saved["weight"], torch.full((2, 3), 0.25))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _tiny(tmp_path, trained)[1]["cached"]


def test_an_unwritable_cache_folder_is_refused_before_training(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    trained: list[int] = []
    with pytest.raises(CacheError, match=r"cannot write the weights cache in .*file/sub"):
        _tiny(blocker / "sub", trained)
    assert trained == []


@pytest.mark.parametrize("kT", [1e-6, 1e-3, 1.0, 1e3, 1e6])
def test_double_well_moments_are_exact_at_extreme_temperatures(kT):
    """Against an independent fine Riemann sum over a range wide enough for the temperature:
    at kT = 1e-6 the Boltzmann weight is a peak of width 4e-4 (the quadrature used to return
    a partition function of zero), at kT = 1e6 it reaches beyond |q| = 30 (it used to be cut
    at |q| = 6)."""
    pot = potentials.DoubleWell()
    width = 2 * max(6.0, (60 * kT) ** 0.25 + 2)
    xs = np.linspace(-width, width, 4_000_001)
    w = np.exp(-pot.u(xs) / kT)
    var = float(np.sum(xs * xs * w) / np.sum(w))
    got = pot.moments(kT)
    assert abs(float(got["mean"])) < 1e-9 * np.sqrt(var)
    assert float(got["var"]) == pytest.approx(var, rel=1e-9)


def test_certificate_at_the_corners_of_the_parameter_ranges():
    """A covariance of scale 1e24 next to an exact zero, and a spectral radius within 1e-13 of
    one: the consistency check of the certificate is relative to the covariance's scale and the
    conditioning of the Lyapunov equation."""
    from splitsde.analysis.certify import certificate

    cert = certificate("BAOAB", "harmonic", h=0.1, omega=1e-6, gamma=1e6, kT=1e6, mass=1e-6)
    assert cert.to_json()["word"] == "BAOAB"


@pytest.mark.parametrize("omega", [1e-3, 1.0, 1e4, 1e5])
def test_certificate_finds_the_stability_bound_of_stiff_and_slow_oscillators(omega):
    """BAOAB on the harmonic oscillator is stable exactly for h * omega < 2, whatever the
    friction (Leimkuhler and Matthews, Appl. Math. Res. Express 2013). The scan must reach it
    whether omega is far above the friction (stiff: the bound is far below 1) or far below it
    (the slow mode sets the scale)."""
    from splitsde.analysis.certify import certificate

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ill-conditioned Lyapunov solves at the corners
        cert = certificate("BAOAB", "harmonic", h=0.1 / max(omega, 1.0), omega=omega)
    assert cert.stability_bound == pytest.approx(2.0 / omega, rel=1e-9)
    assert cert.stability_note == ""
