"""Optimized schedules of the conjugate multistep samplers on PSLD and CLD, and how they do on
data they were not optimised on.

    OMP_NUM_THREADS=1 python benchmarks/optimized_schedules.py            # search + evaluation
    OMP_NUM_THREADS=1 python benchmarks/optimized_schedules.py --evaluate # evaluation only
    # split over two processes, then merged:
    python benchmarks/optimized_schedules.py --processes psld-cifar10 --out a.json &
    python benchmarks/optimized_schedules.py --processes cld --out b.json; wait
    python benchmarks/optimized_schedules.py --merge a.json b.json
    OMP_NUM_THREADS=1 python benchmarks/optimized_schedules.py --quick    # smoke test

Search: splitsde.diffusion.schedule_search.optimize_schedule for every (sampler, process,
steps), from the best of the named grids and the sampler's shorter optimized schedule
interpolated, on the training Gaussian (32-D, variances log-spaced over [0.002, 2]). Evaluation,
on other data: the exact KL on the selection's 64-D Gaussian (gaussian-64, seed 0, variances
over [0.01, 1]) and on three more random Gaussians (seeds 1-3, condition 10, 100 and 1000), at
the stored step counts and at interpolated ones, against the named grids; and the sensitivity of
the KL to a random relative perturbation of the optimized log-time increments (normal, relative
standard deviation 1 %, 3 %, 10 %, rescaled to keep the end points; six draws each, seed 0).
Writes benchmarks/results/optimized_schedules.json;
splitsde.diffusion.schedules.OPTIMIZED_SCHEDULES holds its grids
(tests/diffusion/test_schedules.py checks that they agree).
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

import splitsde.diffusion as dm
from splitsde.diffusion.grids import time_grid
from splitsde.diffusion.schedule_search import (
    TRAINING_DATA,
    optimize_schedule,
    schedule_kl,
    training_data,
)
from splitsde.diffusion.schedules import interpolate_schedule
from splitsde.diffusion.targets import GaussianData

SAMPLERS = ["cdeis2", "cdeis3"]
PROCESSES = ["psld-cifar10", "cld"]
STEPS = [9, 19]  # NFE 10 and 20 with the denoising step
NAMED = ["quadratic", "cubic", "logsnr"]
EVAL_NFES = [8, 10, 12, 15, 20, 30, 50]
PERTURB = [0.01, 0.03, 0.1]
OUT = Path(__file__).resolve().parent / "results" / "optimized_schedules.json"


def test_data(quick: bool) -> dict[str, GaussianData]:
    d = 8 if quick else 64
    out = {"gaussian-64": dm.target(f"gaussian-{d}", seed=0)}
    if not quick:
        for seed, cond in [(1, 10.0), (2, 100.0), (3, 1000.0)]:
            out[f"gaussian-64 seed {seed} cond {cond:g}"] = GaussianData.random(
                64, seed=seed, condition=cond
            )
    return out


def best_start(
    name: str, proc: dm.ForwardProcess, steps: int, data: GaussianData, shorter: np.ndarray | None
) -> tuple[str, np.ndarray]:
    """The named grid with the smallest training KL, or the shorter optimized schedule of the
    same sampler interpolated to ``steps`` (Align Your Steps' extension) when that is better."""
    grids = {g: time_grid(proc, g, steps) for g in NAMED}
    if shorter is not None:
        grids[f"optimized-{len(shorter) - 1} interpolated"] = interpolate_schedule(shorter, steps)
    kls = {g: schedule_kl(name, proc, grid, data) for g, grid in grids.items()}
    best = min(kls, key=lambda g: kls[g] if math.isfinite(kls[g]) else math.inf)
    return best, grids[best]


def search(args: argparse.Namespace) -> list[dict[str, Any]]:
    data = training_data(8 if args.quick else None)
    out = []
    jobs = [(s, p, k) for s in args.samplers for p in args.processes for k in sorted(STEPS)]
    if args.quick:
        jobs = [("cdeis2", "psld-cifar10", 4)]
    found: dict[tuple[str, str], np.ndarray] = {}
    for name, pname, steps in jobs:
        proc = dm.process(pname)
        start, g0 = best_start(name, proc, steps, data, found.get((name, pname)))
        res = optimize_schedule(
            name, proc, steps, data=data, start=g0,
            max_evaluations=60 if args.quick else args.max_evaluations,
        )  # fmt: skip
        found[(name, pname)] = res.grid
        row = {**res.to_json(), "start": start}
        print(
            f"{name:8} {pname:13} {steps:3} steps from {start:9}: training KL "
            f"{res.kl_start:.3g} -> {res.kl:.3g} ({res.evaluations} evaluations, "
            f"{res.seconds:.0f} s)",
            flush=True,
        )
        out.append(row)
    return out


def evaluate(searches: list[dict[str, Any]], quick: bool) -> list[dict[str, Any]]:
    rows = []
    datasets = test_data(quick)
    nfes = [10] if quick else EVAL_NFES
    for name in dict.fromkeys(s["sampler"] for s in searches):
        for pname in dict.fromkeys(s["process"] for s in searches if s["sampler"] == name):
            proc = dm.process(pname)
            stored = {s["steps"]: np.array(s["grid"]) for s in searches
                      if s["sampler"] == name and s["process"] == pname}  # fmt: skip
            for dname, data in datasets.items():
                for nfe in nfes:
                    steps = nfe - 1
                    near = min(stored, key=lambda k: (abs(k - steps), -k))
                    grids = {g: time_grid(proc, g, steps) for g in NAMED}
                    grids["optimized"] = interpolate_schedule(stored[near], steps)
                    for gname, grid in grids.items():
                        rows.append({
                            "sampler": name, "process": pname, "data": dname, "nfe": nfe,
                            "grid": gname, "interpolated": gname == "optimized" and near != steps,
                            "kl": schedule_kl(name, proc, grid, data),
                        })  # fmt: skip
                print(f"evaluated {name} {pname} on {dname}", flush=True)
    return rows


def sensitivity(searches: list[dict[str, Any]], quick: bool) -> list[dict[str, Any]]:
    rows = []
    data = test_data(quick)["gaussian-64"]
    rng = np.random.default_rng(0)
    for s in searches:
        proc = dm.process(s["process"])
        lg = np.log(np.array(s["grid"]))
        for amp in PERTURB[:1] if quick else PERTURB:
            kls = []
            for _ in range(2 if quick else 6):
                d = np.diff(lg) * (1.0 + amp * rng.standard_normal(len(lg) - 1))
                g = np.exp(lg[0] + np.concatenate([[0.0], np.cumsum(d)]))
                g = np.exp(lg[0] + (np.log(g) - lg[0]) * (lg[-1] - lg[0]) / (np.log(g[-1]) - lg[0]))
                g[0], g[-1] = math.exp(lg[0]), math.exp(lg[-1])
                kls.append(schedule_kl(s["sampler"], proc, g, data))
            rows.append({"sampler": s["sampler"], "process": s["process"], "steps": s["steps"],
                         "relative_perturbation": amp, "kl": kls})  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="8-D data, one short search")
    ap.add_argument("--evaluate", nargs="*", type=Path, default=None,
                    help="skip the search: evaluate the searches of these JSON files "
                    "(default: --out)")  # fmt: skip
    ap.add_argument(
        "--merge",
        nargs="*",
        type=Path,
        default=None,
        help="concatenate the sections of these JSON files (runs split by process)",
    )
    ap.add_argument("--samplers", nargs="*", default=SAMPLERS)
    ap.add_argument("--processes", nargs="*", default=PROCESSES)
    ap.add_argument("--max-evaluations", type=int, default=2500)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    started = time.perf_counter()
    if args.merge:
        parts = [json.loads(f.read_text()) for f in args.merge]
        merged = {**parts[0], "seconds": sum(p["seconds"] for p in parts)}
        merged["command"] = "; ".join([p["command"] for p in parts] + [
            "python benchmarks/optimized_schedules.py --merge "
            + " ".join(str(f) for f in args.merge)])  # fmt: skip
        for key in ("searches", "evaluation", "sensitivity"):
            merged[key] = [row for p in parts for row in p[key]]
        args.out.write_text(json.dumps(merged, indent=1) + "\n")
        print(f"wrote {args.out}")
        return 0
    if args.evaluate is not None:
        searches = [s for f in (args.evaluate or [args.out])
                    for s in json.loads(f.read_text())["searches"]]  # fmt: skip
    else:
        searches = search(args)
    result = {
        "command": "OMP_NUM_THREADS=1 python benchmarks/optimized_schedules.py "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "quick": args.quick,
        "torch": torch.__version__,
        "training_data": TRAINING_DATA,
        "searches": searches,
        "evaluation": evaluate(searches, args.quick),
        "sensitivity": sensitivity(searches, args.quick),
    }
    result["seconds"] = round(time.perf_counter() - started, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out} ({result['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
