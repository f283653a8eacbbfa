"""``splitsde sample``: run a Langevin system with a word and print stationary statistics.

A run that diverges never prints statistics: on the harmonic system the exact stability bound
of the word is checked before the run (for a linear system it is decided exactly,
:mod:`splitsde.runtime.divergence`); on every system a coordinate or momentum beyond
:data:`DIVERGED` times the system's scale stops the run with the step at which it happened, as
do non-finite values, and statistics that are not finite are refused. A bias is printed in
standard errors only when the standard error is positive and finite (``-`` otherwise, ``null``
in JSON).
"""

from __future__ import annotations

import argparse
import math
from typing import Any

import numpy as np
import torch

from splitsde.apps.cli.common import (
    DTYPES,
    STATE_COPIES,
    CLIError,
    check_memory,
    friction,
    nonnegative_int,
    physical,
    positive_float,
    positive_int,
    print_json,
    seed,
    writable_file,
)

SYSTEMS = ("harmonic", "double-well", "muller-brown")

#: A state element larger than this many times the system's scale (the largest of
#: sqrt(mass kT), the exact standard deviation of q, and the initial state) means divergence.
DIVERGED = 1e8


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sample",
        help="run underdamped Langevin dynamics with a splitting word",
        description="Run underdamped Langevin dynamics on a built-in system and print the "
        "stationary mean and variance of every coordinate with batch-means error bars "
        "(batches of independent walkers), next to the exact Boltzmann values.",
    )
    p.add_argument("--system", choices=SYSTEMS, default="harmonic")
    p.add_argument(
        "--word", default="BAOAB", help="a word or preset name (BAOAB, OBABO, 'B A O A B', ...)"
    )
    p.add_argument("--h", type=positive_float, default=0.1, help="step size")
    p.add_argument("--steps", type=positive_int, default=2000, help="steps after the burn-in")
    p.add_argument(
        "--burn-in", type=nonnegative_int, default=None, help="burn-in steps (default: steps/5)"
    )
    p.add_argument("--walkers", type=positive_int, default=1000)
    p.add_argument("--seed", type=seed, default=0, help="0 to 2**63 - 1")
    p.add_argument("--gamma", type=friction, default=1.0, help="friction: 0 or 1e-6 to 1e6")
    p.add_argument("--kT", type=physical, default=1.0, help="temperature, 1e-6 to 1e6")
    p.add_argument("--omega", type=physical, default=1.0, help="harmonic frequency, 1e-6 to 1e6")
    p.add_argument("--mass", type=physical, default=1.0, help="mass, 1e-6 to 1e6")
    p.add_argument(
        "--dim",
        type=positive_int,
        default=None,
        help="coordinates per walker (harmonic and double-well; muller-brown is 2-D)",
    )
    p.add_argument("--dtype", choices=sorted(DTYPES), default="float64")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument(
        "--log",
        type=writable_file,
        default=None,
        metavar="FILE",
        help="write state data (step, time, potential energy, kinetic and configurational "
        "temperature, acceptance of { } groups, speed) every --log-every steps, like OpenMM's "
        "StateDataReporter: CSV, or JSON lines for a .jsonl/.json FILE",
    )
    p.add_argument(
        "--log-every",
        type=positive_int,
        default=None,
        metavar="N",
        help="steps between lines of --log (default: 1/100 of all steps, burn-in included)",
    )
    p.set_defaults(func=run)


def _potential(args: argparse.Namespace) -> Any:
    from splitsde.langevin import potentials

    if args.system == "harmonic":
        return potentials.Harmonic(args.omega)
    if args.system == "double-well":
        return potentials.DoubleWell()
    return potentials.MullerBrown()


def _check_stable(integ: Any, args: argparse.Namespace) -> None:
    """Fail before the run when the word is unstable at this step on a linear system."""
    from splitsde.runtime.divergence import linear_stability

    stab = linear_stability(integ, args.h)
    if stab is not None and not stab.stable:
        bound = f" h < {stab.bound:.6g}" if stab.bound is not None else ""
        raise CLIError(
            f"--h {args.h:g} exceeds the stability bound{bound} of {integ.word} on the "
            f"{args.system} system (omega = {args.omega:g}, gamma = {args.gamma:g}, mass = "
            f"{args.mass:g}): the one-step map has spectral radius {stab.spectral_radius:.6g} "
            f">= 1, so the chain diverges; choose a smaller --h"
        )


def run(args: argparse.Namespace) -> int:
    from splitsde.compose.presets import word as parse_word
    from splitsde.langevin import underdamped

    _check_args(args)
    pot = _potential(args)
    system = underdamped(pot, gamma=args.gamma, kT=args.kT, mass=args.mass)
    integ = system.integrator(parse_word(args.word))
    if args.system == "harmonic":
        _check_stable(integ, args)
    burn = args.steps // 5 if args.burn_in is None else args.burn_in
    y0 = system.initial_state(
        args.walkers,
        dim=args.dim,
        dtype=DTYPES[args.dtype],
        generator=torch.Generator().manual_seed(args.seed + 1),
    )
    try:
        mom = pot.moments(args.kT)
    except NotImplementedError:
        mom = None
    res = _run(args, system, integ, y0, burn, mom)
    blocks, batches = _block_statistics(res, args)
    exact = _exact_moments(mom, blocks, args)
    out = {
        "system": args.system,
        "word": str(integ.word),
        "h": args.h,
        "steps": args.steps,
        "burn_in": burn,
        "walkers": args.walkers,
        "seed": args.seed,
        "dtype": args.dtype,
        "params": {
            "gamma": args.gamma,
            "kT": args.kT,
            "mass": args.mass,
            **({"omega": args.omega} if args.system == "harmonic" else {}),
        },
        "weak_order": integ.weak_order,
        "nfe_per_step": res.nfe_per_step,
        "nfe": res.nfe,
        "blocks": blocks,
        "exact": exact,
        "batches": batches,
        "wall_time": res.wall_time,
    }
    if args.json:
        print_json(out)
        return 0
    print(
        f"{args.system}: word {integ.word}, h = {args.h}, "
        f"{args.walkers} walkers x {args.steps} steps "
        f"(burn-in {burn}), NFE/step = {res.nfe_per_step:g}"
    )
    _print_table(blocks, exact)
    return 0


def _check_args(args: argparse.Namespace) -> None:
    """Refuse inconsistent options and walker counts that do not fit in memory, before any
    work."""
    if args.walkers < 2:
        raise CLIError("--walkers must be at least 2 (error bars come from independent walkers)")
    if args.dim is not None and args.system == "muller-brown":
        raise CLIError(
            "--dim applies to the 1-D systems (harmonic, double-well); muller-brown is 2-D"
        )
    if args.log_every is not None and args.log is None:
        raise CLIError("--log-every needs --log FILE")
    coords = 2 if args.system == "muller-brown" else (args.dim or 1)
    itemsize = torch.finfo(DTYPES[args.dtype]).bits // 8
    check_memory(
        STATE_COPIES * 2 * args.walkers * coords * itemsize,
        f"{args.walkers} walkers with {coords} coordinate(s) each",
        "use fewer --walkers or a smaller --dim",
    )


def _run(
    args: argparse.Namespace,
    system: Any,
    integ: Any,
    y0: dict[str, torch.Tensor],
    burn: int,
    mom: dict[str, Any] | None,
) -> Any:
    """The run with running means of ``q`` and ``p`` (and the optional log); a state beyond
    :data:`DIVERGED` times the system's natural scale counts as diverged."""
    from splitsde.langevin import Reporter
    from splitsde.runtime.integrate import integrate
    from splitsde.runtime.integrator import NonFiniteError
    from splitsde.runtime.observers import Running

    scale = max(
        math.sqrt(args.kT * args.mass),
        math.sqrt(float(np.max(mom["var"]))) if mom is not None else 0.0,
        *(float(x.abs().max()) for x in y0.values()),
    )
    obs = [
        Running(lambda t, s: s["q"], "q", burn_in=burn),
        Running(lambda t, s: s["p"], "p", burn_in=burn),
    ]
    if args.log is not None:
        every = args.log_every or max(1, (burn + args.steps) // 100)
        obs.append(Reporter(args.log, system, every=every))
    try:
        return integrate(
            integ,
            y0,
            h=args.h,
            steps=burn + args.steps,
            seed=args.seed,
            observers=obs,
            max_abs=DIVERGED * scale,
        )
    except NonFiniteError as err:
        raise CLIError(f"the run diverged: {err}") from None


def _block_statistics(
    res: Any, args: argparse.Namespace
) -> tuple[dict[str, dict[str, Any]], int]:
    """Mean and variance of each block with batch-means standard errors; non-finite
    statistics mean the run diverged."""
    from splitsde.base.stats import walker_batch_means

    blocks: dict[str, dict[str, Any]] = {}
    batches = 0
    for name in ("q", "p"):
        acc = res.finals[name]
        st = walker_batch_means(acc["mean"], acc["mean_sq"])
        batches = st["batches"]
        blocks[name] = {
            k: np.atleast_1d(st[k]).reshape(-1) for k in ("mean", "mean_se", "var", "var_se")
        }
        for k, v in blocks[name].items():
            if not np.all(np.isfinite(v)):
                raise CLIError(
                    f"the statistics are not finite ({k} of {name} = {v.tolist()}): the run "
                    f"diverged; choose a smaller --h (now {args.h:g})"
                )
    return blocks, batches


def _exact_moments(
    mom: dict[str, Any] | None, blocks: dict[str, dict[str, Any]], args: argparse.Namespace
) -> dict[str, dict[str, np.ndarray]]:
    """The exact Boltzmann moments where the potential knows them; adds the variance z-scores
    to ``blocks``."""
    from splitsde.base.stats import z_score

    if mom is None:
        return {}
    exact = {
        "q": {
            "mean": np.broadcast_to(mom["mean"], blocks["q"]["mean"].shape),
            "var": np.broadcast_to(mom["var"], blocks["q"]["var"].shape),
        },
        "p": {
            "mean": np.zeros_like(blocks["p"]["mean"]),
            "var": np.full_like(blocks["p"]["var"], args.kT * args.mass),
        },
    }
    for name, b in blocks.items():
        b["var_z"] = [
            z_score(v, e, se) for v, e, se in zip(b["var"], exact[name]["var"], b["var_se"])
        ]
    return exact


def _print_table(blocks: dict[str, dict[str, Any]], exact: dict[str, Any]) -> None:
    print(f"{'':6}{'mean':>12}{'± se':>10}{'var':>12}{'± se':>10}{'exact var':>12}{'bias/se':>9}")
    for name, b in blocks.items():
        for i in range(len(b["mean"])):
            ev = exact.get(name, {}).get("var")
            ev_i = float(ev[i]) if ev is not None else float("nan")
            z = b["var_z"][i] if "var_z" in b else None
            label = f"{name}[{i}]" if len(b["mean"]) > 1 else name
            print(
                f"{label:6}{b['mean'][i]:12.5f}{b['mean_se'][i]:10.5f}{b['var'][i]:12.5f}"
                f"{b['var_se'][i]:10.5f}{ev_i:12.5f}{_z(z):>9}"
            )


def _z(z: float | None) -> str:
    """A z-score for the table: ``-`` when there is none (zero or infinite standard error)."""
    return "-" if z is None else f"{z:.2f}"
