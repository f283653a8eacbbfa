"""``splitsde verify WORD``: a certificate of a splitting word, with a verdict.

Built-in systems (``--system``): linear ones get the exact analysis, nonlinear ones a Monte
Carlo weak-order estimate with a goodness-of-fit verdict. ``--sde MODULE:ATTRIBUTE`` (or
``FILE.py:ATTRIBUTE``) certifies a user's own SDE: the attribute is imported -- it is code the
user chose to run, like ``python -m``, and nothing else is evaluated. Under ``torchrun`` the
Monte Carlo walkers are sharded over the processes (see :mod:`splitsde.analysis.distributed`).

Exit status: 0 when the order is certified, 1 when the analysis ran but could not certify it
(the verdict says why), 2 for unusable input.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from splitsde.apps.cli.common import (
    check_memory,
    friction,
    nonnegative_float,
    physical,
    plot_file,
    positive_float,
    positive_int,
    seed,
)

#: float64 matrices of the size of the linear system's covariance (2 dim x 2 dim) that the
#: exact analysis keeps at once: used to refuse a --dim that cannot fit in memory.
MATRIX_COPIES = 64

SYSTEMS = (
    "harmonic",
    "overdamped-harmonic",
    "linear",
    "quartic",
    "double-well",
    "muller-brown",
)
NONLINEAR = ("quartic", "double-well", "muller-brown")


def _float_list(text: str) -> tuple[float, ...]:
    try:
        out = tuple(float(v) for v in text.replace(" ", "").split(",") if v)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a comma-separated list of numbers"
        ) from None
    if len(out) < 2 or any(not (v > 0 and v < float("inf")) for v in out):
        raise argparse.ArgumentTypeError(f"{text!r}: give at least two positive steps")
    return out


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "verify",
        help="certify a splitting word: weak order (with a verdict), stationary moments, NFE, "
        "stability",
        description=(
            "Certificate of WORD (a preset like BAOAB or any word of the grammar, e.g. "
            "'B A[1/3] O A[2/3] B'). Linear systems: exact finite-time weak order, the "
            "scheme's stationary second moments (formulas in h for the harmonic systems) and "
            "their bias, measured field evaluations per step and the stability bound in h. "
            "Nonlinear systems, and --monte-carlo: the weak order from Monte Carlo over a "
            "ladder of steps on one Brownian path, with a goodness-of-fit verdict. Exit "
            "status 0: certified; 1: not certified (the verdict says why); 2: bad input."
        ),
    )
    p.add_argument("word", nargs="?", help="splitting word or preset name")
    _add_system_options(p)
    _add_analysis_options(p)
    _add_monte_carlo_options(p.add_argument_group("Monte Carlo"))
    _add_output_options(p)
    p.set_defaults(func=run)


def _add_system_options(p: argparse.ArgumentParser) -> None:
    """The system: built-in (and its parameters) or the user's own (``--sde``)."""
    p.add_argument(
        "--system",
        default="harmonic",
        choices=SYSTEMS,
        help="built-in system (letters A, B, O; overdamped: B, O)",
    )
    p.add_argument(
        "--sde",
        metavar="MODULE:ATTR",
        help="certify your own SDE: import ATTR from MODULE (or FILE.py): an Integrator, a "
        "System, an SDE (fields with definitions), a tuple (sde, params, fields), or a "
        "function returning one -- this runs that module's code",
    )
    p.add_argument(
        "--dim", type=positive_int, default=None, help="dimension of --system linear (default 4)"
    )
    p.add_argument("--seed", type=seed, default=0, help="seed of --system linear (0 to 2**63 - 1)")
    p.add_argument("--h", type=positive_float, default=0.1, help="step size")
    p.add_argument("--omega", type=physical, default=1.0, help="oscillator frequency, 1e-6 to 1e6")
    p.add_argument("--gamma", type=friction, default=1.0, help="friction: 0 or 1e-6 to 1e6")
    p.add_argument("--kT", type=physical, default=1.0, help="temperature, 1e-6 to 1e6")
    p.add_argument("--mass", type=physical, default=1.0, help="mass, 1e-6 to 1e6")


def _add_analysis_options(p: argparse.ArgumentParser) -> None:
    """How the word is compiled and how a linear SDE is analysed."""
    p.add_argument(
        "--reuse",
        choices=["none", "exact", "per_step"],
        default="exact",
        help="field-evaluation reuse rule of the compiled word",
    )
    how = p.add_mutually_exclusive_group()
    how.add_argument(
        "--symbolic",
        dest="symbolic",
        action="store_true",
        default=None,
        help="linear SDE (--sde, --system linear): force the exact series in h (costly above "
        "3 blocks)",
    )
    how.add_argument(
        "--numeric",
        dest="symbolic",
        action="store_false",
        help="linear user SDE: only the exact numeric weak-error ladder",
    )


def _add_monte_carlo_options(mc: argparse._ArgumentGroup) -> None:
    """The Monte Carlo weak-order estimate: walkers, ladder, observable, reference."""
    mc.add_argument(
        "--monte-carlo",
        action="store_true",
        help="estimate the weak order by Monte Carlo (always for nonlinear systems)",
    )
    mc.add_argument("--walkers", type=positive_int, default=50_000)
    mc.add_argument(
        "--hs", type=_float_list, help="ladder of steps, e.g. 0.05,0.1,0.2,0.4 (nested is best)"
    )
    mc.add_argument(
        "--T", type=positive_float, default=None, help="final time (default 2; Müller-Brown 1)"
    )
    mc.add_argument(
        "--stationary",
        action="store_true",
        help="the stationary (invariant-measure) bias instead of the finite-time error",
    )
    mc.add_argument("--burn-in", type=nonnegative_float, default=5.0, help="time (stationary)")
    mc.add_argument("--sample-time", type=positive_float, default=20.0, help="time (stationary)")
    mc.add_argument(
        "--observable",
        help="a named observable of the built-in system (q, q2, q4, U; Müller-Brown: x, y, "
        "x2, y2, U) or an expression in the blocks, e.g. 'q**2' (default: the first block "
        "squared)",
    )
    mc.add_argument(
        "--reference",
        default=None,
        help="fine (a fine-step run on the same Brownian path), extrapolated, exact "
        "(quadrature / exact law) or a number (default: exact when known, else fine)",
    )
    mc.add_argument("--alpha", type=positive_float, default=0.01, help="goodness-of-fit level")
    mc.add_argument(
        "--no-common-noise",
        dest="common_noise",
        action="store_false",
        help="independent noise per step instead of one Brownian path",
    )
    mc.add_argument("--mc-seed", type=seed, default=0, help="seed of the noise (0 to 2**63 - 1)")
    mc.add_argument("--y0", help="initial state of a --sde without initial_state(), e.g. 'q=1,p=0'")
    mc.add_argument("--device", default="cpu", help="cpu or cuda (under torchrun: cuda:LOCAL_RANK)")


def _add_output_options(p: argparse.ArgumentParser) -> None:
    """What is written: a figure, JSON instead of text."""
    p.add_argument(
        "--plot", type=plot_file, metavar="FILE", help="write a figure (PNG/PDF/SVG) of the fit"
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")


# ---------------------------------------------------------------------------------------------
# --sde MODULE:ATTR
# ---------------------------------------------------------------------------------------------
def load_object(spec: str) -> Any:
    """Import ``ATTR`` (dotted) from ``MODULE`` or ``FILE.py``; a function is called."""
    from splitsde.apps.cli import CLIError

    module_part, sep, attr = spec.rpartition(":")
    if not sep or not module_part or not attr:
        raise CLIError(f"--sde takes MODULE:ATTRIBUTE or FILE.py:ATTRIBUTE, got {spec!r}")
    try:
        if module_part.endswith(".py"):
            path = Path(module_part)
            if not path.is_file():
                raise CLIError(f"--sde: no file {module_part!r}")
            mspec = importlib.util.spec_from_file_location(path.stem, path)
            assert mspec is not None and mspec.loader is not None
            module = importlib.util.module_from_spec(mspec)
            mspec.loader.exec_module(module)
        else:
            module = importlib.import_module(module_part)
    except CLIError:
        raise
    except ModuleNotFoundError as exc:
        raise CLIError(f"--sde: cannot import {module_part!r}: {exc}") from None
    except Exception as exc:  # the user's module raised while being imported
        raise CLIError(
            f"--sde: importing {module_part!r} raised {type(exc).__name__}: {exc}"
        ) from None
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise CLIError(f"--sde: {module_part!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    from splitsde.runtime.integrator import Integrator
    from splitsde.runtime.system import System
    from splitsde.symbolic.sde import SDE

    if callable(obj) and not isinstance(obj, Integrator | System | SDE | type):
        try:
            obj = obj()
        except Exception as exc:
            raise CLIError(f"--sde: calling {attr}() raised {type(exc).__name__}: {exc}") from None
    return obj


def _user_target(obj: Any, word: str | None) -> Any:
    """What :func:`certificate` takes, from the loaded object and WORD."""
    from splitsde.apps.cli import CLIError
    from splitsde.runtime.integrator import Integrator
    from splitsde.runtime.system import System
    from splitsde.symbolic.sde import SDE

    if isinstance(obj, Integrator):
        if word is not None and word != str(obj.word):
            raise CLIError(
                f"--sde gives an integrator for {obj.word}; leave WORD out or give a System"
            )
        return obj
    if word is None:
        raise CLIError("give WORD: --sde names a system, not an integrator")
    if isinstance(obj, System):
        return (obj, word)
    if isinstance(obj, SDE):
        return (obj, word)
    if isinstance(obj, tuple) and len(obj) in (2, 3) and isinstance(obj[0], SDE):
        return (obj[0], word, *obj[1:])
    raise CLIError(
        "--sde must name an Integrator, a System, an SDE or a tuple (sde, params[, fields]); "
        f"got {type(obj).__name__}"
    )


def _parse_y0(text: str | None, integ: Any, walkers: int, device: Any) -> dict[str, Any]:
    import torch

    from splitsde.analysis.affine import layout_of
    from splitsde.apps.cli import CLIError

    values = dict.fromkeys(integ.block_names, 0.0)
    if text:
        for item in text.split(","):
            name, sep, val = item.partition("=")
            name = name.strip()
            if not sep or name not in values:
                raise CLIError(
                    f"--y0 takes block=value pairs for blocks {', '.join(integ.block_names)}; "
                    f"got {item!r}"
                )
            try:
                values[name] = float(val)
            except ValueError:
                raise CLIError(f"--y0: {val!r} is not a number") from None
    shapes = {lay.block: lay.shape for lay in layout_of(integ)}
    return {
        b: torch.full((walkers, *shapes[b]), v, dtype=torch.float64, device=device)
        for b, v in values.items()
    }


def _observable(text: str | None, integ: Any, prob: Any) -> tuple[Any, str, Any]:
    """(torch callable, name, numpy function for quadrature or None)."""
    from splitsde.apps.cli import CLIError
    from splitsde.symbolic.parse import parse_expression
    from splitsde.symbolic.spellings import lambdify as spell_lambdify

    first = integ.block_names[0]
    if text is None:
        text = f"{first}**2"
    if prob is not None and hasattr(prob, "observables") and text in prob.observables:
        fn, quad = prob.observables[text]
        return fn, text, quad
    blocks = list(integ.sde.blocks)
    expr = parse_expression(text, blocks)
    free = expr.free_symbols - set(blocks)
    if free:
        raise CLIError(f"--observable {text!r} uses unknown names {sorted(map(str, free))}")
    fn_t = spell_lambdify(blocks, expr, "torch")
    names = [b.name for b in blocks]

    def fn(state: Any) -> Any:
        import torch

        out = fn_t(*(state[n] for n in names))
        return out if isinstance(out, torch.Tensor) else torch.full_like(state[names[0]], out)

    quad = None
    if prob is not None and hasattr(prob, "u") and expr.free_symbols <= {blocks[0]}:
        quad = spell_lambdify([blocks[0]], expr, "numpy")
    return fn, text, quad


def _monte_carlo_options(args: argparse.Namespace, integ: Any, prob: Any, world: Any) -> Any:
    import torch

    from splitsde.analysis.certify import DEFAULT_LADDERS, DEFAULT_T, default_start
    from splitsde.analysis.montecarlo import MonteCarloOptions
    from splitsde.apps.cli import CLIError

    device = torch.device(args.device)
    if device.type == "cuda" and world.device.type == "cuda":
        device = world.device
    fn, name, quad = _observable(args.observable, integ, prob)
    gen = torch.Generator().manual_seed(args.mc_seed + 1)
    starter = getattr(prob, "system", prob)
    if args.y0 is None and args.sde is None and args.system in NONLINEAR:
        y0 = default_start(prob, args.system, args.walkers, seed=args.mc_seed)
    elif args.y0 is None and hasattr(starter, "initial_state") and not hasattr(prob, "A"):
        # Langevin systems: the potential's reference configuration, Maxwell momenta
        y0 = starter.initial_state(args.walkers, generator=gen)
    elif args.y0 is None and hasattr(prob, "A"):  # built-in linear problems: every block at 1
        y0 = _parse_y0(None, integ, args.walkers, "cpu")
        y0 = {k: torch.ones_like(v) for k, v in y0.items()}
    else:
        y0 = _parse_y0(args.y0, integ, args.walkers, "cpu")
    y0 = {k: v.to(device) for k, v in y0.items()}
    hs = args.hs
    if hs is None:
        hs = DEFAULT_LADDERS.get(args.system) if prob is not None and args.sde is None else None
        if hs is None:
            hs = tuple(args.h * f for f in (0.125, 0.25, 0.5, 1.0))
    mode = "stationary" if args.stationary else "final"
    T = args.T if args.T is not None else DEFAULT_T.get(args.system, 2.0)
    ref: Any = args.reference
    if ref is None:
        ref = "exact" if (mode == "stationary" and quad is not None) else "fine"
        if mode == "final" and prob is not None and hasattr(prob, "law") and args.sde is None:
            ref = "exact" if args.observable in (None, f"{integ.block_names[0]}**2") else "fine"
    if ref == "exact":
        if mode == "stationary":
            if quad is None:
                raise CLIError(
                    f"no exact stationary value of {name!r} here: use --reference fine or "
                    "extrapolated"
                )
            ref = float(prob.average(quad))
        else:
            if prob is None or not hasattr(prob, "law"):
                raise CLIError(
                    "the exact finite-time value is known only for the built-in linear systems "
                    "(observable: the first block squared); use --reference fine"
                )
            import numpy as np

            m0 = np.array([float(y0[b].flatten()[0]) for b in integ.block_names])
            m, S = prob.law(T, m0, 0.0)
            ref = float(S[0, 0] + m[0] ** 2)
    elif ref not in ("fine", "extrapolated"):
        try:
            ref = float(ref)
        except ValueError:
            raise CLIError(
                f"--reference must be fine, extrapolated, exact or a number; got {ref!r}"
            ) from None
    return MonteCarloOptions(
        hs=hs,
        y0=y0,
        observable=fn,
        observable_name=name,
        mode=mode,
        T=None if mode == "stationary" else T,
        burn_in_time=args.burn_in if mode == "stationary" else 0.0,
        sample_time=args.sample_time if mode == "stationary" else None,
        reference=ref,
        seed=args.mc_seed,
        common_noise=args.common_noise,
        alpha=args.alpha,
    )


# ---------------------------------------------------------------------------------------------
def run(args: argparse.Namespace) -> int:
    from splitsde.analysis.distributed import init_world
    from splitsde.apps.cli import CLIError
    from splitsde.base.errors import SplitsdeError
    from splitsde.compose.word import WordError

    _check_arguments(args)
    world = init_world()

    def say(msg: str) -> None:
        if world.is_root:
            print(msg, file=sys.stderr, flush=True)

    monte_carlo = args.monte_carlo or args.system in NONLINEAR or args.stationary
    try:
        if args.sde is not None:
            cert = _user_certificate(args, world, say, monte_carlo)
        else:
            cert = _builtin_certificate(args, world, say, monte_carlo)
    except (WordError, CLIError):
        raise  # reported by the CLI entry point (with the word's caret diagnostics)
    except SplitsdeError as exc:
        raise CLIError(str(exc)) from None
    if world.is_root:
        _report(cert, args)
    return 0 if cert.certified else 1


def _check_arguments(args: argparse.Namespace) -> None:
    """Refuse unusable options before any computation; ``args.dim`` gets its default."""
    from splitsde.analysis.plot import ensure_writable
    from splitsde.apps.cli import CLIError
    from splitsde.base.errors import SplitsdeError

    if args.plot:
        try:
            ensure_writable(args.plot)  # before any computation
        except SplitsdeError as exc:
            raise CLIError(str(exc)) from None
    if args.sde is None and args.word is None:
        raise CLIError("give WORD (or --sde MODULE:ATTR naming an integrator)")
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


def _user_certificate(
    args: argparse.Namespace, world: Any, say: Callable[[str], None], monte_carlo: bool
) -> Any:
    """The certificate of ``--sde MODULE:ATTR`` (with WORD unless it names an integrator)."""
    from splitsde.analysis.certify import _as_integrator, certificate

    obj = load_object(args.sde)
    integ, _ = _as_integrator(_user_target(obj, args.word), args.reuse)
    options = _monte_carlo_options(args, integ, obj, world) if monte_carlo else None
    return certificate(
        integ,
        h=args.h,
        monte_carlo=options,
        symbolic=args.symbolic,
        progress=None if world.is_root else False,
        say=say,
    )


def _builtin_certificate(
    args: argparse.Namespace, world: Any, say: Callable[[str], None], monte_carlo: bool
) -> Any:
    """The certificate of WORD on ``--system``."""
    from splitsde.analysis.certify import certificate
    from splitsde.compose.reduce import Reduction

    options = None
    if monte_carlo:
        if args.system == "linear":
            say(f"building a random stable linear SDE of dimension {args.dim} ...")
        prob = _builtin_problem(args)
        integ = prob.integrator(args.word, reduction=Reduction(args.reuse))
        options = _monte_carlo_options(args, integ, prob, world)
    return certificate(
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
        monte_carlo=options,
        symbolic=args.symbolic,
        progress=None if world.is_root else False,
        say=say,
    )


def _builtin_problem(args: argparse.Namespace) -> Any:
    """The problem of ``--system`` with its parameters (for the Monte Carlo options)."""
    from splitsde import problems

    kw = {"gamma": args.gamma, "kT": args.kT, "mass": args.mass}
    return {
        "harmonic": lambda: problems.harmonic(args.omega, args.gamma, args.kT, args.mass),
        "overdamped-harmonic": lambda: problems.overdamped_harmonic(args.omega, args.kT),
        "linear": lambda: problems.random_linear(args.dim, args.seed),
        "quartic": lambda: problems.quartic(**kw),
        "double-well": lambda: problems.double_well(**kw),
        "muller-brown": lambda: problems.muller_brown(**kw),
    }[args.system]()


def _report(cert: Any, args: argparse.Namespace) -> None:
    """Print the certificate (text or ``--json``) and write ``--plot``."""
    from splitsde.analysis.plot import plot_certificate
    from splitsde.apps.cli.common import print_json

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
