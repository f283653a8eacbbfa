"""Sampling with a score network: the time spent outside the network, PSLD and CLD against VP.

    python benchmarks/diffusion_overhead.py            # full size
    python benchmarks/diffusion_overhead.py --quick    # a smoke test (seconds)

Also the ``overhead`` section of ``benchmarks/diffusion_quality.py``.

Network: an untrained eps-prediction MLP on 2-D data (input: the blocks concatenated and the
time; two hidden layers of width 128 -- the tiny network -- or 256, SiLU; PSLD and CLD feed it
the 4 channels of ``(x, m)``), float32 on the CPU, wrapped in
:class:`splitsde.diffusion.ScoreModel`, so every call converts the noise prediction to the
score (:math:`s = -L_t^{-\top}\varepsilon`). Denormal floats are flushed to zero: the
untrained network drives the samples far out, where SiLU would return denormals that slow it
several-fold. Samplers: VP ``em`` and ``ddim``; PSLD (CIFAR-10 configuration) and CLD
``em``, ``sscs``, ``sps``. Batches 1000 and 4096, NFE 20 and 100 (uniform grid, counting the
denoising step).

Per configuration, measured in the same run:

* ``plan``: seconds of ``dm.plan`` (compiling the sampler, the grid, the kernel tables of the
  score conversion); ``first``: the first run of that plan (code generation and coefficient
  tables included);
* ``run``: the fastest of ``--repeats`` runs of the plan; ``network``: the seconds inside the
  network's ``forward`` during that run; ``outside = 1 - network / run``;
* ``hand``: the fastest of ``--repeats`` runs of a hand-written torch loop doing the same
  arithmetic (``em`` on every process, ``sps`` on PSLD and CLD) with :math:`L_t^{-\top}` and
  the step coefficients precomputed on the grid in float64: ``run / hand`` is the framework's
  own cost, and the hand-written loop's own time outside the network is the floor of any
  implementation of the same arithmetic;
* ``per_nfe = run / NFE`` and its ratio to VP ``em`` at the same width, batch and NFE.

Verdicts per width: for every PSLD and CLD row at batch 4096, ``outside <= 10%`` and
``per_nfe <= 1.2 x`` VP ``em``'s. Timings are CPU seconds of the process
(``time.process_time``) with torch and BLAS on one thread, so that other load on the machine
does not count; each is the fastest of the repeats, the cases of one width, batch and NFE
interleaved.
"""

from __future__ import annotations

import argparse
import itertools
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

SAMPLERS = {
    "vp": ["em", "ddim"],
    "psld-cifar10": ["em", "sscs", "sps"],
    "cld": ["em", "sscs", "sps"],
}
BATCHES = [1000, 4096]
NFES = [20, 100]
DIM = 2
#: CPU time of this process: torch runs on one thread, so other load on the machine (which
#: inflates wall-clock timings by tens of percent here) does not count.
clock = time.process_time
#: Hidden widths: 128 (the tiny network) and 256 (the width of the earlier overhead runs).
WIDTHS = [128, 256]
OUTSIDE_MAX = 0.10
PER_NFE_MAX = 1.2


class TinyMLP(torch.nn.Module):
    """An eps-network on the concatenated blocks with the time as an extra input; it times its
    own forward passes."""

    def __init__(self, channels: int, width: int) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Linear(channels + 1, width),
            torch.nn.SiLU(),
            torch.nn.Linear(width, width),
            torch.nn.SiLU(),
            torch.nn.Linear(width, channels),
        )
        self.seconds = 0.0
        self.calls = 0

    def forward(self, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        started = clock()
        out = self.net(torch.cat([z, t[:, None]], dim=1))
        self.seconds += clock() - started
        self.calls += 1
        return out


# ---------------------------------------------------------------------------------------------
# Hand-written loops (the baseline): the same arithmetic, coefficients precomputed in float64
# ---------------------------------------------------------------------------------------------
def _linv_t(proc: dm.ForwardProcess, times: np.ndarray) -> np.ndarray:
    """L_t^{-T} at the diffusion times, straight from the kernel covariance."""
    _, S = proc.data_kernel(times)
    return np.swapaxes(np.linalg.inv(np.linalg.cholesky(S)), -1, -2)


def hand_vp_em(proc: dm.ForwardProcess, net: TinyMLP, y0: dict, tau: np.ndarray, seed: int):
    """EM on the reverse VP SDE, then the noise-free Euler denoising step."""
    v = proc.values
    b0, b1, T = v["beta_min"], v["beta_max"], proc.T
    taus = np.append(tau, T)
    t = T - taus[:-1]  # diffusion time at each step start (and the denoising step)
    h = np.diff(taus)
    beta = b0 + t * (b1 - b0)
    linv = _linv_t(proc, t)[:, 0, 0]
    gen = torch.Generator().manual_seed(seed)
    x = y0["x"].clone()
    noise = torch.empty_like(x)
    batch = x.shape[0]
    started = clock()
    with torch.no_grad():
        for k in range(len(h)):
            eps = net(x, torch.full((batch,), float(t[k])))
            last = k == len(h) - 1
            if not last:
                torch.randn(x.shape, generator=gen, out=noise)
            # x <- x + h beta (x / 2 + s) + sqrt(h beta) xi,  s = -eps / sigma
            x.mul_(1 + h[k] * beta[k] / 2).add_(eps, alpha=-h[k] * beta[k] * linv[k])
            if not last:
                x.add_(noise, alpha=math.sqrt(h[k] * beta[k]))
    return clock() - started, x


def hand_psld(
    name: str, proc: dm.ForwardProcess, net: TinyMLP, y0: dict, tau: np.ndarray, seed: int
):
    """``em`` or ``sps`` on PSLD/CLD (constant beta), then the denoising step."""
    v = proc.values
    B, G, nu, Mi, T = v["beta"], v.get("Gamma", 0.0), v["nu"], v["Minv"], proc.T
    taus = np.append(tau, T)
    t = T - taus[:-1]
    h = np.diff(taus)
    L = _linv_t(proc, t)
    gen = torch.Generator().manual_seed(seed)
    x, m = y0["x"].clone(), y0["m"].clone()
    nx, nm = torch.empty_like(x), torch.empty_like(m)
    batch, d = x.shape
    started = clock()
    with torch.no_grad():
        for k in range(len(h)):
            hk, last = float(h[k]), k == len(h) - 1
            if not last and name == "em" and G > 0:
                torch.randn(x.shape, generator=gen, out=nx)
            if not last:
                torch.randn(m.shape, generator=gen, out=nm)
            eps = net(torch.cat([x, m], dim=1), torch.full((batch,), float(t[k])))
            ex, em = eps[:, :d], eps[:, d:]
            # s = -L^{-T} eps (L^{-T} upper triangular)
            sx = ex.mul(-L[k, 0, 0]).add_(em, alpha=-L[k, 0, 1])
            sm = em.mul(-L[k, 1, 1])
            if name == "em" or last:  # EM of the reverse SDE (lambda = 1), no noise when last
                dx = x.mul(1 + hk * B * G / 2).add_(m, alpha=-hk * B * Mi / 2)
                dx.add_(sx, alpha=hk * G * B)
                if not last and G > 0:
                    dx.add_(nx, alpha=math.sqrt(hk * G * B))
                m.mul_(1 + hk * B * nu / 2).add_(x, alpha=hk * B / 2)
                m.add_(sm, alpha=hk * B * nu / Mi)
                if not last:
                    m.add_(nm, alpha=math.sqrt(hk * nu * B / Mi))
                x = dx
            else:  # sps: O (momentum OU part), B (kick by the data), A (data, lambda_x = 0)
                m.mul_(1 + hk * B * nu / 2).add_(sm, alpha=hk * nu * B / Mi)
                m.add_(nm, alpha=math.sqrt(hk * nu * B / Mi)).add_(x, alpha=hk * B / 2)
                x.mul_(1 + hk * B * G / 2).add_(sx, alpha=hk * G * B / 2)
                x.add_(m, alpha=-hk * B * Mi / 2)
    return clock() - started, x


def hand_written(name: str, proc: dm.ForwardProcess, net: TinyMLP, y0: dict, tau, seed: int):
    if proc.name == "vp":
        return hand_vp_em(proc, net, y0, tau, seed) if name == "em" else (None, None)
    if name in ("em", "sps"):
        return hand_psld(name, proc, net, y0, tau, seed)
    return None, None


# ---------------------------------------------------------------------------------------------
class Case:
    """One sampler on one process at one batch and NFE: its network, plan and timings."""

    def __init__(self, proc_name: str, name: str, width: int, batch: int, nfe: int) -> None:
        self.proc = dm.process(proc_name)
        self.name = name
        torch.manual_seed(0)
        self.net = TinyMLP(DIM * len(self.proc.blocks), width).float().eval()
        model = dm.ScoreModel(self.net, self.proc, "eps")
        gen = torch.Generator().manual_seed(1)
        self.y0 = self.proc.prior(batch, DIM, generator=gen, dtype=torch.float32)
        started = clock()
        self.plan = dm.plan(name, self.proc, model, nfe=nfe)
        self.plan_seconds = clock() - started
        self.row: dict[str, Any] = {
            "process": self.proc.name,
            "sampler": name,
            "width": width,
            "batch": batch,
        }
        self.best: tuple[float, float, int] | None = None
        self.hand: float | None = None
        self.hand_network = 0.0
        self.res: Any = None
        self.hand_x: torch.Tensor | None = None

    def first(self) -> None:
        self.net.seconds = 0.0
        started = clock()
        self.res = self.plan.run(self.y0, seed=0, progress=False)
        seconds = clock() - started
        self.row.update(first_run_seconds=seconds, first_run_outside=1 - self.net.seconds / seconds)

    def repeat(self) -> None:
        self.net.seconds, self.net.calls = 0.0, 0
        started = clock()
        self.res = self.plan.run(self.y0, seed=0, progress=False)
        total = clock() - started
        if self.best is None or total < self.best[0]:
            self.best = (total, self.net.seconds, self.net.calls)
        self.net.seconds = 0.0
        seconds, x = hand_written(self.name, self.proc, self.net, self.y0, self.plan.tau, 0)
        if seconds is not None:
            self.hand_x = x
            if self.hand is None or seconds < self.hand:
                self.hand, self.hand_network = seconds, self.net.seconds

    def result(self) -> dict[str, Any]:
        total, net_seconds, calls = self.best
        kernels = getattr(self.plan.integrator.fields[0].fn, "kernels", None)
        nfe = self.res.nfe
        self.row.update(
            nfe=nfe,
            network_calls=calls,
            plan_seconds=self.plan_seconds,
            seconds=total,
            network_seconds=net_seconds,
            outside=1 - net_seconds / total,
            per_nfe_ms=1e3 * total / nfe,
            hand_written_seconds=self.hand,
            vs_hand_written=None if self.hand is None else total / self.hand,
            hand_written_outside=None if self.hand is None else 1 - self.hand_network / self.hand,
            max_abs_diff_vs_hand=None
            if self.hand_x is None
            else float((self.hand_x - self.res.x).abs().max()),
            kernel_table_misses=None if kernels is None else kernels.misses,
        )
        return self.row


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every (batch, NFE): build all plans, run each once, then ``repeats`` rounds over all
    of them (and the hand-written loops), so load changes hit every case alike."""
    batches = [256] if args.quick else (args.batch_sizes or BATCHES)
    nfes = [10] if args.quick else (args.nfes or NFES)
    widths = [128] if args.quick else (args.widths or WIDTHS)
    repeats = 1 if args.quick else args.repeats
    rows = []
    with torch.no_grad():
        for width, batch, nfe in itertools.product(widths, batches, nfes):
            cases = [
                Case(proc_name, name, width, batch, nfe)
                for proc_name, samplers in SAMPLERS.items()
                for name in samplers
            ]
            for c in cases:
                c.first()
            for _ in range(repeats):
                for c in cases:
                    c.repeat()
            block = [c.result() for c in cases]
            vp = next(r for r in block if r["process"] == "vp" and r["sampler"] == "em")
            for r in block:
                r["per_nfe_vs_vp_em"] = r["per_nfe_ms"] / vp["per_nfe_ms"]
            rows.extend(block)
    return rows


def verdicts(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per network width, at the largest batch, over PSLD and CLD: the worst time outside
    the network (with the hand-written loop's for the same case, the floor of any
    implementation of the same arithmetic), the worst per-NFE cost against VP ``em`` and the
    worst framework/hand-written ratio."""
    big = max(r["batch"] for r in rows)
    out: dict[str, Any] = {}
    for width in sorted({r["width"] for r in rows}):
        sel = [
            r for r in rows if r["process"] != "vp" and r["batch"] == big and r["width"] == width
        ]
        wo = max(sel, key=lambda r: r["outside"])
        wn = max(sel, key=lambda r: r["per_nfe_vs_vp_em"])
        hands = [r for r in sel if r["vs_hand_written"] is not None]
        wh = max(hands, key=lambda r: r["vs_hand_written"]) if hands else None
        floor = max((r["hand_written_outside"] for r in hands), default=float("nan"))
        tag = f"width {width}, batch {big}"
        out[f"{tag}: outside the network <= {OUTSIDE_MAX:.0%}"] = (
            ("holds" if wo["outside"] <= OUTSIDE_MAX else "fails")
            + f" (worst {wo['outside']:.1%}: {wo['process']} {wo['sampler']} NFE {wo['nfe']};"
            f" hand-written loops up to {floor:.1%})"
        )
        out[f"{tag}: per-NFE cost <= {PER_NFE_MAX}x VP em"] = (
            "holds" if wn["per_nfe_vs_vp_em"] <= PER_NFE_MAX else "fails"
        ) + (
            f" (worst {wn['per_nfe_vs_vp_em']:.2f}x: {wn['process']} {wn['sampler']} "
            f"NFE {wn['nfe']})"
        )
        if wh is not None:
            out[f"{tag}: framework / hand-written loop"] = (
                f"worst {wh['vs_hand_written']:.3f} ({wh['process']} {wh['sampler']} "
                f"NFE {wh['nfe']})"
            )
    return out


def table(rows: list[dict[str, Any]]) -> str:
    head = (
        f"{'process':13} {'sampler':7} {'width':>5} {'batch':>5} {'NFE':>4} {'plan s':>7} "
        f"{'first s':>8} "
        f"{'run s':>7} {'outside':>8} {'ms/NFE':>7} {'vs VP em':>9} {'vs hand':>8} "
        f"{'hand outside':>12}"
    )
    lines = [head]
    for r in rows:
        hand = "" if r["vs_hand_written"] is None else f"{r['vs_hand_written']:.3f}"
        hout = "" if r["vs_hand_written"] is None else f"{r['hand_written_outside']:.1%}"
        lines.append(
            f"{r['process']:13} {r['sampler']:7} {r['width']:5d} {r['batch']:5d} {r['nfe']:4d} "
            f"{r['plan_seconds']:7.3f} {r['first_run_seconds']:8.3f} {r['seconds']:7.3f} "
            f"{r['outside']:8.1%} {r['per_nfe_ms']:7.2f} {r['per_nfe_vs_vp_em']:9.2f} {hand:>8} "
            f"{hout:>12}"
        )
    return "\n".join(lines)


def report(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """Run, print the table and the verdicts, write ``diffusion_overhead[_quick].json``."""
    if args.threads:
        torch.set_num_threads(args.threads)
    # an untrained network drives the samples far out, where SiLU returns denormal floats
    # that slow the network several-fold: flush them, as inference servers do
    torch.set_flush_denormal(True)
    try:  # tiny float64 LAPACK calls (kernels, grids) crawl with BLAS threads on a loaded box
        from threadpoolctl import threadpool_limits

        limit = threadpool_limits(limits=1, user_api="blas")
    except ImportError:  # pragma: no cover
        limit = None
    try:
        rows = run(args)
    finally:
        if limit is not None:
            limit.restore_original_limits()
    print(table(rows))
    claims = verdicts(rows)
    for k, v in claims.items():
        print(f"  {k}: {v}")
    result = {
        "rows": rows,
        "claims": claims,
        "quick": args.quick,
        "torch_threads": torch.get_num_threads(),
        "network": f"MLP on {DIM}-D data, 2 hidden layers (width per row), SiLU, float32",
        "versions": {"splitsde": sd.__version__, "torch": torch.__version__},
    }
    name = "diffusion_overhead_quick.json" if args.quick else "diffusion_overhead.json"
    path = out / name
    path.write_text(json.dumps(to_jsonable(result), indent=1))
    print(f"results: {path}")
    return result


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of this benchmark (also offered by ``diffusion_quality.py``)."""
    p.add_argument("--repeats", type=int, default=5, help="runs per timing (the fastest counts)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--batch-sizes", type=_ints, default=None, help="e.g. 1000,4096")
    p.add_argument("--nfes", type=_ints, default=None, help="e.g. 20,100")
    p.add_argument("--widths", type=_ints, default=None, help="hidden widths, e.g. 128,256")


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes (smoke test)")
    add_arguments(p)
    p.add_argument("--out", default="benchmarks/results/diffusion_quality")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print(f"splitsde {sd.__version__}, torch {torch.__version__}{', quick' if args.quick else ''}")
    report(args, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
