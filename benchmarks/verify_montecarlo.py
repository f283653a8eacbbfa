"""Benchmark of the Monte Carlo weak-order estimator: walkers x steps per second.

One ladder on the double well (BAOAB, <q^2> at T = 2 from q = 0.5, p = 0; steps 0.05, 0.1,
0.2, 0.4 and a fine-step reference run at 0.0125), measured in the same run as

* ``estimator, common noise``  -- :func:`splitsde.analysis.estimate_weak_order` (default);
* ``estimator, independent``   -- the same with ``common_noise=False``;
* ``hand-written loop``        -- BAOAB for the same walkers and steps in plain torch, the
  floor the estimator's overhead is measured against;
* ``estimator, 2 processes``   -- the first row under ``torchrun --standalone
  --nproc-per-node 2`` (gloo, walkers sharded, moments all-reduced); the time is measured
  inside the ranks, from the start of the estimate to its all-reduced result.

Also reported: the variance reduction of common random numbers (bias differences) and the
order intervals with and without it -- what the extra cost of the common path buys. The load
average of the machine is recorded: timings on a shared machine are noisy, so compare the
ratios, which are measured in the same run.

    python benchmarks/verify_montecarlo.py            # 200,000 walkers
    python benchmarks/verify_montecarlo.py --quick    # 20,000 walkers, 1 repeat

Prints a table and writes ``benchmarks/results/verify_montecarlo.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

import splitsde as sd
from splitsde.analysis import estimate_weak_order, init_world

HS = (0.05, 0.1, 0.2, 0.4)
FINE = 4
T = 2.0


def _state(walkers: int) -> dict[str, torch.Tensor]:
    return {
        "q": torch.full((walkers, 1), 0.5, dtype=torch.float64),
        "p": torch.zeros(walkers, 1, dtype=torch.float64),
    }


def estimate(walkers: int, common_noise: bool, world=None):
    system = sd.langevin.underdamped(sd.potentials.DoubleWell(), gamma=1.0, kT=1.0)
    return estimate_weak_order(
        system.integrator("BAOAB"),
        HS,
        _state(walkers),
        lambda s: s["q"] ** 2,
        mode="final",
        T=T,
        seed=3,
        reference="fine",
        fine_factor=FINE,
        common_noise=common_noise,
        world=world,
    )


def hand_loop(walkers: int) -> tuple[float, int]:
    """BAOAB on U = (q^2 - 1)^2 (gamma = kT = M = 1) written out in torch, same ladder."""
    gen = torch.Generator().manual_seed(0)
    work = 0
    started = time.perf_counter()
    for h in (HS[0] / FINE, *HS):
        q = torch.full((walkers, 1), 0.5, dtype=torch.float64)
        p = torch.zeros(walkers, 1, dtype=torch.float64)
        c = math.exp(-h)
        s = math.sqrt(1 - c * c)
        n = round(T / h)
        for _ in range(n):
            p += 0.5 * h * (-4.0 * q * (q * q - 1.0))
            q += 0.5 * h * p
            p.mul_(c).add_(torch.randn(p.shape, generator=gen, dtype=p.dtype), alpha=s)
            q += 0.5 * h * p
            p += 0.5 * h * (-4.0 * q * (q * q - 1.0))
        float((q * q).mean())
        work += walkers * n
    return time.perf_counter() - started, work


def best_of(repeats: int, fn):
    runs = [fn() for _ in range(repeats)]
    return min(runs, key=lambda r: r[0])


def timed_estimate(walkers: int, common_noise: bool, world=None):
    t0 = time.perf_counter()
    res = estimate(walkers, common_noise, world)
    return time.perf_counter() - t0, res


def worker(walkers: int, repeats: int, out: str) -> None:
    """Run by torchrun: the common-noise estimate on every rank; rank 0 writes its time."""
    world = init_world()
    times = []
    for _ in range(repeats):
        torch.distributed.barrier()
        t, res = timed_estimate(walkers, True, world)
        times.append(t)
    if world.is_root:
        Path(out).write_text(
            json.dumps(
                {
                    "seconds": min(times),
                    "walker_steps": res.walker_steps,
                    "world_size": world.size,
                    "certified_order": res.certified_order,
                    "values": [p.estimate.value for p in res.points],
                }
            )
        )


def two_processes(walkers: int, repeats: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "rank0.json"
        env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
        cmd = [
            sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
            "2", __file__, "--worker", "--walkers", str(walkers), "--repeats", str(repeats),
            "--worker-out", str(out),
        ]  # fmt: skip
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        launch = time.perf_counter() - t0
        if proc.returncode != 0:
            raise RuntimeError(proc.stderr[-3000:])
        res = json.loads(out.read_text())
    res["launch_seconds"] = launch
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--walkers", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument(
        "--out", default=str(Path(__file__).parent / "results" / "verify_montecarlo.json")
    )
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--worker-out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    walkers = args.walkers or (20_000 if args.quick else 200_000)
    repeats = args.repeats or (1 if args.quick else 3)
    torch.set_num_threads(1)
    if args.worker:
        worker(walkers, repeats, args.worker_out)
        return
    estimate(1000, True)  # warm-up: imports, first compilations
    load_before = os.getloadavg()
    rows = []
    t_crn, res_crn = best_of(repeats, lambda: timed_estimate(walkers, True))
    t_ind, res_ind = best_of(repeats, lambda: timed_estimate(walkers, False))
    t_hand, work_hand = best_of(repeats, lambda: hand_loop(walkers))
    two = two_processes(walkers, repeats)
    load_after = os.getloadavg()
    work = res_crn.walker_steps
    assert work == res_ind.walker_steps == work_hand == two["walker_steps"]
    for name, seconds in (
        ("estimator, common noise", t_crn),
        ("estimator, independent noise", t_ind),
        ("hand-written loop (plain torch)", t_hand),
        ("estimator, common noise, 2 processes", two["seconds"]),
    ):
        rows.append(
            {
                "method": name,
                "seconds": seconds,
                "walker_steps_per_second": work / seconds,
                "vs_hand_loop": seconds / t_hand,
            }
        )
    result = {
        "problem": "double well, BAOAB, <q^2> at T = 2, steps "
        + ", ".join(f"{h:g}" for h in HS)
        + f" + fine {HS[0] / FINE:g}",
        "walkers": walkers,
        "walker_steps": work,
        "repeats": repeats,
        "rows": rows,
        "speedup_2_processes": t_crn / two["seconds"],
        "torchrun_launch_seconds": two["launch_seconds"],
        "common_noise_cost": t_crn / t_ind,
        "variance_reduction": res_crn.variance_reduction,
        "order_interval_common_noise": list(res_crn.fit.interval) if res_crn.fit else None,
        "order_interval_independent": list(res_ind.fit.interval) if res_ind.fit else None,
        "verdict_common_noise": str(res_crn.verdict),
        "verdict_independent": str(res_ind.verdict),
        "verdict_2_processes": two["certified_order"],
        "load_average_before": load_before,
        "load_average_after": load_after,
        "cpus": os.cpu_count(),
        "machine": platform.platform(),
        "torch": torch.__version__,
        "command": "python benchmarks/verify_montecarlo.py" + (" --quick" if args.quick else ""),
    }
    print(f"Monte Carlo weak-order estimator: {result['problem']}")
    print(f"{walkers} walkers, {work:.3g} walker-steps per estimate, best of {repeats}")
    print(
        f"load average {load_before[0]:.1f} before, {load_after[0]:.1f} after, "
        f"{os.cpu_count()} cpus"
    )
    print(f"  {'method':40} {'seconds':>9} {'walker-steps/s':>15} {'vs hand loop':>13}")
    for r in rows:
        print(
            f"  {r['method']:40} {r['seconds']:9.2f} {r['walker_steps_per_second']:15.3g} "
            f"{r['vs_hand_loop']:13.2f}"
        )
    print(
        f"  speedup with 2 processes: {result['speedup_2_processes']:.2f}x "
        f"(torchrun launch {two['launch_seconds']:.1f} s)"
    )
    print(
        f"  common noise costs {result['common_noise_cost']:.2f}x the time of independent noise "
        f"and reduces the variance of bias differences {res_crn.variance_reduction:.0f}x"
    )
    print(
        f"  order interval: {result['order_interval_common_noise']} (common noise), "
        f"{result['order_interval_independent']} (independent)"
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
