"""Diffusion sampler quality per NFE on analytic targets, and the integrator's own overhead.

    python benchmarks/diffusion_quality.py                 # full size (the lead's run)
    python benchmarks/diffusion_quality.py --quick         # tiny sizes, a smoke test

Processes: PSLD in its CIFAR-10 configuration (Gamma = 0.01, nu = 4.01, beta = 8, M^-1 = 4) and
VP (linear beta, 0.1 -> 20). Targets: Gaussian data in d = 64 with a random covariance (exact
law of the generated samples by the exact analysis: KL and W2 to the data, no Monte Carlo; a
Monte Carlo fallback is used only when splitsde.analysis is missing), an 8-mode ring in 2-D and
an 8-mode mixture in 16-D (sliced W2, energy distance and mode-weight error against fresh data,
each with a standard error from independent batches, and the finite-sample floor).

Samplers: EM, SSCS, naive and reduced OBA / BAO / OBAB, SPS at NFE 10, 20, 50, 100, 200 (EM
also 500 and 1000). VP has one block, so only EM, SSCS and the probability-flow Euler sampler
apply there. Every run uses the exact score, so differences are discretisation error only.

Overhead: PSLD, CLD and VP samplers with a tiny MLP eps-network, batches 1000 and 4096, NFE 20
and 100, against hand-written loops (benchmarks/diffusion_overhead.py, run as a section here).

Writes a JSON file and PNG plots to --out, prints tables and an automatic verdict on the seed
paper's claims (Pandey, Rudolph & Mandt 2024): (i) naive splitting worse than EM at low NFE,
(ii) reduced much better than naive, (iii) SPS ahead of EM and SSCS at <= 100 NFE; and our
target: SPS at 50 NFE reaches EM's quality at >= 200 NFE.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch

import splitsde as sd
import splitsde.diffusion as dm
from splitsde.apps.cli.common import to_jsonable

PSLD_SAMPLERS = [
    "em",
    "sscs",
    "oba",
    "reduced-oba",
    "bao",
    "reduced-bao",
    "obab",
    "reduced-obab",
    "sps",
]
VP_SAMPLERS = ["em", "sscs", "pf-euler"]
NFES = [10, 20, 50, 100, 200]
EM_EXTRA = [500, 1000]
LOW_NFE = (10, 20, 50)
NAIVE_REDUCED = [("oba", "reduced-oba"), ("bao", "reduced-bao"), ("obab", "reduced-obab")]


def single_threaded_blas() -> Any:
    """Tiny-matrix LAPACK calls (kernels, grids) crawl with OpenBLAS threads on a loaded box."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover
        return None
    return threadpool_limits(limits=1, user_api="blas")


def run_quality(args: argparse.Namespace) -> list[dict[str, Any]]:
    quick = args.quick
    d_gauss = 8 if quick else 64
    targets = {
        f"gaussian-{d_gauss}": dm.GaussianData.random(d_gauss, seed=args.seed),
        "ring-8": dm.GaussianMixture.ring(8),
        "mixture-8x16": dm.GaussianMixture.random(8, 16, seed=args.seed),
    }
    nfes = [10, 20] if quick else NFES
    extra = [] if quick else EM_EXTRA
    n = 400 if quick else args.n
    exact_available = dm.comparison.has_exact_analysis()
    out = []
    for proc_name, samplers in (("psld-cifar10", PSLD_SAMPLERS), ("vp", VP_SAMPLERS)):
        for tname, tgt in targets.items():
            gaussian = isinstance(tgt, dm.GaussianData)
            exact = gaussian and exact_available
            started = time.perf_counter()
            comp = dm.compare(
                proc_name,
                tgt,
                samplers,
                nfes,
                n=n,
                seed=args.seed,
                exact=exact,
                batches=args.batches,
                progress=args.progress,
            )
            if extra:
                more = dm.compare(
                    proc_name,
                    tgt,
                    ["em"],
                    extra,
                    n=n,
                    seed=args.seed,
                    exact=exact,
                    batches=args.batches,
                    progress=args.progress,
                )
                comp.rows.extend(more.rows)
            elapsed = time.perf_counter() - started
            print(f"\n{comp.table()}")
            if gaussian and not exact:
                print("  (splitsde.analysis not available: Monte Carlo instead of the exact law)")
            print(f"  [{elapsed:.1f} s]")
            out.append(
                {
                    "process": proc_name,
                    "target": tname,
                    "target_name": comp.target,
                    "metric": comp.metric,
                    "exact": exact,
                    "rows": comp.rows,
                    "seconds": elapsed,
                }
            )
    return out


def ablation_samplers() -> list[dm.Sampler]:
    """The reconstructed choices of the reduced splitting samplers, one change at a time."""
    base = dm.sampler("reduced-oba")
    euler = sd.solvers.EulerMaruyama
    old = {"A": euler(reason="ablation"), "B": euler(reason="ablation")}
    return [
        base.with_options(name="reduced-oba"),
        dm.sampler("reduced-oba", time_label="mid").with_options(name="oba:label-mid"),
        dm.sampler("reduced-oba", time_label="end").with_options(name="oba:label-end"),
        base.with_options(name="oba:exp-euler", solvers={}),
        # the previous reconstruction: O = momentum noise only, B = the whole momentum drift
        base.with_options(name="abo:noise-O", split="abo", solvers=old),
        dm.sampler("reduced-oba", eval_at="start").with_options(
            name="abo:noise-O,start", split="abo", solvers=old
        ),
        # ... with the (expanding) momentum friction in O, solved exactly
        base.with_options(name="abo:friction-O", split="abo-friction", solvers=old),
        dm.sampler("sps", lam_s=0.0).with_options(name="sps(lam_s=0)"),
        dm.sampler("sps", lam_s=0.5).with_options(name="sps(lam_s=0.5)"),
        dm.sampler("sps", lam_s=2.0).with_options(name="sps(lam_s=2)"),
    ]


#: Samplers compared on the quadratic grid of the PSLD reference code as well.
GRID_SAMPLERS = ["em", "sscs", "reduced-oba", "sps"]


def run_ablation(args: argparse.Namespace) -> list[dict[str, Any]]:
    d = 8 if args.quick else 64
    nfes = [20] if args.quick else [20, 50, 100, 200]
    targets = {
        f"gaussian-{d}": dm.GaussianData.random(d, seed=args.seed),
        "ring-8": dm.GaussianMixture.ring(8),
    }
    out = []
    for tname, tgt in targets.items():
        exact = isinstance(tgt, dm.GaussianData) and dm.comparison.has_exact_analysis()
        runs = [("uniform", ablation_samplers())]
        if exact:  # exact and cheap: also the reference code's quadratic grid
            runs.append(("quadratic", GRID_SAMPLERS))
        for grid, samplers in runs:
            comp = dm.compare(
                "psld-cifar10",
                tgt,
                samplers,
                nfes,
                n=400 if args.quick else args.n,
                grid=grid,
                seed=args.seed,
                exact=exact,
                batches=args.batches,
                progress=args.progress,
            )
            print(f"\nAblation of the reconstructed choices ({grid} grid)\n{comp.table()}")
            out.append(
                {
                    "process": "psld-cifar10",
                    "target": tname,
                    "target_name": comp.target,
                    "grid": grid,
                    "metric": comp.metric,
                    "exact": exact,
                    "rows": comp.rows,
                }
            )
    return out


# ---------------------------------------------------------------------------------------------
# Verdicts on the seed paper's claims
# ---------------------------------------------------------------------------------------------
def _value(rows: list[dict], sampler: str, nfe: int, metric: str) -> tuple[float, float] | None:
    for r in rows:
        if r["sampler"] == sampler and r["nfe_budget"] == nfe and not r.get("error"):
            if r.get("diverged"):
                return math.inf, 0.0
            v = r.get(metric)
            if v is None:
                return None
            return float(v), float(r.get(f"{metric}_se") or 0.0)
    return None


def _better(
    a: tuple[float, float] | None, b: tuple[float, float] | None, factor: float = 1.0
) -> bool | None:
    """a better than b (lower by ``factor`` and by more than 2 combined standard errors)."""
    if a is None or b is None:
        return None
    (va, sa), (vb, sb) = a, b
    if not math.isfinite(vb):
        return math.isfinite(va)
    if not math.isfinite(va):
        return False
    return va * factor < vb and vb - va > 2 * math.hypot(sa, sb)


def verdicts(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for res in results:
        if res["process"] != "psld-cifar10":
            continue
        rows, m = res["rows"], res["metric"]
        nfes = sorted({r["nfe_budget"] for r in rows})
        low = [k for k in LOW_NFE if k in nfes]
        upto100 = [k for k in nfes if k <= 100]
        c1 = [
            _better(_value(rows, "em", k, m), _value(rows, naive, k, m))
            for naive, _ in NAIVE_REDUCED
            for k in low
        ]
        c2 = [
            _better(_value(rows, red, k, m), _value(rows, naive, k, m), factor=2.0)
            for naive, red in NAIVE_REDUCED
            for k in upto100
        ]
        c3 = [
            _better(_value(rows, "sps", k, m), _value(rows, other, k, m))
            for other in ("em", "sscs")
            for k in upto100
        ]
        sps50, em200 = _value(rows, "sps", 50, m), _value(rows, "em", 200, m)
        target = None
        if sps50 and em200:
            target = sps50[0] <= em200[0] + 2 * math.hypot(sps50[1], em200[1])

        def frac(xs):
            xs = [x for x in xs if x is not None]
            return f"{sum(xs)}/{len(xs)}" if xs else "n/a"

        out.append(
            {
                "target": res["target"],
                "metric": m,
                "(i) naive worse than EM at NFE<=50": frac(c1),
                "(ii) reduced < naive/2 at NFE<=100": frac(c2),
                "(iii) SPS better than EM and SSCS at NFE<=100": frac(c3),
                "target: SPS@50 <= EM@200": "n/a"
                if target is None
                else ("holds" if target else "fails"),
            }
        )
    return out


# ---------------------------------------------------------------------------------------------
def plots(results: list[dict[str, Any]], out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for res in results:
        m = res["metric"]
        fig, ax = plt.subplots(figsize=(6, 4))
        for name in dict.fromkeys(r["sampler"] for r in res["rows"]):
            pts = sorted(
                (r.get("nfe") or r["nfe_budget"], r[m])
                for r in res["rows"]
                if r["sampler"] == name
                and r.get(m) is not None
                and math.isfinite(r[m])
                and r[m] > 0
            )
            if pts:
                style = "--" if name in ("oba", "bao", "obab") else "-"
                ax.plot(*zip(*pts), style, marker="o", ms=3, label=name)
        floor = next((r.get(f"{m}_floor") for r in res["rows"] if r.get(f"{m}_floor")), None)
        if floor:
            ax.axhline(floor, color="grey", lw=0.8, ls=":", label="finite-sample floor")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("NFE (steps + denoising)")
        ax.set_ylabel(m)
        ax.set_title(f"{res['target_name']} / {res['process']}", fontsize=9)
        ax.legend(fontsize=7, ncol=2)
        fig.tight_layout()
        path = out / f"diffusion_{res['process']}_{res['target']}.png"
        fig.savefig(path, dpi=120)
        plt.close(fig)
        paths.append(str(path))
    return paths


def main(argv: list[str] | None = None) -> int:
    import diffusion_overhead  # a sibling script (its directory is on the path)

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes (smoke test)")
    p.add_argument("--n", type=int, default=10_000, help="samples per mixture run")
    p.add_argument("--batches", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="benchmarks/results/diffusion_quality")
    p.add_argument("--skip-overhead", action="store_true")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument(
        "--quality-threads", type=int, default=None, help="torch threads of the quality sections"
    )
    diffusion_overhead.add_arguments(p)  # --repeats, --threads, ... of the overhead section
    p.add_argument(
        "--sections",
        default="quality,ablation,exponential,overhead",
        help="comma-separated: quality, ablation, exponential (DEIS, Poisson midpoint, "
        "PF-ODE; benchmarks/diffusion_exponential.py), overhead",
    )
    args = p.parse_args(argv)
    sections = {s.strip() for s in args.sections.split(",") if s.strip()}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    limit = single_threaded_blas()
    if args.quality_threads:
        torch.set_num_threads(args.quality_threads)
    print(
        f"splitsde {sd.__version__}, torch {torch.__version__}, {torch.get_num_threads()} threads"
        f"{', quick' if args.quick else ''}"
    )
    results = run_quality(args) if "quality" in sections else []
    ablation = run_ablation(args) if "ablation" in sections else []
    claims = verdicts(results)
    if claims:
        print("\nClaims of the seed paper (count of comparisons that hold, significant at 2 SE):")
    for c in claims:
        print("  " + "; ".join(f"{k}: {v}" for k, v in c.items()))
    if "exponential" in sections:
        import diffusion_exponential

        print("\nExponential integrators, Poisson midpoint, probability-flow ODE:")
        diffusion_exponential.report(args, out)
    overhead = []
    if not args.skip_overhead and "overhead" in sections:
        print("\nTime outside the score network (benchmarks/diffusion_overhead.py):")
        if limit is not None:
            limit.restore_original_limits()
        overhead = diffusion_overhead.report(args, out)["rows"]
    figs = plots(results, out)
    path = out / ("diffusion_quality_quick.json" if args.quick else "diffusion_quality.json")
    path.write_text(
        json.dumps(
            to_jsonable(
                {
                    "quality": results,
                    "ablation": ablation,
                    "claims": claims,
                    "overhead": overhead,
                    "figures": figs,
                    "quick": args.quick,
                }
            ),
            indent=1,
        )
    )
    print(f"\nresults: {path}; figures: {', '.join(figs)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
