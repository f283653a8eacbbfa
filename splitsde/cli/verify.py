"""``splitsde verify WORD``: an exact certificate of a splitting word on a built-in system."""

from __future__ import annotations

import argparse

from splitsde.cli.common import (
    check_memory,
    friction,
    physical,
    plot_file,
    positive_float,
    positive_int,
    seed,
)

#: float64 matrices of the size of the linear system's covariance (2 dim x 2 dim) that the
#: exact analysis keeps at once: used to refuse a --dim that cannot fit in memory.
MATRIX_COPIES = 64


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "verify",
        help="certify a splitting word: weak order, stationary moments, NFE, stability",
        description=(
            "Exact certificate of WORD (a preset like BAOAB or any word of the grammar, e.g. "
            "'B A[1/3] O A[2/3] B') on a built-in linear system: finite-time weak order, the "
            "scheme's stationary second moments (formulas in h for the harmonic systems) and "
            "their bias, measured field evaluations per step, and the stability bound in h."
        ),
    )
    p.add_argument("word", help="splitting word or preset name")
    p.add_argument(
        "--system",
        default="harmonic",
        choices=["harmonic", "overdamped-harmonic", "linear"],
        help="built-in system (letters A, B, O; overdamped: B, O)",
    )
    p.add_argument(
        "--dim", type=positive_int, default=None, help="dimension of --system linear (default 4)"
    )
    p.add_argument(
        "--seed", type=seed, default=0, help="seed of --system linear (0 to 2**63 - 1)"
    )
    p.add_argument("--h", type=positive_float, default=0.1, help="step size")
    p.add_argument("--omega", type=physical, default=1.0, help="oscillator frequency, 1e-6 to 1e6")
    p.add_argument("--gamma", type=friction, default=1.0, help="friction: 0 or 1e-6 to 1e6")
    p.add_argument("--kT", type=physical, default=1.0, help="temperature, 1e-6 to 1e6")
    p.add_argument("--mass", type=physical, default=1.0, help="mass, 1e-6 to 1e6")
    p.add_argument(
        "--reuse",
        choices=["none", "exact", "per_step"],
        default="exact",
        help="field-evaluation reuse rule of the compiled word",
    )
    p.add_argument(
        "--plot", type=plot_file, metavar="FILE", help="write a weak-error-vs-h figure (PNG)"
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from splitsde.analysis.certify import certificate, plot_certificate
    from splitsde.cli import CLIError
    from splitsde.cli.common import print_json
    from splitsde.compose.word import WordError

    if args.dim is not None and args.system != "linear":
        raise CLIError(f"--dim applies to --system linear, not {args.system}")
    args.dim = 4 if args.dim is None else args.dim
    if args.system == "linear":
        if args.dim < 2:
            raise CLIError("--system linear needs --dim >= 2")
        check_memory(
            MATRIX_COPIES * (2 * args.dim) ** 2 * 8,
            f"the exact analysis of --dim {args.dim}",
            "use a smaller --dim",
        )
    try:
        cert = certificate(
            args.word,
            args.system,
            h=args.h,
            omega=args.omega,
            gamma=args.gamma,
            kT=args.kT,
            mass=args.mass,
            dim=args.dim,
            seed=args.seed,
            reuse=args.reuse,
        )
    except WordError:
        raise  # reported by the CLI entry point with the word's caret diagnostics
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    if args.plot:
        plot_certificate(cert, args.plot)
    if args.json:
        out = cert.to_json()
        if args.plot:
            out["plot"] = args.plot
        print_json(out)
    else:
        print(cert.format())
        if args.plot:
            print(f"  figure: {args.plot}")
    return 0
