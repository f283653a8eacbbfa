"""The ``splitsde`` command line: one sub-command per module, each with ``register``."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from splitsde.errors import SplitsdeError

__all__ = ["main"]

#: Sub-command modules under :mod:`splitsde.cli`; each defines ``register(subparsers)``.
COMMANDS = ["sample", "demo", "verify", "compare", "digits"]


class CLIError(SplitsdeError):
    """A user error: printed without a traceback, exit status 2."""


def build_parser() -> argparse.ArgumentParser:
    from splitsde import __version__

    parser = argparse.ArgumentParser(
        prog="splitsde",
        description="Splitting integrators for SDEs: sample, verify, compare, demo, digits.",
    )
    parser.add_argument("--version", action="version", version=f"splitsde {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"splitsde.cli.{name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from splitsde.compose.word import WordError
    from splitsde.symbolic.parse import ExpressionError

    try:
        return int(args.func(args) or 0)
    except (CLIError, WordError, ExpressionError) as exc:
        print(f"splitsde {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
