"""``splitsde compare``: diffusion samplers x NFE budgets on an analytic target."""

from __future__ import annotations

import argparse
import re

from splitsde.apps.cli.common import (
    STATE_COPIES,
    CLIError,
    check_memory,
    plot_file,
    positive_float,
    positive_int,
    positive_int_list,
    print_json,
    seed,
)

_TARGET = re.compile(r"(gaussian|ring|mixture)-([0-9]+)(?:x([0-9]+))?", re.ASCII)


def _memory(target: str, n: int, blocks: int) -> float:
    """Bytes a comparison on ``target`` with ``n`` samples needs at least: the samples and
    their temporaries, and for Gaussian data the dense covariances of the exact law (all
    blocks of the process together) and their factors."""
    m = _TARGET.fullmatch(target)
    assert m is not None
    kind, a, b = m.group(1), int(m.group(2)), m.group(3)
    dim = 2 if kind == "ring" else (a if kind == "gaussian" else int(b))
    modes = 1 if kind == "gaussian" else a
    need = STATE_COPIES * n * blocks * dim * 8 + 4 * n * modes * 8 + 4 * modes * dim * 8
    if kind == "gaussian":
        need += 16 * (blocks * dim) ** 2 * 8
    return need


def _name_list(text: str) -> list[str]:
    out = [v.strip() for v in text.split(",") if v.strip()]
    if not out:
        raise argparse.ArgumentTypeError("give at least one sampler")
    return out


def register(sub: argparse._SubParsersAction) -> None:
    from splitsde.diffusion.grids import GRIDS
    from splitsde.diffusion.processes import PROCESSES
    from splitsde.diffusion.registry import SAMPLERS

    p = sub.add_parser(
        "compare",
        help="compare diffusion samplers across NFE budgets on an analytic target",
        description="Run diffusion samplers at several NFE budgets (score evaluations, counting "
        "the final denoising step) with the exact score of an analytic target, and print a "
        "table of sample quality: the exact KL divergence to the data for Gaussian data "
        "(exact analysis, no Monte Carlo), the sliced Wasserstein distance to fresh data for "
        "mixtures (mean ± standard error over batches). Samplers: " + ", ".join(SAMPLERS) + ".",
    )
    p.add_argument("--process", default="psld-cifar10", choices=sorted(PROCESSES))
    p.add_argument(
        "--target", default="ring-8", help="gaussian-D, ring-K or mixture-KxD (default ring-8)"
    )
    p.add_argument(
        "--samplers",
        type=_name_list,
        default=["em", "sscs", "oba", "reduced-oba", "sps"],
        help="comma-separated sampler names",
    )
    p.add_argument(
        "--nfe",
        type=positive_int_list,
        default=(10, 20, 50, 100),
        help="NFE budgets, e.g. 10,20,50",
    )
    p.add_argument("--n", type=positive_int, default=2000, help="samples per run (mixtures)")
    p.add_argument(
        "--grid",
        choices=GRIDS,
        default=None,
        help="time grid for every sampler (default: each sampler's recommended grid)",
    )
    p.add_argument("--eps", type=positive_float, default=None, help="smallest diffusion time")
    p.add_argument(
        "--prior",
        choices=("stationary", "exact"),
        default="stationary",
        help="start from the process's prior or the exact marginal at T",
    )
    p.add_argument(
        "--monte-carlo",
        action="store_true",
        help="measure Gaussian targets from samples instead of the exact law",
    )
    p.add_argument("--seed", type=seed, default=0, help="0 to 2**63 - 1")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument(
        "--plot", type=plot_file, default=None, metavar="FILE", help="write a PNG of quality vs NFE"
    )
    p.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bar (default: on a terminal)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import splitsde.diffusion as dm

    unknown = [s for s in args.samplers if s.lower() not in dm.SAMPLERS]
    if unknown:
        raise CLIError(
            f"unknown sampler(s) {', '.join(unknown)}; samplers: {', '.join(dm.SAMPLERS)}"
        )
    args.target = args.target.strip().lower()
    if not _TARGET.fullmatch(args.target):
        raise CLIError(
            f"unknown target {args.target!r}; use gaussian-D, ring-K or mixture-KxD with ASCII "
            "digits (e.g. gaussian-64, ring-8, mixture-8x16)"
        )
    try:
        proc = dm.process(args.process)
        check_memory(
            _memory(args.target, args.n, len(proc.blocks)),
            f"--target {args.target} with --n {args.n}",
            "use a smaller target or fewer samples",
        )
        tgt = dm.target(args.target, seed=args.seed)
        for name in args.samplers:
            dm.sampler(name).check_process(proc)
    except ValueError as err:
        raise CLIError(str(err)) from None
    exact = False if args.monte_carlo else None
    try:
        comp = dm.compare(
            proc,
            tgt,
            args.samplers,
            args.nfe,
            n=args.n,
            grid=args.grid,
            eps=args.eps,
            seed=args.seed,
            prior=args.prior,
            exact=exact,
            progress=args.progress,
        )
    except ValueError as err:
        raise CLIError(str(err)) from None
    if args.plot:
        _plot(comp, args.plot)
    if args.json:
        print_json(
            {
                **comp.summary(),
                "grid": args.grid or "recommended",
                "prior": args.prior,
                "seed": args.seed,
                "rows": comp.rows,
            }
        )
        return 0
    print(comp.table())
    if args.plot:
        print(f"plot: {args.plot}")
    return 0


def _plot(comp, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import math

    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name in dict.fromkeys(r["sampler"] for r in comp.rows):
        pts = [
            (r.get("nfe") or r["nfe_budget"], r.get(comp.metric))
            for r in comp.rows
            if r["sampler"] == name and r.get(comp.metric) is not None
        ]
        pts = [(n, v) for n, v in pts if math.isfinite(v) and v > 0]
        if pts:
            ax.plot(*zip(*pts), "o-", label=name)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("NFE")
    ax.set_ylabel(comp.metric)
    ax.set_title(f"{comp.target} / {comp.process}", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
