"""One sampler registry and one protocol (splitsde.diffusion.registry, .protocols).

References: score calls counted by a wrapper around the score (not by the library's counter);
the closed-form probability-flow map of Gaussian data (eigenbasis of the data covariance); the
source text of the package, parsed with ``ast`` (structural checks).
"""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
import torch

import splitsde.diffusion as dm
from splitsde.diffusion import registry
from splitsde.diffusion.protocols import Law, PlanProtocol, ProcessLike, SamplerProtocol

PACKAGE = Path(dm.__file__).resolve().parents[1]


class Counted:
    """A score callable that counts its calls."""

    def __init__(self, score) -> None:
        self.score = score
        self.calls = 0

    def __call__(self, *args):
        self.calls += 1
        return self.score(*args)


def _process_for(s: SamplerProtocol) -> dm.ForwardProcess:
    """The first of VP and PSLD the sampler runs on."""
    for name in ("vp", "psld-cifar10"):
        proc = dm.process(name)
        try:
            s.check_process(proc)
        except ValueError:
            continue
        return proc
    raise AssertionError(f"{s.name} runs on neither vp nor psld-cifar10")


@pytest.fixture(scope="module")
def data():
    return dm.target("gaussian-2")


# ---------------------------------------------------------------------------------------------
# every registered sampler satisfies the protocol, and so do its plans
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(dm.SAMPLERS))
def test_every_sampler_and_its_plan_satisfy_the_protocols(name, data):
    """Every registered sampler is a SamplerProtocol under its own name; its plan is a
    PlanProtocol whose declared weak order is the sampler's, and whose compiled NFE is the
    number of score calls of a run (counted here), except where the docs say it cannot be:
    adaptive solves (``None``, measured by the run) and the Poisson midpoint method (an
    expectation per sample; a batched run calls the field more often)."""
    s = dm.SAMPLERS[name]
    assert isinstance(s, SamplerProtocol)
    assert s.name == name and s.description and s.reference
    assert isinstance(s.stepwise, bool) and isinstance(s.reconstructed, bool)
    proc = _process_for(s)
    order = s.weak_order_for(proc)
    assert isinstance(order, int) and order >= 1
    score = Counted(data.score(proc))
    adaptive = name == "pf-dopri5"
    p = dm.plan(s, proc, score, **({} if adaptive else {"steps": 4}))
    assert isinstance(p, PlanProtocol)
    assert p.weak_order == order and p.sampler is s and p.process is proc
    assert p.steps == len(p.grid) - 1
    y0 = proc.prior(3, data.dim, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    calls_before = score.calls  # planning may evaluate nothing, but count from here
    res = p.run(y0, seed=0)
    calls = score.calls - calls_before
    assert res.nfe == calls, (res.nfe, calls)
    if adaptive:
        assert p.nfe is None
    elif name.startswith("pmm"):
        assert p.nfe > 0  # an expectation per sample (tests/diffusion/test_exponential.py)
    else:
        assert p.nfe == calls == res.nfe_steps + res.nfe_denoise
    assert bool(torch.isfinite(res.x).all())


@pytest.mark.parametrize("name", list(dm.PROCESSES))
def test_every_forward_process_is_process_like(name):
    """The kernels and the reverse family type their process as ProcessLike (so that they
    need not import the processes module); every registered process satisfies it."""
    assert isinstance(dm.process(name), ProcessLike)


def test_stepwise_samplers_expose_their_step_integrator(data):
    """``stepwise`` is the capability the k-diffusion and diffusers adapters check: stepwise
    plans carry the step integrator and denoiser; whole-trajectory solves do not, and the
    adapters refuse them with their own messages."""
    proc = dm.process("vp")
    for name, s in dm.SAMPLERS.items():
        try:
            s.check_process(proc)
        except ValueError:
            continue
        p = dm.plan(s, proc, data.score(proc), **({} if name == "pf-dopri5" else {"steps": 2}))
        assert hasattr(p, "integrator") == s.stepwise, name
    assert [n for n, s in dm.SAMPLERS.items() if not s.stepwise] == ["pf-dopri5", "pf-rk4"]
    from splitsde.diffusion.kdiffusion import sample as ksample

    with pytest.raises(ValueError, match="sampler pf-rk4 is a torchdiffeq solve; use a step-wise"):
        ksample(lambda x, sigma: x, torch.zeros(2, 1), [1.0, 0.5, 0.1], sampler="pf-rk4")


# ---------------------------------------------------------------------------------------------
# the registry: explicit, read-only, one name once
# ---------------------------------------------------------------------------------------------
def test_the_registry_lists_every_family_in_order_and_is_read_only():
    expected = [n for fam in registry.SAMPLER_FAMILIES.values() for n in fam]
    assert list(dm.SAMPLERS) == expected
    assert len(expected) == len(set(expected))
    assert {"em", "sps", "ddim", "deis-tab3", "pmm1-k20", "pf-dopri5"} <= set(dm.SAMPLERS)
    with pytest.raises(TypeError):
        dm.SAMPLERS["mine"] = dm.SAMPLERS["em"]  # type: ignore[index]
    with pytest.raises(TypeError):
        registry.SAMPLER_FAMILIES["splitting"]["mine"] = dm.SAMPLERS["em"]  # type: ignore[index]
    assert not hasattr(dm.SAMPLERS, "update")


def test_a_name_defined_twice_is_an_error():
    em = dm.SAMPLERS["em"]
    with pytest.raises(ValueError, match=r"^sampler name 'em' is defined twice \(family b\)$"):
        registry._collect({"a": {"em": em}, "b": {"em": em}})
    with pytest.raises(ValueError, match=r"^sampler family a: entry 'x' holds 'em'$"):
        registry._collect({"a": {"x": em}})


def test_sampler_lookup_options_and_errors():
    assert dm.sampler(" SPS ") is dm.SAMPLERS["sps"]
    assert dm.sampler("sps", lam_s=0.5).lam == {"x": 0.5}
    assert dm.sampler("reduced-oba", lam_s=0.5).lam == {"x": 0.5, "m": 1.0}
    with pytest.raises(ValueError, match=r"^unknown sampler 'nope'; samplers: em, pf-euler, "):
        dm.sampler("nope")
    with pytest.raises(ValueError, match=r"^unknown sampler option\(s\) \['rtol'\]$"):
        dm.sampler("pf-dopri5", rtol=1e-3)  # with_options(rtol=...) changes the attribute
    with pytest.raises(ValueError, match=r"^eval_at/time_label apply to reduced samplers, not em$"):
        dm.sampler("em", eval_at="start")
    with pytest.raises(TypeError, match="pf-rk4 is not a splitting integrator"):
        dm.plan("pf-rk4", "vp", lambda x, t: -x, steps=2, dtype=torch.float64)


def _writes_to_registry(source: str) -> list[str]:
    """Statements that change a mapping whose name ends in SAMPLERS or FAMILIES after it was
    bound: item assignment or deletion, augmented assignment, mutating method calls."""
    names = ("SAMPLERS", "FAMILIES")
    hits = []

    def named(node: ast.AST) -> bool:
        target = node.value if isinstance(node, ast.Subscript) else node
        return isinstance(target, ast.Name | ast.Attribute) and (
            (target.id if isinstance(target, ast.Name) else target.attr).endswith(names)
        )

    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Assign | ast.Delete):
            targets = node.targets
            hits += [ast.unparse(t) for t in targets if isinstance(t, ast.Subscript) and named(t)]
        elif isinstance(node, ast.AugAssign) and named(node.target):
            hits.append(ast.unparse(node))
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in ("update", "setdefault", "pop", "popitem", "clear", "__setitem__")
            and named(node.func.value)
        ):
            hits.append(ast.unparse(node))
    return hits


def test_no_module_writes_to_a_sampler_registry():
    """No module of the package mutates SAMPLERS (or a family's mapping): the registry module
    builds it once from the families' literal dictionaries."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        hits = _writes_to_registry(path.read_text())
        if hits:
            found[str(path.relative_to(PACKAGE.parent))] = hits
    assert not found


@pytest.mark.parametrize(
    "source",
    [
        "SAMPLERS.update(OTHER)",
        "dm.SAMPLERS['x'] = s",
        "EXPONENTIAL_SAMPLERS.setdefault('x', s)",
        "del SAMPLERS['em']",
        "SAMPLERS |= {}",
        "registry.SAMPLER_FAMILIES['a'] = {}",
    ],
)
def test_the_structural_check_finds_writes(source):
    assert len(_writes_to_registry(source)) == 1
    assert _writes_to_registry("SAMPLERS = {'em': s}\nx = SAMPLERS['em']") == []


def test_no_dispatch_on_sampler_or_plan_attributes():
    """Callers of samplers (the diffusion package, the adapters, the apps) use the protocol's
    members; nothing probes a sampler or a plan for one of them with hasattr/getattr."""
    members = {"plan", "run", "nfe", "weak_order", "exact_law", "integrator", "last_nfe"}
    found = []
    callers = [PACKAGE / d for d in ("diffusion", "interop", "cli", "examples")]
    for path in sorted(p for d in callers for p in d.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id in ("hasattr", "getattr")
                and len(node.args) >= 2
                and isinstance(node.args[1], ast.Constant)
                and node.args[1].value in members
            ):
                found.append(f"{path.relative_to(PACKAGE.parent)}: {ast.unparse(node)}")
    assert not found


# ---------------------------------------------------------------------------------------------
# PF-ODE plans through the protocol: the exact law
# ---------------------------------------------------------------------------------------------
def test_pfode_exact_law_is_the_closed_form_flow_law():
    """``pf-rk4``'s exact law (probed linear map, through the protocol) against the closed-form
    probability-flow map of Gaussian data: in the eigenbasis of the data covariance each
    coordinate of x - a_T mu scales by sqrt(v(eps)/v(T)), v = a^2 w + s. On the quadratic grid
    the error falls by about 2^4 from 20 to 40 steps (fourth order) and is below 1e-6 at 40;
    Law.nfe is the probe run's score calls (counted)."""
    proc = dm.process("vp")
    data = dm.target("gaussian-3")
    m0 = torch.tensor([0.3, -0.2, 0.1], dtype=torch.float64)
    c0 = torch.diag(torch.tensor([1.0, 0.5, 2.0], dtype=torch.float64))
    mean, cov = data.mean.numpy(), data.cov.numpy()
    a, S = proc.data_kernel(np.array([proc.T, proc.eps]))
    (aT, a1), (sT, s1) = a[:, 0], S[:, 0, 0]
    w, V = np.linalg.eigh(cov)
    M = V @ np.diag(np.sqrt((a1**2 * w + s1) / (aT**2 * w + sT))) @ V.T
    m_ref = a1 * mean + M @ (m0.numpy() - aT * mean)
    c_ref = M @ c0.numpy() @ M.T
    errors = []
    for steps in (20, 40):
        score = Counted(data.score(proc))
        p = dm.plan("pf-rk4", proc, score, steps=steps, grid="quadratic", denoise=False)
        law = p.exact_law(m0, c0)
        assert isinstance(law, Law) and law.kind == "gaussian"
        assert law.nfe == score.calls == steps * 4
        errors.append(
            max(np.abs(law.mean.numpy() - m_ref).max(), np.abs(law.cov.numpy() - c_ref).max())
        )
    assert errors[1] < 1e-6 and errors[0] / errors[1] > 10, errors
