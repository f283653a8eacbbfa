"""Monte Carlo over torch.distributed: 2 gloo processes on CPU, launched by torchrun.

Walkers are sharded with independent streams per rank and the float64 moment sums are
all-reduced: every rank gets the same result, a rerun gives it bit for bit, and it agrees in
distribution with the single-process result (same walkers, different streams) and with the
exact law of the scheme.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from splitsde import problems
from splitsde.analysis import World, propagate, rank_seed

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))
import distributed_worker as worker  # noqa: E402


def _torchrun(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    return subprocess.run(
        [*cmd, *args], capture_output=True, text=True, env=env, timeout=timeout, cwd=ROOT
    )


def test_rank_seeds_and_shards():
    seeds = {rank_seed(11, r) for r in range(64)}
    assert len(seeds) == 64 and all(0 <= s < 2**63 for s in seeds)
    assert rank_seed(11, 0) == rank_seed(11, 0) != rank_seed(12, 0)
    shards = [World(r, 3).shard(10) for r in range(3)]
    assert [(s.start, s.stop) for s in shards] == [(0, 3), (3, 6), (6, 10)]


@pytest.mark.xdist_group("torchrun")
def test_two_gloo_processes_agree_with_one_process_and_the_exact_law(tmp_path):
    """The Python API and ``splitsde verify`` (what ``torchrun --nproc-per-node 2 -m splitsde
    verify ...`` runs on every rank) in one torchrun launch of two gloo processes."""
    proc = _torchrun(str(HERE / "distributed_worker.py"), str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-2000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert all(r["size"] == 2 and r["walkers"] == worker.WALKERS for r in ranks)
    assert all(r["reproducible"] for r in ranks)  # a rerun is bit for bit the same
    assert ranks[0]["values"] == ranks[1]["values"] and ranks[0]["cov"] == ranks[1]["cov"]
    two = ranks[0]
    one = worker.ladder(World())  # this process alone: same walkers, other streams
    assert one.walkers == worker.WALKERS
    assert [p.h for p in one.points] == two["hs"]
    v1 = np.array([p.estimate.value for p in one.points])
    v2 = np.array(two["values"])
    assert not np.array_equal(v1, v2)  # independent streams per rank
    se = np.sqrt(np.diag(one.cov) + np.diag(two["cov"]))
    assert np.all(np.abs(v1 - v2) < 4 * se)  # identical in distribution
    # and both against the exact law of the scheme (Lie splitting of OU, affine analysis)
    integ = problems.ou(theta=2.0, mu=0.0, sigma=1.5).integrator("BO")
    for h, v, var in zip(two["hs"], v2, np.diag(two["cov"])):
        m, S = propagate(integ, h * np.arange(round(1.0 / h) + 1), 2.0, 0.0)
        assert abs(v - (S[0, 0] + m[0] ** 2)) < 4 * math.sqrt(var)
    assert two["certified_order"] == one.certified_order == 1
    # the command line under torchrun: only rank 0 prints, one JSON object
    cert = json.loads((tmp_path / "rank0.out").read_text())
    assert (tmp_path / "rank1.out").read_text() == ""
    mc = cert["monte_carlo"]
    assert mc["world_size"] == 2 and mc["walkers"] == 4000
    assert ranks[0]["exit"] == ranks[1]["exit"] == (0 if cert["certified"] else 1)
