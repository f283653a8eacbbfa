"""Recommended grid (and noise scale) of every diffusion sampler, chosen by the exact analysis.

    python benchmarks/diffusion_defaults.py            # full selection (writes the JSON below)
    python benchmarks/diffusion_defaults.py --quick    # smoke test: tiny sizes, not a result

For every registered sampler, every process of splitsde.diffusion.defaults.SELECTION where it
applies (VP; VE; CLD and PSLD in its CIFAR-10 configuration), every Gaussian target (8-D and
64-D, random covariances of condition 100), every NFE budget (10, 20, 50), every candidate grid
(uniform, quadratic, cubic, log-SNR, EDM rho = 7; and the sampler's stored optimized schedule,
splitsde.diffusion.schedules, where it has one for the process) and every candidate noise scale
(SPS's lambda_s, cddim-sde's lambda), the exact KL divergence of the sampler's output law to the
data (splitsde.analysis propagates the compiled steps; no Monte Carlo).
splitsde.diffusion.defaults .select then picks the grid per sampler and process family with the
smallest mean log10 KL; the code's RECOMMENDED_GRIDS / RECOMMENDED_LAM must equal these winners
(checked by tests/diffusion/test_defaults.py against the committed JSON).

Also written: the stability bound h* of every sampler on the stationary linearisation (VP, CLD,
PSLD; splitsde.diffusion.stability), and a sample-based section on the 8-mode ring under PSLD
(sliced W2 of 10^4 samples against fresh data, with the finite-sample floor) for the samplers
of issue 14's targets on their recommended grids. Output:
benchmarks/results/diffusion_defaults.json (or --out).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import torch

import splitsde.diffusion as dm
from splitsde.apps.cli.common import to_jsonable
from splitsde.diffusion import defaults as dd
from splitsde.diffusion.schedules import has_optimized_schedule
from splitsde.diffusion.stability import StabilityWarning

#: Samplers left out of the grid selection, with the reason.
EXCLUDED = {"pf-dopri5": "adaptive solve: the grid only fixes its end points"}
EXCLUDED.update(
    {
        n: "randomized (Poisson midpoint): exact moments of the mixture law cost about a minute "
        "per run at 64-D; it keeps the uniform grid"
        for n in ("pmm1-k10", "pmm1-k20", "pmm1-k40", "pmm2-k20", "pmm1-k20-vr")
    }
)
RING_SAMPLERS = ["em", "sscs", "sps", "cddim", "cddim-sde", "cdeis1", "cdeis2", "cdeis3"]
STABILITY_PROCESSES = ["vp", "cld", "psld-cifar10"]


def single_threaded_blas() -> Any:
    """Tiny-matrix LAPACK calls crawl with OpenBLAS threads on a loaded box."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover
        return None
    return threadpool_limits(limits=1, user_api="blas")


def applicable(name: str, proc: dm.ForwardProcess) -> bool:
    try:
        dm.sampler(name).check_process(proc)
    except ValueError:
        return False
    return True


def candidate_grids(name: str, proc: dm.ForwardProcess) -> tuple[str, ...]:
    """The named candidates, and the stored optimized schedule where the sampler has one."""
    extra = ("optimized",) if has_optimized_schedule(name, proc) else ()
    return tuple(dd.CANDIDATE_GRIDS) + extra


def run_selection(args: argparse.Namespace) -> list[dict[str, Any]]:
    sel = dd.SELECTION
    procs = sel["processes"]
    targets = sel["targets"]
    nfes = sel["nfes"]
    names = [n for n in dm.SAMPLERS if n not in EXCLUDED]
    if args.quick:
        procs = {"augmented": ["psld-cifar10"]}
        targets = ["gaussian-2"]
        nfes = [10]
        names = ["em", "csps"]
    if args.samplers:
        names = [n for n in names if n in args.samplers]
    rows: list[dict[str, Any]] = []
    for fam, pnames in procs.items():
        for pname in pnames:
            proc = dm.process(pname)
            for tname in targets:
                tgt = dm.target(tname, seed=0)
                for name in names:
                    if not applicable(name, proc):
                        continue
                    started = time.perf_counter()
                    for lam in dd.CANDIDATE_LAM.get(name, (None,)):
                        s = dm.sampler(name) if lam is None else dm.sampler(name, lam=lam)
                        for grid in candidate_grids(name, proc):
                            for nfe in nfes:
                                with warnings.catch_warnings(record=True) as caught:
                                    warnings.simplefilter("always", StabilityWarning)
                                    comp = dm.compare(
                                        proc, tgt, [s], [nfe], grid=grid, exact=True,
                                        progress=False,
                                    )  # fmt: skip
                                (row,) = comp.rows
                                warned = any(
                                    isinstance(w.message, StabilityWarning) for w in caught
                                )
                                rows.append(
                                    {
                                        "sampler": name,
                                        "family": fam,
                                        "process": pname,
                                        "target": tname,
                                        "grid": grid,
                                        "lam": lam,
                                        "nfe_budget": nfe,
                                        "nfe": row.get("nfe"),
                                        "kl": row.get("kl"),
                                        "w2": row.get("w2"),
                                        "error": row.get("error_short"),
                                        "stability_warning": warned,
                                    }
                                )
                    if args.progress:
                        print(
                            f"  {pname:14} {tname:12} {name:14} "
                            f"{time.perf_counter() - started:6.1f} s",
                            file=sys.stderr,
                            flush=True,
                        )
    return rows


def run_stability(args: argparse.Namespace) -> list[dict[str, Any]]:
    out = []
    pnames = ["psld-cifar10"] if args.quick else STABILITY_PROCESSES
    names = ["em"] if args.quick else list(dm.SAMPLERS)
    for pname in pnames:
        proc = dm.process(pname)
        for name in names:
            if not applicable(name, proc):
                continue
            started = time.perf_counter()
            try:
                b = dm.stability_bound(name, proc).to_json()
            except Exception as err:  # recorded, not fatal: the other sections still run
                b = {"sampler": name, "process": pname, "bound": None, "h_max": None,
                     "method": "not computed", "reason": f"error: {err}"}  # fmt: skip
            out.append({**b, "seconds": time.perf_counter() - started})
    return out


def run_ring(args: argparse.Namespace, selection: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Each sampler on the grid (and noise scale) the selection of this run recommends for the
    augmented family (the code's recommendation when the selection did not run)."""
    n = 200 if args.quick else args.n
    names = ["cddim"] if args.quick else RING_SAMPLERS
    rows = []
    for name in names:
        sel = (selection or {}).get(name)
        grid = sel["grids"].get("augmented") if sel else None
        if sel and sel.get("optimized", {}).get("psld-cifar10", {}).get("wins"):
            grid = "optimized"
        s = dm.sampler(name) if not sel or sel["lam"] is None else dm.sampler(name, lam=sel["lam"])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", StabilityWarning)
            comp = dm.compare(
                "psld-cifar10", "ring-8", [s], [10] if args.quick else [10, 20], n=n,
                grid=grid, seed=args.seed,
                progress=False,
            )  # fmt: skip
        rows.extend(comp.rows)
    return rows


def kl_table(rows: list[dict[str, Any]], selection: dict[str, Any]) -> str:
    """KL at each NFE on the recommended grid and on the uniform grid (largest target)."""
    lines = []
    for fam, pnames in dd.SELECTION["processes"].items():
        for pname in pnames:
            sub = [r for r in rows if r["process"] == pname]
            if not sub:
                continue
            tname = sorted({r["target"] for r in sub}, key=lambda x: int(x.split("-")[1]))[-1]
            nfes = sorted({r["nfe_budget"] for r in sub})
            lines.append(f"\n{pname}, {tname}: exact KL, recommended grid / uniform grid")
            head = "".join(f"{'NFE ' + str(k):>22}" for k in nfes)
            lines.append(f"{'sampler':14} {'grid':10}" + head)
            for name, sel in selection.items():
                g = sel["grids"].get(fam)
                if g is None:
                    continue
                cell = {}
                for r in sub:
                    if r["sampler"] != name or r["target"] != tname:
                        continue
                    if r["lam"] is not None and dd._lam_key(r["lam"]) != dd._lam_key(sel["lam"]):
                        continue
                    cell[(r["grid"], r["nfe_budget"])] = r["kl"]
                line = f"{name:14} {g:10}"
                for k in nfes:
                    a, b = cell.get((g, k)), cell.get(("uniform", k))
                    line += f"{fmt(a):>11} /{fmt(b):>9}"
                lines.append(line)
    return "\n".join(lines)


def fmt(v: float | None) -> str:
    if v is None or not math.isfinite(v):
        return "diverged"
    return f"{v:.3g}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes (a smoke test)")
    ap.add_argument("--out", type=Path, default=None, help="JSON path")
    ap.add_argument("--samplers", nargs="*", default=None, help="restrict the selection")
    ap.add_argument("--n", type=int, default=10_000, help="samples of the ring section")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sections", nargs="*", default=["selection", "stability", "ring"])
    ap.add_argument("--no-progress", dest="progress", action="store_false")
    args = ap.parse_args(argv)
    out = args.out or Path(__file__).parent / "results" / "diffusion_defaults.json"
    torch.set_num_threads(1)
    single_threaded_blas()
    started = time.perf_counter()
    result: dict[str, Any] = {
        "command": "python benchmarks/diffusion_defaults.py" + (" --quick" if args.quick else ""),
        "quick": args.quick,
        "torch": torch.__version__,
        "selection_cases": dd.SELECTION,
        "candidate_grids": list(dd.CANDIDATE_GRIDS),
        "candidate_lam": dd.CANDIDATE_LAM,
        "excluded": EXCLUDED,
    }
    if "selection" in args.sections:
        rows = run_selection(args)
        selection = dd.select(rows)
        result["rows"] = rows
        result["selection"] = selection
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(to_jsonable(result), indent=1))  # keep it if a later one fails
        print(kl_table(rows, selection))
        print("\nrecommended (sampler: lam, grids per family)")
        for name, sel in selection.items():
            print(f"  {name:14} lam={sel['lam']!s:12} {sel['grids']}")
    if "stability" in args.sections:
        result["stability"] = run_stability(args)
        print("\nstability bound h* on the stationary linearisation")
        for b in result["stability"]:
            print(f"  {b['process']:14} {b['sampler']:14} {fmt(b['bound']):>10}  {b['reason']}")
    if "ring" in args.sections:
        result["ring"] = run_ring(args, result.get("selection"))
        print("\nPSLD, ring-8: sliced W2 (floor, data vs data)")
        for r in result["ring"]:
            print(
                f"  {r['sampler']:12} NFE {r['nfe_budget']:3} {r['grid']:10} "
                f"{fmt(r.get('sliced_w2'))} ± {fmt(r.get('sliced_w2_se'))} "
                f"(floor {fmt(r.get('sliced_w2_floor'))})"
            )
    result["seconds"] = time.perf_counter() - started
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(to_jsonable(result), indent=1))
    print(f"\nwrote {out} ({result['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
