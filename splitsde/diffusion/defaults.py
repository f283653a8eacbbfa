r"""Recommended time grid (and noise scale) of every sampler: data chosen by the exact analysis.

Every registered sampler carries a recommended grid per **process family** -- ``"vp"`` (one
block with a stationary law: VP, the cosine schedule), ``"ve"`` (one block without one) and
``"augmented"`` (several blocks: PSLD, CLD) -- and, where it has a noise scale to choose, a
recommended :math:`\lambda`. :func:`~splitsde.diffusion.samplers.plan`,
:func:`~splitsde.diffusion.samplers.sample` and :func:`~splitsde.diffusion.comparison.compare`
use them unless a grid is given.

The values below are not tuned by hand: they are the winners recorded by
``benchmarks/diffusion_defaults.py`` in ``benchmarks/results/diffusion_defaults.json``. The
script computes the **exact KL divergence** of every sampler's output law on Gaussian data
(:func:`splitsde.diffusion.metrics.exact_law`) for every candidate grid
(:data:`CANDIDATE_GRIDS`) and noise scale (:data:`CANDIDATE_LAM`), on the processes, targets and
NFE budgets of :data:`SELECTION`, and :func:`select` picks, per sampler and family, the grid
with the smallest mean :math:`\log_{10}\mathrm{KL}` over the cases (a failed or diverged run
counts as :math:`\mathrm{KL} = 10^8`). ``tests/diffusion/test_defaults.py`` re-runs
:func:`select` on the committed rows, checks that the data here are its winners, and recomputes
some rows exactly.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from splitsde.diffusion.schedules import OPTIMIZED_SCHEDULES

if TYPE_CHECKING:
    from splitsde.diffusion.processes import ForwardProcess

__all__ = [
    "CANDIDATE_GRIDS",
    "CANDIDATE_LAM",
    "FAMILIES",
    "RECOMMENDED_GRIDS",
    "RECOMMENDED_LAM",
    "RECOMMENDED_OPTIMIZED",
    "SELECTION",
    "family",
    "recommended_grid",
    "select",
]

FAMILIES = ("vp", "ve", "augmented")

#: Grids the selection compares (:func:`splitsde.diffusion.grids.time_grid` names).
CANDIDATE_GRIDS = ("uniform", "quadratic", "cubic", "logsnr", "edm")

#: Noise scales the selection compares, for the samplers that have one to choose.
CANDIDATE_LAM: dict[str, tuple[Any, ...]] = {
    "sps": ({"x": 0.0}, {"x": 0.5}, {"x": 1.0}),
    "cddim-sde": (0.25, 0.5, 1.0),
    "csps": ({"x": 0.0, "m": 1.0}, {"x": 0.5, "m": 1.0}),
}

#: The cases of the selection: processes (by family), Gaussian targets, NFE budgets.
SELECTION: dict[str, Any] = {
    "processes": {"vp": ["vp"], "ve": ["ve"], "augmented": ["cld", "psld-cifar10"]},
    "targets": ["gaussian-64"],
    "nfes": [10, 20, 50],
    "diverged_kl": 1e8,
}

#: Recommended grid per sampler and family (winners of benchmarks/diffusion_defaults.py).
RECOMMENDED_GRIDS: dict[str, dict[str, str]] = {
    "em": {"vp": "quadratic", "ve": "uniform", "augmented": "cubic"},
    "pf-euler": {"vp": "quadratic", "ve": "logsnr", "augmented": "quadratic"},
    "sscs": {"vp": "cubic", "ve": "uniform", "augmented": "logsnr"},
    "ddim": {"vp": "cubic", "ve": "uniform"},
    "ddpm": {"vp": "cubic", "ve": "uniform"},
    "deis-tab1": {"vp": "cubic", "ve": "uniform", "augmented": "quadratic"},
    "deis-tab2": {"vp": "cubic", "ve": "uniform", "augmented": "quadratic"},
    "deis-tab3": {"vp": "cubic", "ve": "uniform", "augmented": "cubic"},
    "deis-rhoab1": {"vp": "cubic", "ve": "uniform"},
    "deis-rhoab2": {"vp": "quadratic", "ve": "uniform"},
    "deis-rhoab3": {"vp": "quadratic", "ve": "uniform"},
    "deis-logrho1": {"vp": "quadratic", "ve": "uniform"},
    "deis-logrho2": {"vp": "edm", "ve": "edm"},
    "deis-logrho3": {"vp": "logsnr", "ve": "logsnr"},
    "rhork-euler": {"vp": "cubic", "ve": "uniform"},
    "rhork-heun": {"vp": "quadratic", "ve": "uniform"},
    "rhork-kutta3": {"vp": "quadratic", "ve": "uniform"},
    "rhork-rk4": {"vp": "quadratic", "ve": "uniform"},
    "ipndm": {"vp": "cubic", "ve": "uniform"},
    "ei-sde": {"vp": "quadratic", "ve": "uniform", "augmented": "quadratic"},
    "cddim": {"vp": "cubic", "ve": "uniform", "augmented": "cubic"},
    "cddim-sde": {"vp": "cubic", "ve": "uniform", "augmented": "cubic"},
    "cdeis1": {"vp": "quadratic", "ve": "uniform", "augmented": "quadratic"},
    "cdeis2": {"vp": "edm", "ve": "edm", "augmented": "quadratic"},
    "cdeis3": {"vp": "logsnr", "ve": "logsnr", "augmented": "cubic"},
    "pf-rk4": {"vp": "cubic", "ve": "edm", "augmented": "quadratic"},
    "oba": {"augmented": "quadratic"},
    "bao": {"augmented": "quadratic"},
    "obab": {"augmented": "cubic"},
    "vv": {"augmented": "edm"},
    "reduced-oba": {"augmented": "quadratic"},
    "reduced-bao": {"augmented": "quadratic"},
    "reduced-obab": {"augmented": "cubic"},
    "reduced-vv": {"augmented": "uniform"},
    "sps": {"augmented": "quadratic"},
    "csps": {"augmented": "cubic"},
    "conj-op": {"augmented": "cubic"},
    "conj-reduced-op": {"augmented": "quadratic"},
}

#: Recommended noise scale per sampler (winners of benchmarks/diffusion_defaults.py).
RECOMMENDED_LAM: dict[str, Any] = {
    "cddim-sde": 0.25,
    "sps": {"x": 0.0},
    "csps": {"x": 0.0, "m": 1.0},
}


#: Processes on which a sampler's stored optimized schedule (:mod:`splitsde.diffusion.schedules`)
#: beats its recommended named grid: the mean log10 KL over the selection cases of that process
#: is lower (winners of benchmarks/diffusion_defaults.py; ``select(...)[name]["optimized"]``).
RECOMMENDED_OPTIMIZED: dict[str, tuple[str, ...]] = {
    "cdeis2": ("psld-cifar10",),
    "cdeis3": ("cld", "psld-cifar10"),
}


def family(process: ForwardProcess) -> str:
    """``"augmented"`` (several blocks), ``"vp"`` (one block with a stationary law) or ``"ve"``."""
    if len(process.blocks) > 1:
        return "augmented"
    return "vp" if process.stationary_variance is not None else "ve"


def recommended_grid(
    name: str, process: ForwardProcess, eps: float | None = None, steps: int | None = None
) -> str:
    """The recommended grid of sampler ``name`` on ``process``: ``"optimized"`` where its stored
    schedule won (:data:`RECOMMENDED_OPTIMIZED`) and was computed for this smallest time
    ``eps`` (default: the process's) and for this number of ``steps`` (interpolated schedules
    are not recommended: they keep only part of the gain), else the family's named grid
    (``"uniform"`` when none is recorded, e.g. for a sampler the selection does not cover)."""
    stored = OPTIMIZED_SCHEDULES.get(name, {}).get(process.name, {})
    if (
        process.name in RECOMMENDED_OPTIMIZED.get(name, ())
        and (eps is None or float(eps) == process.eps)
        and (steps is None or int(steps) in stored)
    ):
        return "optimized"
    return RECOMMENDED_GRIDS.get(name, {}).get(family(process), "uniform")


def _score(kls: Iterable[float | None], diverged: float) -> float:
    vals = []
    for kl in kls:
        if kl is None or not math.isfinite(kl) or kl <= 0 or kl > diverged:
            kl = diverged
        vals.append(math.log10(kl))
    return sum(vals) / len(vals) if vals else math.inf


def _lam_key(lam: Any) -> str:
    if isinstance(lam, Mapping):
        return ",".join(f"{k}={float(v):g}" for k, v in sorted(lam.items()))
    return f"{float(lam):g}"


def select(rows: Iterable[Mapping[str, Any]], diverged: float | None = None) -> dict[str, Any]:
    r"""The winners from benchmark rows (dicts with ``sampler``, ``family``, ``grid``, ``lam``
    (``None`` when the sampler has no choice), ``process``, ``target``, ``nfe_budget``, ``kl``).

    Per sampler and family the score of a (grid, :math:`\lambda`) is the mean
    :math:`\log_{10}\mathrm{KL}` over its cases; :math:`\lambda` is chosen once per sampler (the
    smallest sum over families of the best grid's score), then the grid per family at that
    :math:`\lambda`. Ties go to the earlier candidate (:data:`CANDIDATE_GRIDS` order, then the
    order of :data:`CANDIDATE_LAM`). Returns ``{sampler: {"lam": ..., "grids": {family: grid},
    "scores": {family: {grid: score}}}}``.

    Rows on the grid ``"optimized"`` (a stored schedule, :mod:`splitsde.diffusion.schedules`)
    do not enter the family choice: per process, the optimized schedule's score over that
    process's cases is compared with the recommended named grid's over the same cases, and the
    sampler's entry gets ``"optimized": {process: {"score": ..., "named": ..., "wins": ...}}``.
    """
    diverged = SELECTION["diverged_kl"] if diverged is None else diverged
    kls: dict[tuple, list] = defaultdict(list)
    lam_value: dict[tuple[str, str], Any] = {}
    for r in rows:
        lk = None if r.get("lam") is None else _lam_key(r["lam"])
        if lk is not None:
            lam_value[(r["sampler"], lk)] = r["lam"]
        kls[(r["sampler"], lk, r["family"], r["grid"])].append(r.get("kl"))
    scores: dict[tuple, float] = {k: _score(v, diverged) for k, v in kls.items()}
    out: dict[str, Any] = {}
    for name in dict.fromkeys(k[0] for k in scores):
        lams = list(dict.fromkeys(k[1] for k in scores if k[0] == name))
        order = {_lam_key(v): i for i, v in enumerate(CANDIDATE_LAM.get(name, ()))}
        lams.sort(key=lambda lk: order.get(lk, len(order)) if lk is not None else -1)
        fams = list(dict.fromkeys(k[2] for k in scores if k[0] == name))

        def best(lk: str | None, fam: str, name: str = name) -> tuple[float, str]:
            cands = [(scores[(name, lk, fam, g)], i, g) for i, g in enumerate(CANDIDATE_GRIDS)
                     if (name, lk, fam, g) in scores]  # fmt: skip
            s, _, g = min(cands)
            return s, g

        totals = [(sum(best(lk, f)[0] for f in fams), i, lk) for i, lk in enumerate(lams)]
        _, _, lk = min(totals)
        out[name] = {
            "lam": None if lk is None else lam_value[(name, lk)],
            "grids": {f: best(lk, f)[1] for f in fams},
            "scores": {
                f: {
                    g: scores[(name, lk, f, g)]
                    for g in CANDIDATE_GRIDS
                    if (name, lk, f, g) in scores
                }
                for f in fams
            },
        }
        opt = _optimized_scores(rows, name, lk, out[name]["grids"], diverged)
        if opt:
            out[name]["optimized"] = opt
    return out


def _optimized_scores(
    rows: Iterable[Mapping[str, Any]],
    name: str,
    lk: str | None,
    grids: Mapping[str, str],
    diverged: float,
) -> dict[str, dict[str, Any]]:
    """Per process: the optimized schedule's score against the recommended named grid's."""
    by: dict[tuple[str, str], list] = defaultdict(list)
    for r in rows:
        if r["sampler"] != name or (None if r.get("lam") is None else _lam_key(r["lam"])) != lk:
            continue
        if r["grid"] == "optimized" or r["grid"] == grids.get(r["family"]):
            by[(r["process"], "optimized" if r["grid"] == "optimized" else "named")].append(
                r.get("kl")
            )
    out = {}
    for proc in dict.fromkeys(p for p, kind in by if kind == "optimized"):
        s_opt = _score(by[(proc, "optimized")], diverged)
        s_named = _score(by.get((proc, "named"), []), diverged)
        out[proc] = {"score": s_opt, "named": s_named, "wins": s_opt < s_named}
    return out
