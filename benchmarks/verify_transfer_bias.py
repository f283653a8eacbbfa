"""Stationary bias tables of splitting words in one dimension, without Monte Carlo.

For the quartic potential ``q^4/4`` and the double well ``(q^2 - 1)^2`` (Langevin dynamics,
gamma = kT = M = 1), the invariant law of each word's Markov chain is computed on a (q, p)
grid by :func:`splitsde.analysis.transfer.langevin_invariant_law` (Fourier shears for A and
B, the Gaussian kernel for O, power iteration). The table gives the stationary bias of
``<q^2>`` against the Boltzmann value (adaptive quadrature) on a ladder of steps, its
:math:`h^1` coefficient (Richardson extrapolation on the three smallest steps), and the local
order (log-log slope of the two smallest steps) of ``<q^2>``, ``<p^2>`` and ``<q p>``.

    python benchmarks/verify_transfer_bias.py            # the tables (a few minutes, 1 core)
    python benchmarks/verify_transfer_bias.py --markdown # for docs/verify.md
    python benchmarks/verify_transfer_bias.py --quick    # two words, three steps (seconds)

Writes ``benchmarks/results/verify_transfer_bias.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
from pathlib import Path

import numpy as np
import scipy.integrate

from splitsde.analysis.transfer import langevin_invariant_law

WORDS = ("BAOAB", "OBABO", "ABOBA", "OBA", "BAO", "ABO")
HS = (0.2, 0.1, 0.05, 0.025, 0.0125, 0.00625)
CASES = {
    # name: (energy, force, box)
    "quartic": (lambda q: q**4 / 4, lambda q: -(q**3), (-3.6, 3.6)),
    "double well": (lambda q: (q * q - 1) ** 2, lambda q: -4 * q * (q * q - 1), (-2.6, 2.6)),
}
OBS = {"q2": lambda q, p: q * q, "p2": lambda q, p: p * p, "qp": lambda q, p: q * p}


def boltzmann_q2(energy) -> float:
    def w(q: float) -> float:
        return math.exp(-energy(q))

    z = scipy.integrate.quad(w, -np.inf, np.inf, epsabs=0, epsrel=1e-13)[0]
    m = scipy.integrate.quad(lambda q: q * q * w(q), -np.inf, np.inf, epsabs=0, epsrel=1e-13)
    return m[0] / z


def run(case: str, hs=HS, words=WORDS) -> list[dict]:
    energy, force, box = CASES[case]
    exact = {"q2": boltzmann_q2(energy), "p2": 1.0, "qp": 0.0}
    rows = []
    for w in words:
        t0 = time.perf_counter()
        bias = {k: [] for k in OBS}
        for h in hs:
            law = langevin_invariant_law(w, force, h, box, energy=energy, q_points=64)
            for k, f in OBS.items():
                bias[k].append(law.average(f) - exact[k])
        order = {}
        for k, b in bias.items():
            # the slope of the two smallest steps whose bias is above the grid's accuracy
            # (~1e-13); None: below 1e-11 at every step but the largest (exact to that level)
            i = max((j for j in range(len(hs)) if abs(b[j]) > 1e-11), default=0)
            order[k] = (
                math.log(abs(b[i - 1] / b[i])) / math.log(hs[i - 1] / hs[i]) if i > 0 else None
            )
        # the h^1 coefficient of <q2> by Richardson extrapolation on the three smallest steps
        # (b = c1 h + c2 h^2 + c3 h^3 at h, 2h, 4h)
        b4, b2, b1 = bias["q2"][-3:]
        c1 = (32 * b1 - 12 * b2 + b4) / (12 * hs[-1])
        rows.append(
            {
                "problem": case,
                "q2_h1_coefficient": c1,
                "word": w,
                "reference_q2": exact["q2"],
                "hs": list(hs),
                "bias": bias,
                "local_order": order,
                "seconds": time.perf_counter() - t0,
            }
        )
        print(f"  {case} {w}: local orders {order}", flush=True)
    return rows


def _order(v: float | None) -> str:
    return "bias < 1e-11" if v is None else f"{v:.2f}"


def table(rows: list[dict], markdown: bool) -> str:
    out = []
    for case in dict.fromkeys(r["problem"] for r in rows):
        sub = [r for r in rows if r["problem"] == case]
        hs = sub[0]["hs"]
        head = f"{case}: bias of <q2> (quadrature {sub[0]['reference_q2']:.8g})"
        # backquotes in markdown: <q2> would be read as an HTML tag
        o = [f"`<{k}>`" if markdown else f"<{k}>" for k in ("q2", "p2", "qp")]
        cols = [f"h = {h:g}" for h in hs]
        cols += [f"h^1 coeff. {o[0]}", *(f"order {x}" for x in o)]
        if markdown:
            out.append(f"**{case}: bias of `<q2>`** (quadrature {sub[0]['reference_q2']:.8g})\n")
            out.append("| word | " + " | ".join(cols) + " |")
            out.append("|---" * (len(cols) + 1) + "|")
        else:
            out.append(head)
            out.append("  " + "  ".join(["word".ljust(6), *(c.rjust(11) for c in cols)]))
        for r in sub:
            cells = [f"{b:+.3e}" for b in r["bias"]["q2"]] + [f"{r['q2_h1_coefficient']:+.4f}"]
            cells += [_order(r["local_order"][k]) for k in ("q2", "p2", "qp")]
            if markdown:
                out.append(f"| {r['word']} | " + " | ".join(cells) + " |")
            else:
                out.append("  " + "  ".join([r["word"].ljust(6), *(c.rjust(11) for c in cells)]))
        out.append("")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--markdown", action="store_true")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument(
        "--out", default=str(Path(__file__).parent / "results" / "verify_transfer_bias.json")
    )
    args = ap.parse_args()
    started = time.perf_counter()
    if args.quick:
        rows = run("double well", hs=(0.2, 0.1, 0.05), words=("BAOAB", "OBA"))
    else:
        rows = [r for case in CASES for r in run(case)]
    print(table(rows, args.markdown))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "rows": rows,
                "seconds": time.perf_counter() - started,
                "machine": platform.platform(),
                "command": "python benchmarks/verify_transfer_bias.py"
                + (" --quick" if args.quick else ""),
            },
            indent=2,
        )
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
