"""The ``splitsde`` command line: one sub-command per module, each with ``register``.

Errors are reported in one line, ``splitsde <command>: error: <message>``, with an exit status
that says what went wrong (:data:`EXIT_STATUS`); only a genuine bug shows a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from splitsde.base.errors import SplitsdeError

__all__ = ["EXIT_STATUS", "CLIError", "exit_status", "main"]

#: Sub-command modules under :mod:`splitsde.apps.cli`; each defines ``register(subparsers)``.
COMMANDS = ["sample", "demo", "verify", "compare", "digits"]

#: Exit status of the ``splitsde`` command, by outcome.
EXIT_STATUS = {
    "success": 0,
    "the run failed (diverged, a field raised, out of memory, a file read/write failed)": 1,
    "bad input, refused before computing (options, words, expressions, output paths)": 2,
    "interrupted (Ctrl-C)": 130,
}

EPILOG = "exit status:\n" + "\n".join(f"  {v:<4} {k}" for k, v in EXIT_STATUS.items()) + (
    "\n  a traceback (status 1) is a bug in splitsde: please report it"
)



def _runtime_errors() -> tuple[type[BaseException], ...]:
    """Library errors raised while a run computes (exit status 1); every other SplitsdeError
    is input refused before the computation (exit status 2)."""
    from splitsde.runtime.checkpoint import CheckpointError
    from splitsde.runtime.integrator import FieldError, NonFiniteError

    return (NonFiniteError, FieldError, CheckpointError)


class _Formatter(argparse.HelpFormatter):
    """Wraps descriptions as usual but keeps the exit-status table as written."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if text.startswith("exit status:"):
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)


class CLIError(SplitsdeError):
    """A user error: printed without a traceback, exit status 2."""


def _out_of_memory(exc: BaseException) -> bool:
    if isinstance(exc, MemoryError):
        return True
    import torch

    oom = getattr(torch, "OutOfMemoryError", ())
    if oom and isinstance(exc, oom):
        return True
    # torch's CPU allocator raises a plain RuntimeError
    return isinstance(exc, RuntimeError) and "can't allocate memory" in str(exc)


def exit_status(exc: BaseException) -> int | None:
    """The exit status for ``exc``, or ``None`` for an unexpected error (a bug)."""
    if isinstance(exc, KeyboardInterrupt):
        return 130
    if isinstance(exc, SplitsdeError):
        return 1 if isinstance(exc, _runtime_errors()) else 2
    if isinstance(exc, OSError) or _out_of_memory(exc):
        return 1
    return None


def _message(exc: BaseException) -> str:
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted"
    if _out_of_memory(exc):
        detail = str(exc).split("DefaultCPUAllocator: ")[-1].split(". Error code")[0]
        return (
            f"out of memory ({detail or type(exc).__name__}); use fewer walkers or samples, "
            "or a smaller dimension"
        )
    if isinstance(exc, OSError) and exc.filename is not None:
        return f"{exc.strerror or exc}: {exc.filename}"
    return str(exc) or type(exc).__name__


def build_parser() -> argparse.ArgumentParser:
    from splitsde._version import __version__

    parser = argparse.ArgumentParser(
        prog="splitsde",
        description="Splitting integrators for SDEs: sample, verify, compare, demo, digits.",
        epilog=EPILOG,
        formatter_class=_Formatter,
    )
    parser.add_argument("--version", action="version", version=f"splitsde {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"splitsde.apps.cli.{name}").register(sub)
    for p in sub.choices.values():
        if p.epilog is None:
            p.epilog = EPILOG
            p.formatter_class = _Formatter
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (Exception, KeyboardInterrupt) as exc:
        status = exit_status(exc)
        if status is None:
            raise  # a bug: keep the traceback
        print(f"splitsde {args.command}: error: {_message(exc)}", file=sys.stderr)
        return status


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
