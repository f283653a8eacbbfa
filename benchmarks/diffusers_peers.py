"""splitsde samplers against diffusers' schedulers on VP with the exact score, at NFE 5, 10, 20.

    python benchmarks/diffusers_peers.py          # full size (benchmarks/results/...)
    python benchmarks/diffusers_peers.py --quick  # a smoke test (seconds)

The docs table (docs/diffusion-diffusers.md) is generated from the JSON at build time.

Problem: the VP process with the linear schedule (beta 0.1 -> 20, T = 1, eps = 1e-3); diffusers'
schedulers get the same process as their discrete "training" schedule (1000 timesteps,
alpha_bar_i = alpha_bar(t_i), t_i = (i + 1) / 1000, passed as ``trained_betas``). Targets:
Gaussian data in 8-D with a random covariance (condition number 100) -- every sampler with the
exact (affine) score maps the Gaussian prior to a Gaussian, whose law is computed exactly: by
splitsde's analysis for splitsde, by probing the scheduler loop with the zero vector and the unit
vectors for diffusers -- scored by KL(output || data); and an 8-mode ring in 2-D, scored by the
sliced 2-Wasserstein distance of 10^4 samples to fresh data (± standard error over 10 batches,
with the finite-sample floor). Both libraries evaluate the exact noise prediction
eps = -sigma * score at the noise level the sampler itself works at (for diffusers: its
``sigmas`` or ``alphas_cumprod`` at the step), so the differences are the samplers'
discretisation errors (diffusers' rounding of Karras / Lu timesteps to integers, which a trained
network would see, is not charged to it).

splitsde samplers run with their default grid as ``dm.plan`` provides it (so the table follows
the library's defaults when it is re-run), NFE counting the final denoising step. diffusers
schedulers run with their defaults (``clip_sample=False`` for DDIM: the data are not images),
``num_inference_steps`` = NFE: DDIM, DPM-Solver++ 2M and 3M with Karras and with Lu
(log-SNR-uniform) sigmas, UniPC (bh2), DEIS (multistep, order 2) and Euler.

A value beyond 100 times its reference (the prior's KL for the exact law, the finite-sample
floor for the ring) or non-finite is reported as diverged, as ``splitsde compare`` does.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

import splitsde as sd
import splitsde.diffusion as dm
from splitsde.apps.cli.common import to_jsonable
from splitsde.diffusion.grids import _invert_noise_level
from splitsde.diffusion.metrics import DIVERGENCE_FACTOR, diverged

NFES = [5, 10, 20]
SPLITSDE = ["ddim", "em", "deis-tab3", "deis-rhoab3", "deis-logrho3", "ipndm", "rhork-heun"]
N_TRAIN = 1000


def diffusers_schedulers() -> dict[str, tuple[str, dict[str, Any]]]:
    """Name -> (diffusers class, options) of the peers."""
    dpm = {"algorithm_type": "dpmsolver++"}
    return {
        "DDIM": ("DDIMScheduler", {"clip_sample": False}),
        "DPM++ 2M Karras": ("DPMSolverMultistepScheduler", {**dpm, "use_karras_sigmas": True}),
        "DPM++ 2M Lu": ("DPMSolverMultistepScheduler", {**dpm, "use_lu_lambdas": True}),
        "DPM++ 3M Karras": (
            "DPMSolverMultistepScheduler",
            {**dpm, "solver_order": 3, "use_karras_sigmas": True},
        ),
        "DPM++ 3M Lu": (
            "DPMSolverMultistepScheduler",
            {**dpm, "solver_order": 3, "use_lu_lambdas": True},
        ),
        "UniPC": ("UniPCMultistepScheduler", {}),
        "DEIS": ("DEISMultistepScheduler", {}),
        "Euler": ("EulerDiscreteScheduler", {}),
    }


class Problem:
    """The VP process, its discrete schedule for diffusers and the exact noise prediction of a
    target at any alpha_bar."""

    def __init__(self, target: dm.GaussianMixture) -> None:
        self.proc = dm.process("vp")
        self.target = target
        t = np.arange(1, N_TRAIN + 1, dtype=np.float64) / N_TRAIN
        a, _ = self.proc.data_kernel(t)
        abar = a[:, 0] ** 2
        self.betas = 1.0 - abar / np.concatenate([[1.0], abar[:-1]])
        self._times: dict[float, float] = {}

    def time_of(self, abar: float) -> float:
        """The diffusion time of ``abar`` (bisection on the noise level, float64)."""
        hit = self._times.get(abar)
        if hit is None:
            sig = np.array([math.sqrt((1 - abar) / abar)])
            hit = float(_invert_noise_level(self.proc, sig, 1e-12, self.proc.T * 1.01)[0])
            self._times[abar] = hit
        return hit

    def eps(self, x: torch.Tensor, abar: float) -> torch.Tensor:
        """The exact noise prediction at the VP marginal with ``abar``."""
        t = self.time_of(float(abar))
        score = self.target.score_at(self.proc, t, [x])
        return dm.eps_from_score(self.proc, score, t)[0]


def run_diffusers(problem: Problem, cls: str, options: dict, nfe: int, x: torch.Tensor):
    """The pipelines' loop with the exact noise prediction; returns the output and the model
    calls made."""
    import diffusers

    sched = getattr(diffusers, cls)(trained_betas=problem.betas.tolist(), **options)
    sched.set_timesteps(nfe)
    x = x * float(sched.init_noise_sigma)
    calls = 0
    for k, t in enumerate(sched.timesteps):
        if hasattr(sched, "sigmas") and cls != "DDIMScheduler":
            sigma = float(sched.sigmas[k])
            abar = 1.0 / (1.0 + sigma**2)
        else:
            abar = float(sched.alphas_cumprod[int(t)])
        eps = problem.eps(sched.scale_model_input(x, t), abar)
        calls += 1
        x = sched.step(eps, t, x).prev_sample
    return x, calls, float(sched.init_noise_sigma)


def _flag(row: dict[str, Any], metric: str, reference: float) -> dict[str, Any]:
    value = row.get(metric)
    row["diverged"] = diverged(value, reference)
    if row["diverged"]:
        for k in (metric, f"{metric}_se", "w2"):
            row.pop(k, None)
    return row


def exact_rows(problem: Problem, nfes: list[int], reference: float) -> list[dict[str, Any]]:
    tgt = problem.target
    d = tgt.dim
    probe = torch.cat([torch.zeros(1, d), torch.eye(d)]).to(torch.float64)
    rows = []
    for name, (cls, options) in diffusers_schedulers().items():
        for nfe in nfes:
            out, calls, s0 = run_diffusers(problem, cls, options, nfe, probe)
            b = out[0]
            A = (out[1:] - b).T / s0  # columns: the response to unit inputs of the scaled prior
            cov = s0**2 * A @ A.T
            row: dict[str, Any] = {"library": "diffusers", "sampler": name, "nfe_budget": nfe}
            row["nfe"] = calls
            finite = bool(torch.isfinite(cov).all() and torch.isfinite(b).all())
            try:
                row["kl"] = dm.gaussian_kl(b, cov, tgt.mean, tgt.cov) if finite else math.inf
            except RuntimeError:  # not positive definite
                row["kl"] = math.inf
            rows.append(_flag(row, "kl", reference))
    return rows


def sample_rows(
    problem: Problem, nfes: list[int], n: int, batches: int, seed: int
) -> list[dict[str, Any]]:
    tgt = problem.target
    rows = []
    for name, (cls, options) in diffusers_schedulers().items():
        for nfe in nfes:
            gen = torch.Generator().manual_seed(seed + 7919)
            x0 = torch.randn(n, tgt.dim, generator=gen, dtype=torch.float64)
            out, calls, _ = run_diffusers(problem, cls, options, nfe, x0)
            row: dict[str, Any] = {"library": "diffusers", "sampler": name, "nfe_budget": nfe}
            row["nfe"] = calls
            if torch.isfinite(out).all():
                mm = dm.mixture_metrics(out, tgt, batches=batches, seed=seed + 1)
                row.update(
                    sliced_w2=mm["sliced_w2"].value,
                    sliced_w2_se=mm["sliced_w2"].se,
                    sliced_w2_floor=mm["sliced_w2_floor"].value,
                )
            else:
                row["sliced_w2"] = math.inf
            rows.append(_flag(row, "sliced_w2", row.get("sliced_w2_floor", math.inf)))
    return rows


def run(args: argparse.Namespace) -> dict[str, Any]:
    nfes = [5] if args.quick else NFES  # NFE 5 is needed by the cross-check
    n, batches = (400, 4) if args.quick else (args.n, args.batches)
    samplers = ["ddim", "deis-tab3"] if args.quick else SPLITSDE
    d = 4 if args.quick else 8
    targets = {f"gaussian-{d}": dm.GaussianData.random(d, seed=args.seed), "ring-8": None}
    targets["ring-8"] = dm.GaussianMixture.ring(8)
    blocks = []
    for tname, tgt in targets.items():
        exact = isinstance(tgt, dm.GaussianData)
        started = time.perf_counter()
        comp = dm.compare(
            "vp", tgt, samplers, nfes, n=n, seed=args.seed, exact=exact, batches=batches,
            progress=args.progress,
        )  # fmt: skip
        rows = [{"library": "splitsde", **r} for r in comp.rows]
        problem = Problem(tgt)
        if exact:
            rows += exact_rows(problem, nfes, comp.reference)
        else:
            rows += sample_rows(problem, nfes, n, batches, args.seed)
        # Cross-check of the two implementations: diffusers' Euler (Euler in sigma = DDIM) on
        # its linspace timesteps and splitsde's DDIM on the uniform grid take the same steps
        # except the last one, so their values at NFE 5 must nearly agree.
        uniform = dm.compare(
            "vp", tgt, ["ddim"], [5], n=n, seed=args.seed, exact=exact, batches=batches,
            grid="uniform", progress=False,
        )  # fmt: skip
        euler = next(r for r in rows if r["sampler"] == "Euler" and r["nfe_budget"] == 5)
        cross_check = {
            "nfe": 5,
            "splitsde ddim, uniform grid": uniform.rows[0][comp.metric],
            "diffusers Euler": euler[comp.metric],
        }
        blocks.append(
            {
                "target": tname,
                "target_name": comp.target,
                "metric": comp.metric,
                "exact": exact,
                "floor": comp.floor,
                "divergence_reference": comp.reference,
                "rows": rows,
                "cross_check": cross_check,
                "seconds": time.perf_counter() - started,
            }
        )
        print(table(blocks[-1]))
    return {
        "process": "vp",
        "nfes": nfes,
        "divergence_factor": DIVERGENCE_FACTOR,
        "blocks": blocks,
        "quick": args.quick,
        "versions": {"splitsde": sd.__version__, "torch": torch.__version__,
                     "diffusers": __import__("diffusers").__version__},
    }  # fmt: skip


def _cell(r: dict[str, Any] | None, metric: str) -> str:
    if r is None:
        return "-"
    if r.get("error"):
        return r.get("error_short", "error")
    if r.get("diverged"):
        return "diverged"
    se = r.get(f"{metric}_se")
    star = "*" if r.get("nfe") not in (None, r["nfe_budget"]) else ""
    return f"{r[metric]:.3g}" + (f"±{se:.1g}" if se is not None else "") + star


def table(block: dict[str, Any]) -> str:
    m = block["metric"]
    nfes = sorted({r["nfe_budget"] for r in block["rows"]})
    cell = {(r["library"], r["sampler"], r["nfe_budget"]): r for r in block["rows"]}
    names = list(dict.fromkeys((r["library"], r["sampler"]) for r in block["rows"]))
    floor = "" if block["floor"] is None else f"; floor (data vs data) {block['floor']:.3g}"
    lines = [f"{m} on {block['target_name']} under VP (lower is better{floor})"]
    lines.append(f"{'library':10} {'sampler':16}" + "".join(f"{'NFE ' + str(k):>14}" for k in nfes))
    for lib, s in names:
        cells = "".join(f"{_cell(cell.get((lib, s, k)), m):>14}" for k in nfes)
        lines.append(f"{lib:10} {s:16}{cells}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes (smoke test)")
    p.add_argument("--n", type=int, default=10_000, help="samples per ring run")
    p.add_argument("--batches", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="benchmarks/results")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None)
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result = run(args)
    path = out / ("diffusers_peers_quick.json" if args.quick else "diffusers_peers.json")
    path.write_text(json.dumps(to_jsonable(result), indent=1))
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
