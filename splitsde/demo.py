"""The guided tour behind ``splitsde demo`` (and ``make demo``).

Each section prints a table and may write figures into the output folder. ``quick=True``
shrinks every section to a few seconds (used by the test suite).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["SECTIONS", "diffusion", "double_well", "run_demo"]


def double_well(out: Path, quick: bool = False, seed: int = 0) -> dict[str, Any]:
    """BAOAB on the 1-D double well: sampled vs exact Boltzmann statistics and a histogram."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    import splitsde as sd
    from splitsde.stats import walker_batch_means

    pot = sd.potentials.DoubleWell()
    kT, gamma, h = 1.0, 1.0, 0.1
    walkers, steps, burn = (200, 400, 100) if quick else (4000, 4000, 500)
    system = sd.langevin.underdamped(pot, gamma=gamma, kT=kT)
    integ = system.integrator("BAOAB")
    y0 = system.initial_state(walkers, generator=torch.Generator().manual_seed(seed + 1))
    hist_edges = np.linspace(-2.5, 2.5, 101)
    counts = np.zeros(len(hist_edges) - 1)

    class Histogram(sd.Observer):
        name = "histogram"

        def on_step(self, step: int, t: float, state: dict) -> None:
            if step + 1 > burn and (step + 1) % 5 == 0:
                counts[:] += np.histogram(state["q"].cpu().numpy().ravel(), bins=hist_edges)[0]

    obs = [sd.Running(lambda s: s["q"], "q", burn_in=burn), Histogram()]
    res = sd.integrate(integ, y0, h=h, steps=burn + steps, seed=seed, observers=obs)
    st = walker_batch_means(res.finals["q"]["mean"], res.finals["q"]["mean_sq"])
    exact = pot.moments(kT)
    mean, mse = float(st["mean"].ravel()[0]), float(st["mean_se"].ravel()[0])
    var, vse = float(st["var"].ravel()[0]), float(st["var_se"].ravel()[0])
    print(f"BAOAB on the double well U = (q^2 - 1)^2, kT = {kT}, gamma = {gamma}, h = {h}, "
          f"{walkers} walkers x {steps} steps, NFE/step = {res.nfe_per_step:g}")
    print(f"  {'':8}{'sampled':>12}{'± se':>10}{'exact':>12}")
    print(f"  {'<q>':8}{mean:12.5f}{mse:10.5f}{float(exact['mean']):12.5f}")
    print(f"  {'<q^2>':8}{var + mean**2:12.5f}{vse:10.5f}{float(exact['var'] + exact['mean']**2):12.5f}")
    centers = 0.5 * (hist_edges[1:] + hist_edges[:-1])
    width = hist_edges[1] - hist_edges[0]
    density = counts / (counts.sum() * width)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.bar(centers, density, width=width, alpha=0.5, label="BAOAB samples")
    xs = np.linspace(-2.5, 2.5, 400)
    ax.plot(xs, pot.density(xs, kT), "k-", lw=1.5, label="Boltzmann density")
    ax.set_xlabel("q")
    ax.set_ylabel("density")
    ax.set_title(f"Double well, BAOAB, h = {h}")
    ax.legend()
    fig.tight_layout()
    path = out / "double_well_histogram.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    print(f"  histogram: {path}")
    l1 = float(np.sum(np.abs(density - pot.density(centers, kT))) * width)
    return {"mean": mean, "mean_se": mse, "var": var, "var_se": vse, "l1_density_error": l1,
            "figure": str(path)}


def diffusion(out: Path, quick: bool = False, seed: int = 0) -> dict[str, Any]:
    """Diffusion samplers on a 2-D Gaussian mixture (see :mod:`splitsde.diffusion.demo`)."""
    from splitsde.diffusion.demo import mixture_demo

    return mixture_demo(out, quick=quick, seed=seed)


#: Sections of the tour, in order.
SECTIONS: dict[str, Callable[..., dict[str, Any]]] = {
    "double-well": double_well,
    "diffusion": diffusion,
}


def run_demo(out: str | Path = "splitsde-demo", quick: bool = False, only: list[str] | None = None) -> dict[str, Any]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    results = {}
    for name, section in SECTIONS.items():
        if only and name not in only:
            continue
        print(f"\n== {name} ==")
        results[name] = section(out, quick=quick)
    print(f"\nfigures written to {out.resolve()}")
    return results
