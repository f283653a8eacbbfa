"""Samplers x NFE budgets on an analytic target: the engine behind ``splitsde compare``, the
diffusion demo and ``benchmarks/diffusion_quality.py``.

For Gaussian data the quality of a sampler is the exact KL divergence and 2-Wasserstein
distance between the law of its output (data block) and the data law, computed by the exact
analysis; for mixtures it is the sliced Wasserstein distance, the energy distance and the
mode-weight error of ``n`` generated samples against fresh data (each with a standard error).
All are distances: lower is better.

Sample-based distances have a positive **finite-sample floor**: the same distance between two
fresh data sets of the same size; below it a sampler cannot be told from the data. A row whose
main metric is non-finite or more than :data:`~splitsde.diffusion.metrics.DIVERGENCE_FACTOR`
(100) times its reference -- the floor, or for an exact law (no floor) the value of the prior
itself, i.e. of not sampling at all -- is **diverged**: it carries ``diverged: True`` and no
metric values (a number that large only measures how far the sampler blew up).
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from splitsde.analysis.affine import NotAffineError
from splitsde.base.progress import progress_bar
from splitsde.diffusion.defaults import recommended_grid
from splitsde.diffusion.grids import GridError
from splitsde.diffusion.metrics import (
    DIVERGENCE_FACTOR,
    METRICS,
    MetricInfo,
    diverged,
    gaussian_kl,
    gaussian_w2,
    mixture_metrics,
)
from splitsde.diffusion.planning import plan
from splitsde.diffusion.processes import ForwardProcess
from splitsde.diffusion.processes import process as get_process
from splitsde.diffusion.protocols import BudgetError, PlanProtocol, SamplerProtocol
from splitsde.diffusion.registry import sampler
from splitsde.diffusion.stability import StabilityWarning
from splitsde.diffusion.targets import GaussianData, GaussianMixture
from splitsde.symbolic.expint import GridTooShortError

__all__ = ["Comparison", "compare", "exact_kl", "has_exact_analysis", "target"]

_TARGET = re.compile(r"(gaussian|ring|mixture)-(\d+)(?:x(\d+))?\Z")


def target(spec: str | GaussianMixture, seed: int = 0) -> GaussianMixture:
    """An analytic target from a short spec: ``gaussian-D`` (random covariance in ``D``
    dimensions), ``ring-K`` (``K`` modes on a circle in 2-D), ``mixture-KxD`` (``K`` random
    modes in ``D`` dimensions)."""
    if isinstance(spec, GaussianMixture):
        return spec
    m = _TARGET.match(spec.strip().lower())
    if not m:
        raise ValueError(
            f"unknown target {spec!r}; use gaussian-D, ring-K or mixture-KxD "
            "(e.g. gaussian-64, ring-8, mixture-8x16)"
        )
    kind, a, b = m.group(1), int(m.group(2)), m.group(3)
    if a < 1 or (b is not None and int(b) < 1):
        raise ValueError(f"target {spec!r}: sizes must be positive")
    if kind == "gaussian":
        if b is not None:
            raise ValueError("gaussian-D takes one size")
        return GaussianData.random(a, seed=seed)
    if kind == "ring":
        if b is not None:
            raise ValueError("ring-K takes one size")
        return GaussianMixture.ring(a)
    if b is None:
        raise ValueError("mixture-KxD needs both sizes, e.g. mixture-8x16")
    return GaussianMixture.random(a, int(b), seed=seed)


def has_exact_analysis() -> bool:
    """Whether :mod:`splitsde.analysis` provides the exact propagation."""
    try:
        from splitsde.analysis import propagate  # noqa: F401
    except ImportError:
        return False
    return True


#: The metrics of a row that a divergence voids, by the row's main metric.
_VOIDED = {"kl": ("kl", "w2"), "sliced_w2": ("sliced_w2", "energy", "mode_weight")}


@dataclass
class Comparison:
    """Rows of a comparison: one dict per (sampler, NFE budget).

    ``floor`` is the finite-sample floor of the main metric (``None`` for an exact law);
    ``reference`` the value a diverged row exceeds :data:`DIVERGENCE_FACTOR` times (the floor,
    or for an exact law the prior's own value)."""

    process: str
    target: str
    metric: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    floor: float | None = None
    reference: float | None = None
    exact: bool = False

    @property
    def info(self) -> MetricInfo:
        return METRICS[self.metric]

    def header(self) -> list[str]:
        """What the numbers are: metric, direction, floor and the divergence rule."""
        info = self.info
        lines = [f"{self.metric} on {self.target} under {self.process}: {info.label}"]
        rule = f"above {DIVERGENCE_FACTOR:g} x {{}} or not finite"
        if self.exact:
            ref = "the prior's value" + (f" {self.reference:.3g}" if self.reference else "")
            lines.append(
                f"{info.better} is better; exact law, no finite-sample floor; "
                f"'diverged': {rule.format(ref)}"
            )
        else:
            floor = "n/a" if self.floor is None else f"{self.floor:.3g}"
            lines.append(
                f"{info.better} is better; finite-sample floor (data vs data) {floor}; "
                f"'diverged': {rule.format('the floor')}"
            )
        return lines

    def summary(self) -> dict[str, Any]:
        """The table's metadata for JSON output (the rows go alongside)."""
        return {
            "process": self.process,
            "target": self.target,
            "metric": self.metric,
            "metric_label": self.info.label,
            "better": self.info.better,
            "exact": self.exact,
            "floor": self.floor,
            "divergence_reference": self.reference,
            "divergence_factor": DIVERGENCE_FACTOR,
        }

    def table(self) -> str:
        """A text table: samplers down, NFE budgets across, the main metric in the cells."""
        nfes = sorted({r["nfe_budget"] for r in self.rows})
        names = list(dict.fromkeys(r["sampler"] for r in self.rows))
        cell = {(r["sampler"], r["nfe_budget"]): r for r in self.rows}
        width = 16
        head = f"{'sampler':16}" + "".join(f"{'NFE ' + str(n):>{width}}" for n in nfes)
        lines = [*self.header(), head]
        for name in names:
            row = f"{name:16}"
            for n in nfes:
                r = cell.get((name, n))
                row += f"{_cell(r, self.metric):>{width}}"
            lines.append(row)
        notes = sorted(
            {r["nfe"] for r in self.rows if r.get("nfe") and r["nfe"] != r["nfe_budget"]}
        )
        if notes:
            lines.append(
                "* NFE differs from the budget (steps cost more than one evaluation; expected "
                "count of a randomized sampler; measured count of an adaptive solve)"
            )
        if any(r.get("unstable") for r in self.rows):
            lines.append(
                "! the plan's steps exceed the sampler's stability bound on the stationary "
                "linearisation (splitsde.diffusion.stability)"
            )
        return "\n".join(lines)


def _cell(r: dict[str, Any] | None, metric: str) -> str:
    if r is None:
        return "-"
    star = "*" if r.get("nfe") and r["nfe"] != r["nfe_budget"] else ""
    star += "!" if r.get("unstable") else ""
    if r.get("error"):
        return r["error_short"]
    if r.get("diverged"):
        return "diverged" + star
    v = r[metric]
    se = r.get(f"{metric}_se")
    txt = f"{v:.3g}" if se is None else f"{v:.3g}±{se:.1g}"
    return txt + star


def _record_warnings(row: dict[str, Any], caught: list[warnings.WarningMessage]) -> None:
    """A plan's :class:`StabilityWarning` goes into its row (``unstable``, ``stability_bound``;
    the table marks the cell with ``!``); other warnings are passed on."""
    for w in caught:
        if isinstance(w.message, StabilityWarning):
            row.update(unstable=True, stability_bound=w.message.bound)
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


def _flag_divergence(row: dict[str, Any], metric: str, reference: float | None) -> None:
    """Mark ``row`` diverged (and drop its metric values) or not, see the module docstring."""
    value = row.get(metric)
    if not diverged(value, reference):
        row["diverged"] = False
        return
    why = "not finite" if value is None or not math.isfinite(value) else (
        f"above {DIVERGENCE_FACTOR:g} x {reference:.3g}"
    )  # fmt: skip
    for key in _VOIDED[metric]:
        row.pop(key, None)
        row.pop(f"{key}_se", None)
    row.update(diverged=True, diverged_reason=f"{metric} {why}")


def compare(
    process: str | ForwardProcess,
    target_: str | GaussianMixture,
    samplers: Sequence[str | SamplerProtocol],
    nfes: Sequence[int],
    *,
    n: int = 2000,
    grid: str | None = None,
    eps: float | None = None,
    seed: int = 0,
    prior: str = "stationary",
    exact: bool | None = None,
    batches: int = 10,
    progress: bool | None = None,
    on_row: Callable[[dict[str, Any]], None] | None = None,
) -> Comparison:
    """Run every sampler at every NFE budget and measure its quality.

    ``grid=None`` runs every sampler on its recommended grid (:mod:`splitsde.diffusion.defaults`).
    ``exact`` (default: for Gaussian data when the exact analysis is available) uses the exact
    law instead of samples; ``prior`` is ``"stationary"`` (the process's prior, as in practice)
    or ``"exact"`` (the exact marginal at ``T``).
    """
    proc = get_process(process)
    tgt = target(target_, seed)
    gaussian = isinstance(tgt, GaussianData)
    if exact is None:
        exact = gaussian and has_exact_analysis()
    if exact and not gaussian:
        raise ValueError("the exact law needs Gaussian data (a gaussian-D target)")
    if prior not in ("stationary", "exact"):
        raise ValueError("prior must be 'stationary' or 'exact'")
    score = tgt.score(proc)
    metric = "kl" if exact else "sliced_w2"
    comp = Comparison(proc.name, tgt.name, metric, exact=exact)
    if exact:  # the prior's own distance to the data: the scale of "not sampling at all"
        m0, c0 = _prior_law(proc, tgt, prior)
        d = tgt.dim
        comp.reference = gaussian_kl(m0[:d], c0[:d, :d], tgt.mean, tgt.cov)
    jobs = [(s, k) for s in samplers for k in nfes]
    bar = progress_bar(len(jobs), "compare", progress, unit="run")
    for name, budget in jobs:
        s = sampler(name)
        if bar is not None:
            bar.set_postfix_str(f"{s.name} NFE {budget}")
        row: dict[str, Any] = {
            "sampler": s.name,
            "nfe_budget": int(budget),
            "grid": grid or recommended_grid(s.name, proc, eps),
        }
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", StabilityWarning)
                p = plan(s, proc, score, nfe=budget, grid=grid, eps=eps)
            _record_warnings(row, caught)
            row.update(steps=p.steps, nfe=p.nfe, weak_order=p.weak_order)
            if grid is None:  # the recommended grid may depend on the number of steps
                row["grid"] = recommended_grid(s.name, proc, eps, p.steps)
            if exact:
                row.update(_exact_row(p, proc, tgt, prior))
            else:
                row.update(_sample_row(p, proc, tgt, n, seed, prior, batches))
                if comp.floor is None and f"{metric}_floor" in row:
                    comp.floor = comp.reference = row[f"{metric}_floor"]
            _flag_divergence(row, metric, row.get(f"{metric}_floor", comp.reference))
        except (BudgetError, GridTooShortError) as err:
            row.update(error=str(err), error_short="budget<1 step")
        except NotAffineError as err:
            row.update(error=str(err), error_short="no exact law")
        except GridError as err:
            if grid != "optimized":  # a bad grid is the caller's error, for every sampler
                raise
            row.update(error=str(err), error_short="no schedule")
        except FloatingPointError as err:
            row.update(error=str(err), error_short="diverged", diverged=True)
        comp.rows.append(row)
        if on_row is not None:
            on_row(row)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return comp


def _prior_law(
    proc: ForwardProcess, tgt: GaussianData, prior: str
) -> tuple[torch.Tensor, torch.Tensor]:
    if prior == "exact":
        return tgt.law(proc, proc.T)
    d = tgt.dim
    var = torch.tensor([v for v in proc.prior_variance() for _ in range(d)], dtype=torch.float64)
    return torch.zeros(len(var), dtype=torch.float64), torch.diag(var)


def exact_kl(
    p: PlanProtocol, target_: str | GaussianData, prior: str = "stationary", seed: int = 0
) -> float:
    """The exact KL divergence of a plan's output law (data block) to Gaussian data, started
    from the prior (``"stationary"`` or ``"exact"``); ``inf`` when the law is not finite or
    its covariance is not positive definite."""
    tgt = target(target_, seed)
    if not isinstance(tgt, GaussianData):
        raise ValueError("the exact KL needs Gaussian data (a gaussian-D target)")
    if prior not in ("stationary", "exact"):
        raise ValueError("prior must be 'stationary' or 'exact'")
    return float(_exact_row(p, p.process, tgt, prior)["kl"])


def _exact_row(
    p: PlanProtocol, proc: ForwardProcess, tgt: GaussianData, prior: str = "stationary"
) -> dict:
    m0, c0 = _prior_law(proc, tgt, prior)
    out: dict[str, Any] = {}
    law = p.exact_law(m0, c0)
    mean, cov = law.mean, law.cov
    if law.nfe is not None:  # a probed solve: the score evaluations it measured
        out["nfe"] = law.nfe
    if law.kind == "moments":  # randomized: exact mean and covariance of a mixture
        out["law"] = "moments"
    d = tgt.dim
    mx, cx = mean[:d], cov[:d, :d]
    finite = bool(torch.isfinite(mx).all() and torch.isfinite(cx).all())
    if not finite:
        return {**out, "kl": float("inf"), "w2": float("inf")}
    try:
        kl = gaussian_kl(mx, cx, tgt.mean, tgt.cov)
    except RuntimeError:  # the output covariance is not positive definite
        kl = float("inf")
    return {**out, "kl": kl, "w2": gaussian_w2(mx, cx, tgt.mean, tgt.cov)}


def _sample_row(
    p: PlanProtocol,
    proc: ForwardProcess,
    tgt: GaussianMixture,
    n: int,
    seed: int,
    prior: str,
    batches: int,
) -> dict:
    gen = torch.Generator().manual_seed(seed + 7919)
    if prior == "exact":
        y0 = tgt.sample_marginal(proc, proc.T, n, generator=gen, dtype=torch.float64)
    else:
        y0 = proc.prior(n, tgt.dim, generator=gen, dtype=torch.float64)
    res = p.run(y0, seed=seed, progress=False)
    x = res.x
    out: dict[str, Any] = {"nfe": res.nfe, "wall_time": res.wall_time}
    if not torch.isfinite(x).all():
        out.update(sliced_w2=float("inf"), energy=float("inf"), mode_weight=float("inf"))
        return out
    mm = mixture_metrics(x, tgt, batches=batches, seed=seed + 1)
    for k in ("sliced_w2", "energy", "mode_weight"):
        out[k] = mm[k].value
        out[f"{k}_se"] = mm[k].se
        out[f"{k}_floor"] = mm[f"{k}_floor"].value
    return out
