"""Benchmark of the exact analysis.

* symbolic certificates (``splitsde.analysis.certificate``) of words of up to 7 letters on the
  harmonic oscillator -- target < 5 s each;
* numeric exact analysis of a random stable linear SDE of dimension 50: probing the one-step
  map, the law after 100 steps and the stationary covariance -- target < 0.5 s.

Prints a table and writes ``benchmarks/results/analysis.json``.

    python benchmarks/analysis.py            # full set
    python benchmarks/analysis.py --quick    # a few words, dimension 20
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from splitsde import problems
from splitsde.analysis import affine_step, certificate, stationary

WORDS = [
    "BAOAB",
    "ABOBA",
    "OBABO",
    "OABAO",
    "BAOA",
    "OBA",
    "BABOBAB",
    "AOBOBOA",
    "OBABOBA",
    "B A[1/3] O A[2/3] B",
    "O B A B O A B",
]
QUICK_WORDS = ["BAOAB", "OBA", "BABOBAB"]


def bench_certificates(words: list[str]) -> list[dict]:
    rows = []
    for w in words:
        t0 = time.perf_counter()
        cert = certificate(w, "harmonic", h=0.1)
        dt = time.perf_counter() - t0
        rows.append(
            {
                "word": w,
                "letters": len(cert.substeps),
                "seconds": dt,
                "weak_order": cert.weak_order,
                "q2_bias": cert.bias_leading_terms.get("q2"),
            }
        )
    return rows


def bench_numeric(dim: int, steps: int = 100, repeats: int = 3) -> dict:
    t0 = time.perf_counter()
    prob = problems.random_linear(dim, 0)
    integ = prob.integrator("BAOAB")
    integ.coefficient_table  # noqa: B018 - build the lowering inputs outside the timing
    build = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        amap = affine_step(integ, 0.0, 0.05)
        amap.propagate(np.ones(dim), np.eye(dim), steps)
        _, scov = stationary(amap)
        times.append(time.perf_counter() - t0)
    _, ex = prob.stationary_exact()
    return {
        "dim": dim,
        "steps": steps,
        "build_seconds": build,
        "seconds": min(times),
        "seconds_all": times,
        "stationary_max_rel_bias": float(
            np.abs((scov - ex) / np.sqrt(np.outer(np.diag(ex), np.diag(ex)))).max()
        ),
    }


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "analysis.json"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    words = QUICK_WORDS if args.quick else WORDS
    certs = bench_certificates(words)
    numeric = bench_numeric(20 if args.quick else 50)
    print("symbolic certificates on the harmonic oscillator (target < 5 s each)")
    print(f"  {'word':22}{'letters':>8}{'order':>7}{'seconds':>9}  <q^2> bias")
    for r in certs:
        print(
            f"  {r['word']:22}{r['letters']:>8}{r['weak_order']!s:>7}{r['seconds']:>9.2f}"
            f"  {r['q2_bias']}"
        )
    print(
        f"numeric exact analysis, random linear SDE of dimension {numeric['dim']} "
        "(target < 0.5 s at dimension 50)"
    )
    print(
        f"  one-step map + {numeric['steps']}-step law + stationary covariance: "
        f"{numeric['seconds']:.3f} s (integrator build {numeric['build_seconds']:.2f} s)"
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "machine": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "quick": args.quick,
        "certificates": certs,
        "numeric": numeric,
        "max_certificate_seconds": max(r["seconds"] for r in certs),
    }
    out.write_text(json.dumps(payload, indent=2))
    print(f"results: {out}")


if __name__ == "__main__":
    main()
