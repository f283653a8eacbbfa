"""Bias tables: stationary (invariant-measure) bias of splitting words on nonlinear problems,
against quadrature references.

For the quartic potential ``q^4/4`` (observable <q^2>), the double well ``(q^2 - 1)^2``
(<q^2>) and the Müller--Brown potential (<U>), every word runs Langevin dynamics (gamma = kT =
M = 1) on a nested ladder of steps with common random numbers, walkers started from the
Boltzmann density (quadrature nodes), ``--burn-in`` then ``--sample-time`` time units; the
table gives the bias of the stationary average against the quadrature value (standard errors
from the walkers as independent batches) and the verdict of the weak-order fit of the biases
(:func:`splitsde.analysis.estimate_weak_order`, exact reference).

    python benchmarks/verify_bias_tables.py            # full tables (about 10 minutes, 1 core)
    python benchmarks/verify_bias_tables.py --quick    # small, for the test suite

Prints the tables (and ``--markdown`` ones for docs/verify.md) and writes
``benchmarks/results/verify_bias_tables.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from splitsde import problems
from splitsde.analysis import estimate_weak_order

WORDS = ("BAOAB", "OBABO", "ABOBA", "OBA", "BAO")
CASES = {
    # problem: (factory, observable, ladder)
    "quartic": (lambda: problems.quartic(), "q2", (0.05, 0.1, 0.2, 0.4)),
    "double well": (lambda: problems.double_well(), "q2", (0.025, 0.05, 0.1, 0.2)),
    "Müller-Brown": (lambda: problems.muller_brown(), "U", (0.0125, 0.025, 0.05, 0.1)),
}


def boltzmann_start(prob, walkers: int, seed: int) -> dict[str, torch.Tensor]:
    """Walkers drawn from the quadrature nodes with their Boltzmann weights (an equilibrium
    start: the burn-in only relaxes the discretisation), Maxwell momenta."""
    rng = np.random.default_rng(seed)
    if isinstance(prob, problems.MullerBrownProblem):
        x, wx, y, wy, umin = prob._rule
        X, Y = np.meshgrid(x, y, indexing="ij")
        w = np.exp(-(prob.potential._terms(X, Y, np) - umin) / prob.kT) * np.outer(wx, wy)
        idx = rng.choice(w.size, size=walkers, p=(w / w.sum()).ravel())
        q = np.stack([X.ravel()[idx], Y.ravel()[idx]], axis=1)
    else:
        umin, lo, hi = prob._support
        grid = np.linspace(lo, hi, 20001)
        w = np.exp(-(np.asarray(prob.u(grid)) - umin) / prob.kT)
        q = rng.choice(grid, size=(walkers, 1), p=w / w.sum())
    q = torch.from_numpy(q)
    p = torch.from_numpy(rng.standard_normal(q.shape)) * (prob.mass * prob.kT) ** 0.5
    return {"q": q, "p": p}


def run(case: str, words, walkers: int, burn: float, sample: float, seed: int) -> list[dict]:
    make, obs, hs = CASES[case]
    prob = make()
    ref = prob.reference(obs)
    y0 = boltzmann_start(prob, walkers, seed)
    rows = []
    for w in words:
        t0 = time.perf_counter()
        res = estimate_weak_order(
            prob.integrator(w), hs, y0, prob.observable(obs), reference=ref,
            mode="stationary", burn_in_time=burn, sample_time=sample, seed=seed,
            observable_name=obs,
        )  # fmt: skip
        se = dict(zip(res.fit_hs.tolist(), res.bias_se.tolist()))
        rows.append(
            {
                "problem": case,
                "observable": obs,
                "reference": ref,
                "word": w,
                "points": [
                    {
                        "h": p.h,
                        "status": p.status,
                        "bias": None if p.estimate is None else p.estimate.value - ref,
                        "se": se.get(p.h),
                        "message": p.message,
                    }
                    for p in res.points
                ],
                "order_interval": None if res.fit is None else list(res.fit.interval),
                "certified_order": res.certified_order,
                "verdict": str(res.verdict),
                "variance_reduction": res.variance_reduction,
                "seconds": time.perf_counter() - t0,
            }
        )
        print(f"  {case} {w}: {res.verdict}", flush=True)
    return rows


def _cell(p: dict) -> str:
    if p["status"] == "unstable":
        return "unstable"
    return f"{p['bias']:+.2e} ± {p['se']:.1e}"


def _interval(r: dict) -> str:
    iv = r.get("order_interval")
    if not iv:
        return "-"
    ends = ("inf" if v is None or v == float("inf") else f"{v:.2f}" for v in iv)
    return "[" + ", ".join(ends) + "]"


def table(rows: list[dict], markdown: bool) -> str:
    out = []
    for case in dict.fromkeys(r["problem"] for r in rows):
        sub = [r for r in rows if r["problem"] == case]
        hs = [p["h"] for p in sub[0]["points"]]
        ref = sub[0]["reference"]
        title = f"{case}: bias of <{sub[0]['observable']}> (quadrature {ref:.8g})"
        if markdown:  # backquotes: <q2> would be read as an HTML tag
            out.append(f"**{case}: bias of `<{sub[0]['observable']}>`** (quadrature {ref:.8g})\n")
            out.append(
                "| word | " + " | ".join(f"h = {h:g}" for h in hs) + " | order interval | order |"
            )
            out.append("|---" * (len(hs) + 3) + "|")
            for r in sub:
                order = r["certified_order"] if r["certified_order"] else "not certified"
                cells = " | ".join(_cell(p) for p in r["points"])
                out.append(f"| {r['word']} | {cells} | {_interval(r)} | {order} |")
            out.append("")
        else:
            out.append(title)
            out.append(f"  {'word':7}" + "".join(f"{'h = ' + format(h, 'g'):>22}" for h in hs))
            for r in sub:
                cells = "".join(f"{_cell(p):>22}" for p in r["points"])
                order = r["certified_order"] or "-"
                out.append(f"  {r['word']:7}{cells}   order {order}")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--walkers", type=int, default=None)
    ap.add_argument("--burn-in", type=float, default=5.0)
    ap.add_argument("--sample-time", type=float, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--markdown", action="store_true")
    ap.add_argument(
        "--out", default=str(Path(__file__).parent / "results" / "verify_bias_tables.json")
    )
    args = ap.parse_args()
    torch.set_num_threads(1)
    walkers = args.walkers or (2000 if args.quick else 50_000)
    sample = args.sample_time or (2.0 if args.quick else 20.0)
    words = ("BAOAB", "OBA") if args.quick else WORDS
    started = time.perf_counter()
    load = os.getloadavg()
    rows = []
    for case in CASES:
        rows.extend(run(case, words, walkers, args.burn_in, sample, args.seed))
    print(table(rows, args.markdown))
    result = {
        "walkers": walkers,
        "burn_in_time": args.burn_in,
        "sample_time": sample,
        "rows": rows,
        "seconds": time.perf_counter() - started,
        "load_average": load,
        "machine": platform.platform(),
        "command": "python benchmarks/verify_bias_tables.py" + (" --quick" if args.quick else ""),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
