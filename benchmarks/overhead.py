"""Overhead of the compiled integrator against a hand-written torch loop and against peers.

BAOAB on independent 3-D harmonic particles (float32, CPU), 1,000 steps:

* ``splitsde``: ``sd.integrate`` with the BAOAB integrator (everything included: grid,
  coefficients, code generation, the loop);
* ``hand-written``: an in-place torch BAOAB loop drawing from the same generator;
* ``randn floor``: the same number of ``torch.randn`` draws alone;
* ``torchsde``: ``torchsde.sdeint(method="euler")`` on the same SDE (one first-order step per
  step, so it does less work per step than BAOAB).

Runs alternate and each timing is the median of ``--repeats``. Prints a table and writes JSON.

    python benchmarks/overhead.py [--repeats 5] [--threads 1] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import time
from pathlib import Path

import torch

import splitsde as sd

GAMMA, KT, H, STEPS = 1.0, 1.0, 0.01, 1000


def run_splitsde(n: int, seed: int) -> tuple[float, torch.Tensor]:
    system = sd.langevin.underdamped(sd.potentials.Harmonic(1.0), gamma=GAMMA, kT=KT)
    integ = system.integrator("BAOAB")
    y0 = {"q": torch.zeros(n, 3), "p": torch.zeros(n, 3)}
    t = time.perf_counter()
    res = sd.integrate(integ, y0, h=H, steps=STEPS, seed=seed, progress=False)
    return time.perf_counter() - t, res.final["q"]


def run_hand(n: int, seed: int) -> tuple[float, torch.Tensor]:
    t = time.perf_counter()
    g = torch.Generator().manual_seed(seed)
    q, p = torch.zeros(n, 3), torch.zeros(n, 3)
    buf = torch.empty(n, 3)
    c = math.exp(-GAMMA * H)
    s = math.sqrt(KT * (1 - c * c))
    f = q * -1.0
    for _ in range(STEPS):
        p.add_(f, alpha=H / 2)
        q.add_(p, alpha=H / 2)
        torch.randn((n, 3), generator=g, out=buf)
        p.mul_(c).add_(buf, alpha=s)
        q.add_(p, alpha=H / 2)
        f = q * -1.0
        p.add_(f, alpha=H / 2)
    return time.perf_counter() - t, q


def run_randn(n: int, seed: int) -> tuple[float, None]:
    t = time.perf_counter()
    g = torch.Generator().manual_seed(seed)
    buf = torch.empty(n, 3)
    for _ in range(STEPS):
        torch.randn((n, 3), generator=g, out=buf)
    return time.perf_counter() - t, None


def run_torchsde(n: int, seed: int) -> tuple[float, None]:
    import torchsde

    class Langevin(torch.nn.Module):
        noise_type = "diagonal"
        sde_type = "ito"

        def f(self, t, y):
            q, p = y[:, :3], y[:, 3:]
            return torch.cat([p, -q - GAMMA * p], dim=1)

        def g(self, t, y):
            out = torch.zeros_like(y)
            out[:, 3:] = math.sqrt(2 * GAMMA * KT)
            return out

    y0 = torch.zeros(n, 6)
    ts = torch.tensor([0.0, H * STEPS])
    torch.manual_seed(seed)
    t = time.perf_counter()
    with torch.no_grad():
        torchsde.sdeint(Langevin(), y0, ts, method="euler", dt=H)
    return time.perf_counter() - t, None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--sizes", type=int, nargs="*", default=[10_000, 100])
    ap.add_argument("--out", default="benchmarks/results/overhead.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    runners = {"splitsde": run_splitsde, "hand-written": run_hand, "randn floor": run_randn}
    try:
        import torchsde  # noqa: F401

        runners["torchsde euler"] = run_torchsde
    except ImportError:
        pass
    results = {}
    for n in args.sizes:
        # same generator, same draws: the compiled step must reproduce the hand loop
        _, a = run_splitsde(n, 0)
        _, b = run_hand(n, 0)
        same = float((a - b).abs().max())
        times: dict[str, list[float]] = {k: [] for k in runners}
        run_splitsde(n, 1)  # warm-up
        for r in range(args.repeats):
            for name, fn in runners.items():
                if name.startswith("torchsde") and r >= max(1, args.repeats // 2):
                    continue  # the slow peer: fewer repeats
                times[name].append(fn(n, r)[0])
        med = {k: statistics.median(v) for k, v in times.items()}
        results[n] = {
            "median_seconds": med,
            "ratio_vs_hand": med["splitsde"] / med["hand-written"],
            "ratio_vs_randn": med["splitsde"] / med["randn floor"],
            "torchsde_over_splitsde": med.get("torchsde euler", float("nan")) / med["splitsde"],
            "max_abs_diff_vs_hand": same,
        }
    print(
        f"BAOAB, harmonic 3-D particles, float32, {STEPS} steps, {args.threads} thread(s), "
        f"median of {args.repeats}"
    )
    print(
        f"{'particles':>10}{'splitsde':>11}{'hand':>9}{'randn':>9}{'torchsde':>10}"
        f"{'ours/hand':>11}{'ours/randn':>11}{'tsde/ours':>11}"
    )
    for n, r in results.items():
        m = r["median_seconds"]
        print(
            f"{n:>10}{m['splitsde']:>10.3f}s{m['hand-written']:>8.3f}s{m['randn floor']:>8.3f}s"
            f"{m.get('torchsde euler', float('nan')):>9.3f}s{r['ratio_vs_hand']:>11.3f}"
            f"{r['ratio_vs_randn']:>11.3f}{r['torchsde_over_splitsde']:>11.1f}"
        )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "torch": torch.__version__,
        "threads": args.threads,
        "machine": platform.machine(),
        "python": platform.python_version(),
        "repeats": args.repeats,
        "steps": STEPS,
    }
    out.write_text(
        json.dumps({"meta": meta, "results": {str(k): v for k, v in results.items()}}, indent=2)
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
