"""``splitsde demo``: a short tour printing tables and writing figures."""

from __future__ import annotations

import argparse

from splitsde.apps.cli.common import writable_dir


def register(sub: argparse._SubParsersAction) -> None:
    from splitsde.apps.demo import SECTIONS

    p = sub.add_parser(
        "demo",
        help="a short guided tour (tables and PNG figures)",
        description="Run the tour: " + ", ".join(SECTIONS) + ".",
    )
    p.add_argument(
        "--out", type=writable_dir, default="splitsde-demo", help="output folder for figures"
    )
    p.add_argument("--quick", action="store_true", help="tiny sizes (seconds)")
    p.add_argument("--only", nargs="*", choices=sorted(SECTIONS), help="run only these sections")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from splitsde.apps.demo import run_demo

    run_demo(args.out, quick=args.quick, only=args.only)
    return 0
