"""The method table in the docs is generated from the code's declarations."""

from __future__ import annotations

import dataclasses

import pytest

import splitsde as sd
from splitsde.apps.docs_tables import method_table
from splitsde.base import methods
from splitsde.compose import presets
from splitsde.interop.torchdiffeq import ODE_METHODS


def _rows(table: str) -> dict[str, list[str]]:
    out = {}
    for line in table.splitlines()[2:]:
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        out[cells[0]] = cells
    return out


def test_table_covers_presets_solvers_and_ode_methods():
    rows = _rows(method_table())
    names = " ".join(rows)
    for p in sd.PRESETS.values():
        assert p.name in names
    for s in ("Auto: shear", "Auto: linear / Ornstein-Uhlenbeck", "Exact", "ExponentialEuler"):
        assert s in rows
    assert rows["EulerMaruyama"][2] == "1"
    for m in ODE_METHODS:
        assert any(n.startswith(f"ODESolver('{m}')") for n in rows)
    assert rows["ODESolver('rk4')"][2] == "4" and rows["ODESolver('rk4')"][4] == "4"
    # the evaluations column is the compiled program's count
    system = sd.langevin.underdamped(sd.potentials.Harmonic(1.0))
    assert rows["BAOAB"][4] == str(system.integrator("BAOAB").evaluations_per_step) == "1"
    ghmc = next(r for n, r in rows.items() if n.startswith("GHMC"))
    assert ghmc[4] == str(system.integrator("GHMC").evaluations_per_step)
    assert rows["BAOAB"][5] == "B, A, O"


def test_changing_a_declaration_changes_the_table(monkeypatch):
    before = _rows(method_table())["BAOAB"]
    changed = dataclasses.replace(presets.PRESETS["BAOAB"], weak_order=3, invariant="changed")
    monkeypatch.setitem(presets.PRESETS, "BAOAB", changed)
    after = _rows(method_table())["BAOAB"]
    assert (before[2], after[2]) == ("2", "3") and after[3] == "changed"


def test_registry_accepts_new_methods_and_rejects_bad_rows(monkeypatch):
    monkeypatch.setattr(methods, "_DESCRIBERS", dict(methods._DESCRIBERS))
    row = methods.MethodInfo("SPS", "diffusion sampler", "1", "n/a", "1", "O", "Pandey et al.")
    methods.register_method("samplers", lambda: [row])
    assert methods.registered_methods("diffusion sampler") == [row]
    assert "| SPS | diffusion sampler |" in method_table()
    methods.register_method("broken", lambda: ["not a row"])
    with pytest.raises(TypeError, match="broken"):
        methods.registered_methods()
