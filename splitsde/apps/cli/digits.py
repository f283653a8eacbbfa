"""``splitsde digits``: diffusion samplers on scikit-learn's 8x8 digits (real data)."""

from __future__ import annotations

import argparse

from splitsde.apps.cli.common import CLIError


def register(sub: argparse._SubParsersAction) -> None:
    from splitsde.apps.examples.digits import add_arguments

    p = sub.add_parser(
        "digits",
        help="train small VP and PSLD score networks on 8x8 digits and compare samplers",
        description="Train (or load from the cache) small epsilon-prediction networks for VP and "
        "PSLD on scikit-learn's 8x8 digits, then compare samplers across NFE budgets by the "
        "Fréchet distance in the feature space of a digit classifier trained in the same run, "
        "against the real-vs-real floor. Prints a table, writes digits.json and PNG grids of "
        "samples into --out. Needs scikit-learn.",
    )
    add_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from splitsde.apps.examples.digits import run_from_args

    try:
        return run_from_args(args)
    except (ValueError, ImportError) as err:
        raise CLIError(str(err)) from None
