"""Peak memory of a run against its number of steps: flat, because nothing is built per step.

For each step count N (1e4 ... 1e8 by default, and 2e9), a fresh Python process imports
splitsde and torch, builds a tiny system (BAOAB on 4 walkers of a 1-D harmonic oscillator,
float64), warms up with a 10-step run, and records its peak resident set size (``ru_maxrss``)
as the *baseline*. It then measures, each in its own process:

* ``splitsde``: ``sd.integrate(integ, y0, h=1e-3, steps=N, ...)`` run for its first
  ``--run-steps`` steps (1,000) and stopped there by an observer that raises (a clean way to
  measure setup plus a fixed number of steps: what a run of N steps holds before and during
  its first steps, without waiting for 2e9 steps);
* ``hand-written``: an in-place torch BAOAB loop of ``--run-steps`` steps (no grid at all: the
  floor);
* ``grid arrays``: the time grid and step lengths of N steps materialised as the float64 array
  and Python lists a per-step implementation holds (what ``integrate`` held before it computed
  times a chunk at a time), up to 1e7 steps.

The table gives the peak RSS of each process and its growth over the baseline, in MiB, and the
ratio splitsde / hand-written. Prints a table and writes JSON.

    python benchmarks/memory.py [--sizes 1e4,1e5,1e6,1e7,1e8,2e9] [--out FILE.json] [--quick]
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

CHILD = r"""
import json, math, resource, sys, time
import torch
import numpy as np
import splitsde as sd

torch.set_num_threads(1)
mode, n, run_steps = sys.argv[1], int(float(sys.argv[2])), int(sys.argv[3])
system = sd.langevin.underdamped(sd.potentials.Harmonic(1.0))
integ = system.integrator("BAOAB")
y0 = system.initial_state(4)
sd.integrate(integ, y0, h=1e-3, steps=10, seed=0, progress=False)  # warm-up: lowering, caches


def rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


base = rss_mib()


class Stop(Exception):
    pass


class StopAfter(sd.Observer):
    name = "stop"

    def on_step(self, k, t, state):
        if k + 1 == run_steps:
            raise Stop


started = time.perf_counter()
if mode == "splitsde":
    try:
        sd.integrate(integ, y0, h=1e-3, steps=n, seed=0, observers=[StopAfter()], progress=False)
    except Stop:
        pass
elif mode == "hand":
    g = torch.Generator().manual_seed(0)
    q, p = y0["q"].clone(), y0["p"].clone()
    buf = torch.empty_like(p)
    h, c = 1e-3, math.exp(-1e-3)
    s = math.sqrt(1 - c * c)
    for _ in range(run_steps):
        p.add_(q, alpha=-h / 2)
        q.add_(p, alpha=h / 2)
        torch.randn(p.shape, generator=g, dtype=p.dtype, out=buf)
        p.mul_(c).add_(buf, alpha=s)
        q.add_(p, alpha=h / 2)
        p.add_(q, alpha=-h / 2)
elif mode == "arrays":
    times = 0.0 + 1e-3 * np.arange(n + 1, dtype=np.float64)
    t_list, h_list = times[:-1].tolist(), np.diff(times).tolist()
seconds = time.perf_counter() - started
print(json.dumps({"baseline_mb": base, "peak_rss_mb": rss_mib(), "seconds": seconds}))
"""

ARRAYS_MAX = 10**7  # beyond this the materialised grid needs gigabytes


def measure(mode: str, n: int, run_steps: int) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, mode, str(n), str(run_steps)],
        capture_output=True, text=True, timeout=3600,
    )  # fmt: skip
    if proc.returncode != 0:
        raise RuntimeError(f"{mode} at N={n} failed:\n{proc.stderr[-2000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["growth_mb"] = out["peak_rss_mb"] - out["baseline_mb"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="1e4,1e5,1e6,1e7,1e8,2e9")
    ap.add_argument("--run-steps", type=int, default=1000)
    ap.add_argument(
        "--quick", action="store_true", help="1e4 and 1e6 steps, 100 run steps, no grid arrays"
    )
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "memory.json"))
    args = ap.parse_args()
    sizes = [int(float(s)) for s in args.sizes.split(",")]
    run_steps = args.run_steps
    if args.quick:
        sizes, run_steps = [10**4, 10**6], 100
    hand = measure("hand", sizes[0], run_steps)
    rows = []
    for n in sizes:
        ours = measure("splitsde", n, run_steps)
        arrays = measure("arrays", n, run_steps) if n <= ARRAYS_MAX and not args.quick else None
        rows.append(
            {
                "steps": n,
                "peak_rss_mb": ours["peak_rss_mb"],
                "growth_mb": ours["growth_mb"],
                "seconds": ours["seconds"],
                "hand_peak_rss_mb": hand["peak_rss_mb"],
                "ratio_vs_hand": ours["peak_rss_mb"] / hand["peak_rss_mb"],
                "grid_arrays_growth_mb": arrays["growth_mb"] if arrays else None,
            }
        )
    header = (
        f"{'steps N':>14} {'splitsde peak':>14} {'growth':>9} {'setup+run':>10} "
        f"{'hand peak':>10} {'ours/hand':>10} {'grid arrays growth':>19}"
    )
    print(f"peak RSS (MiB) of setup + the first {run_steps} steps of a run of N steps")
    print(header)
    for r in rows:
        arr = r["grid_arrays_growth_mb"]
        print(
            f"{r['steps']:>14,} {r['peak_rss_mb']:>14.1f} {r['growth_mb']:>9.1f} "
            f"{r['seconds']:>9.2f}s {r['hand_peak_rss_mb']:>10.1f} {r['ratio_vs_hand']:>10.3f} "
            f"{(f'{arr:.1f}' if arr is not None else '-'):>19}"
        )
    result = {
        "benchmark": "memory",
        "date": time.strftime("%Y-%m-%d"),
        "machine": {"python": platform.python_version(), "platform": platform.platform()},
        "run_steps": run_steps,
        "rows": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
