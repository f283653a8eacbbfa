"""Packaging: torchsde and torchdiffeq are core dependencies; the heavy peers are extras, and
a feature whose extra is missing says which one to install (one line of the library's own
error type, never an ImportError trace).

The "missing" environment is this interpreter with the extras' packages made unimportable by
a meta-path finder in a subprocess, which is what a venv without them looks like to Python."""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from splitsde.base.optional import EXTRAS, MissingDependencyError, require

ROOT = Path(__file__).resolve().parents[2]
BLOCKED = ("openmm", "openmmtools", "mdtraj", "diffusers", "sklearn")

BLOCKER = textwrap.dedent(
    f"""
    import importlib.abc, sys

    class _Blocker(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in {BLOCKED!r}:
                raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
            return None

    sys.meta_path.insert(0, _Blocker())
    """
)

PROBE = textwrap.dedent(
    """
    import contextlib, io, json, traceback
    import torch

    out = {}

    def record(key, fn):
        try:
            fn()
        except BaseException as exc:  # what a user would see
            out[key] = {
                "types": [c.__name__ for c in type(exc).__mro__],
                "message": str(exc),
            }
        else:
            out[key] = None

    def openmm_backend():
        import splitsde.backends.openmm  # noqa: F401

    def mdtraj_writer():
        import numpy as np
        from splitsde.runtime.trajectory import Trajectory, TrajectoryWriter
        w = TrajectoryWriter(TMP, ("q",), 4)
        w.create()
        w.append(0.0, (torch.zeros(1, 2, 3),))
        w.flush()
        Trajectory(TMP).to_mdtraj(object())

    def digits_example():
        from splitsde.apps.examples.digits import load_digits
        load_digits()

    record("openmm", openmm_backend)
    record("mdtraj", mdtraj_writer)
    record("sklearn", digits_example)

    # the command line: one line on stderr, exit status 2, no traceback
    from splitsde.apps.cli import main
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(["digits", "--tiny", "--out", TMP + "-out", "--cache-dir", TMP + "-c"])
    out["cli"] = {"code": code, "stderr": err.getvalue()}

    # the core works without any extra: the PF-ODE sampler (torchdiffeq) and the torchsde view
    import splitsde as sd
    import splitsde.diffusion as dm
    proc = dm.process("vp")
    res = dm.sample("pf-dopri5", proc, dm.GaussianMixture.ring(8).score(proc), 16, shape=2,
                    nfe=60, seed=0)
    out["pf"] = {"finite": bool(torch.isfinite(res.x).all()), "nfe": res.nfe}
    import torchsde
    from splitsde.interop.torchsde import as_torchsde
    system = sd.langevin.underdamped(sd.potentials.Harmonic(), gamma=1.0, kT=1.0)
    view = as_torchsde(system, like={"q": (1,), "p": (1,)})
    y = torchsde.sdeint(view, torch.zeros(8, 2, dtype=torch.float64),
                        torch.tensor([0.0, 0.1], dtype=torch.float64), dt=0.05)
    out["torchsde"] = list(y.shape)
    out["blocked"] = [m for m in sys.modules if m.split(".")[0] in BLOCKED]
    print("RESULT" + json.dumps(out))
    """
)


@pytest.fixture(scope="module")
def without_extras(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("noextras") / "traj"
    code = BLOCKER + f"TMP = {str(tmp)!r}\nBLOCKED = {BLOCKED!r}\n" + PROBE
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT"))
    return json.loads(line[len("RESULT") :])


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("openmm", "the OpenMM backend needs openmm: pip install 'splitsde[md]'"),
        ("mdtraj", "writing molecular trajectories needs mdtraj: pip install 'splitsde[md]'"),
        ("sklearn", "the digits example needs scikit-learn: pip install 'splitsde[examples]'"),
    ],
)
def test_a_missing_extra_is_one_library_error_naming_the_extra(without_extras, key, message):
    got = without_extras[key]
    assert got is not None, f"{key}: the feature ran although its package was blocked"
    assert got["message"] == message
    # the library's own type, and still an ImportError for code that catches those
    assert got["types"][:3] == ["MissingDependencyError", "SplitsdeError", "ImportError"]


def test_the_command_line_reports_a_missing_extra_without_a_traceback(without_extras):
    cli = without_extras["cli"]
    assert cli["code"] == 2
    assert cli["stderr"] == (
        "splitsde digits: error: the digits example needs scikit-learn: "
        "pip install 'splitsde[examples]'\n"
    )


def test_the_core_runs_pf_ode_sampling_and_torchsde_without_extras(without_extras):
    assert without_extras["blocked"] == []  # nothing slipped past the blocker
    assert without_extras["pf"]["finite"] and 0 < without_extras["pf"]["nfe"] <= 60
    assert without_extras["torchsde"] == [2, 8, 2]


def test_installed_metadata_lists_torchsde_and_torchdiffeq_unconditionally():
    reqs = [Requirement(r) for r in importlib.metadata.requires("splitsde") or []]
    core = {r.name for r in reqs if r.marker is None}
    assert {"torch", "torchsde", "torchdiffeq"} <= core
    # the heavy peers are never unconditional
    assert not core & {"openmm", "openmmtools", "mdtraj", "diffusers", "scikit-learn"}
    extras = importlib.metadata.metadata("splitsde").get_all("Provides-Extra")
    assert set(EXTRAS) <= set(extras)


def test_pyproject_extras_match_the_table_of_extras():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    deps = {Requirement(r).name for r in meta["dependencies"]}
    assert {"torchsde", "torchdiffeq"} <= deps
    optional = meta["optional-dependencies"]
    for extra, packages in EXTRAS.items():
        assert {Requirement(r).name for r in optional[extra]} == set(packages), extra
    everything = {p for packages in EXTRAS.values() for p in packages}
    assert {Requirement(r).name for r in optional["all"]} == everything
    # every package of an extra is pinned for CI
    pinned = {
        line.split("==")[0]
        for line in (ROOT / "constraints.txt").read_text().splitlines()
        if "==" in line
    }
    assert everything | {"torchsde", "torchdiffeq"} <= pinned


def test_require_returns_the_module_and_keeps_other_import_errors(tmp_path, monkeypatch):
    import torch

    assert require("torch", extra="md", feature="x") is torch
    with pytest.raises(MissingDependencyError, match=r"^feature X needs nosuchpkg: pip install "):
        require("nosuchpkg.sub", extra="md", feature="feature X")
    # an installed package whose own dependency is missing keeps the real error
    (tmp_path / "brokenpkg").mkdir()
    (tmp_path / "brokenpkg" / "__init__.py").write_text("import nosuchdependency\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModuleNotFoundError) as info:
        require("brokenpkg", extra="md", feature="x")
    assert not isinstance(info.value, MissingDependencyError)
    assert info.value.name == "nosuchdependency"
    with pytest.raises(ValueError, match="unknown extra 'mdd'"):
        require("torch", extra="mdd", feature="x")
