"""Run by ``torchrun`` from ``test_distributed.py`` on every rank of a gloo group: one Monte
Carlo ladder through the Python API, twice, then ``splitsde verify ... --monte-carlo`` through
the command line's entry point; each rank writes what it got to ``OUTDIR/rank<r>.json`` (and
what the command printed to ``OUTDIR/rank<r>.out``)."""

from __future__ import annotations

import contextlib
import json
import sys

import torch

from splitsde import problems
from splitsde.analysis import estimate_weak_order, init_world
from splitsde.apps.cli import main as cli_main

WALKERS = 10_000
VERIFY = ["verify", "OBA", "--system", "double-well", "--walkers", "4000", "--json"]
VERIFY += ["--hs", "0.05,0.1,0.2", "--T", "1"]
HS = (0.025, 0.05, 0.1, 0.2)


def ladder(world):
    prob = problems.ou(theta=2.0, mu=0.0, sigma=1.5)
    y0 = {"x": torch.full((WALKERS,), 2.0, dtype=torch.float64)}
    return estimate_weak_order(
        prob.integrator("BO"),
        HS,
        y0,
        lambda s: s["x"] ** 2,
        mode="final",
        T=1.0,
        seed=11,
        reference="fine",
        world=world,
    )


def main(outdir: str) -> None:
    world = init_world()
    first, second = ladder(world), ladder(world)
    values = [p.estimate.value for p in first.points]
    out = {
        "rank": world.rank,
        "size": world.size,
        "walkers": first.walkers,
        "hs": [p.h for p in first.points],
        "values": values,
        "cov": first.cov.tolist(),
        "reproducible": values == [p.estimate.value for p in second.points]
        and first.cov.tolist() == second.cov.tolist(),
        "certified_order": first.certified_order,
    }
    with open(f"{outdir}/rank{world.rank}.out", "w") as f, contextlib.redirect_stdout(f):
        out["exit"] = cli_main(VERIFY)
    with open(f"{outdir}/rank{world.rank}.json", "w") as f:
        json.dump(out, f)


if __name__ == "__main__":
    main(sys.argv[1])
