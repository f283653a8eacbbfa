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

__all__ = ["SECTIONS", "certificates", "diffusion", "double_well", "run_demo"]


def double_well(out: Path, quick: bool = False, seed: int = 0) -> dict[str, Any]:
    """BAOAB on the 1-D double well: sampled vs exact Boltzmann statistics and a histogram."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from splitsde.base.stats import walker_batch_means
    from splitsde.langevin import potentials, underdamped
    from splitsde.runtime.integrate import integrate
    from splitsde.runtime.observers import Observer, Running

    pot = potentials.DoubleWell()
    kT, gamma, h = 1.0, 1.0, 0.1
    walkers, steps, burn = (200, 400, 100) if quick else (4000, 4000, 500)
    system = underdamped(pot, gamma=gamma, kT=kT)
    integ = system.integrator("BAOAB")
    y0 = system.initial_state(walkers, generator=torch.Generator().manual_seed(seed + 1))
    hist_edges = np.linspace(-2.5, 2.5, 101)
    counts = np.zeros(len(hist_edges) - 1)

    class Histogram(Observer):
        name = "histogram"

        def on_step(self, step: int, t: float, state: dict) -> None:
            if step + 1 > burn and (step + 1) % 5 == 0:
                counts[:] += np.histogram(state["q"].cpu().numpy().ravel(), bins=hist_edges)[0]

    obs = [Running(lambda t, s: s["q"], "q", burn_in=burn), Histogram()]
    res = integrate(integ, y0, h=h, steps=burn + steps, seed=seed, observers=obs)
    st = walker_batch_means(res.finals["q"]["mean"], res.finals["q"]["mean_sq"])
    exact = pot.moments(kT)
    mean, mse = float(st["mean"].ravel()[0]), float(st["mean_se"].ravel()[0])
    var, vse = float(st["var"].ravel()[0]), float(st["var_se"].ravel()[0])
    msq, msq_se = float(st["mean_sq"].ravel()[0]), float(st["mean_sq_se"].ravel()[0])
    print(
        f"BAOAB on the double well U = (q^2 - 1)^2, kT = {kT}, gamma = {gamma}, h = {h}, "
        f"{walkers} walkers x {steps} steps, NFE/step = {res.nfe_per_step:g}"
    )
    print(f"  {'':8}{'sampled':>12}{'± se':>10}{'exact':>12}")
    print(f"  {'<q>':8}{mean:12.5f}{mse:10.5f}{float(exact['mean']):12.5f}")
    exact_q2 = float(exact["var"] + exact["mean"] ** 2)
    print(f"  {'<q^2>':8}{msq:12.5f}{msq_se:10.5f}{exact_q2:12.5f}")
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
    return {
        "mean": mean,
        "mean_se": mse,
        "var": var,
        "var_se": vse,
        "l1_density_error": l1,
        "figure": str(path),
    }


def certificates(out: Path, quick: bool = False, h: float = 0.25) -> dict[str, Any]:
    """Exact certificates of BAOAB, ABOBA, OBABO and OBA on the harmonic oscillator: weak
    order, stationary biases (formulas in h), measured NFE, stability bound, and a figure of
    the stationary biases against h."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    from splitsde.analysis.certify import certificate

    words = ["BAOAB", "ABOBA", "OBABO", "OBA"]
    omega, gamma, kT = 1.0, 1.0, 1.0
    certs = {
        w: certificate(
            w, "harmonic", h=h, omega=omega, gamma=gamma, kT=kT, ladder_steps=3 if quick else 5
        )
        for w in words
    }
    print(
        f"Exact certificates on the harmonic oscillator (omega = {omega:g}, gamma = {gamma:g}, "
        f"kT = {kT:g}, M = 1) at h = {h:g}"
    )
    print(
        f"  {'word':7}{'order':>6}{'NFE':>5}{'<q^2> bias':>13}{'<p^2> bias':>13}{'stable h <':>12}"
    )
    for w, c in certs.items():
        rb = c.relative_bias or {}
        bound = f"{c.stability_bound:.4g}" if c.stability_bound else "-"
        print(
            f"  {w:7}{c.weak_order!s:>6}{c.nfe_per_step:>5g}{rb.get('q2', float('nan')):>+13.2e}"
            f"{rb.get('p2', float('nan')):>+13.2e}{bound:>12}"
        )
    print("  leading stationary biases (exact series in h):")
    for w, c in certs.items():
        terms = "; ".join(
            f"<{k[0]}^2>: {v}" if k != "qp" else f"<qp>: {v}"
            for k, v in c.bias_leading_terms.items()
        )
        print(f"    {w:6} {terms}")
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for w, c in certs.items():
        hs = np.asarray(c.stationary_ladder["hs"])
        for ax, key in zip(axes, ("q2", "p2")):
            v = np.abs(np.asarray(c.stationary_ladder[key]))
            if np.all(v < 1e-13):
                ax.plot([], [], label=f"{w}: exact")
            else:
                ax.loglog(hs, np.where(v > 0, v, np.nan), "o-", ms=3, label=w)
    for ax, key in zip(axes, ("<q^2>", "<p^2>")):
        ax.set_xlabel("h")
        ax.set_ylabel(f"|relative bias of {key}|")
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.legend(fontsize=8)
    fig.suptitle("Stationary bias of splitting schemes on the harmonic oscillator (exact)")
    fig.tight_layout()
    path = out / "certificates_stationary_bias.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    print(f"  figure: {path}")
    return {w: c.to_json() for w, c in certs.items()} | {"figure": str(path)}


def diffusion(out: Path, quick: bool = False, seed: int = 0) -> dict[str, Any]:
    """Diffusion samplers on a 2-D Gaussian mixture (see :mod:`splitsde.diffusion.demo`):
    EM and SPS under PSLD, then EM, DDIM and DEIS under VP."""
    from splitsde.diffusion.demo import exponential_demo, mixture_demo

    result = mixture_demo(out, quick=quick, seed=seed)
    print()
    result["exponential"] = exponential_demo(out, quick=quick, seed=seed)
    return result


#: Sections of the tour, in order.
SECTIONS: dict[str, Callable[..., dict[str, Any]]] = {
    "double-well": double_well,
    "certificates": certificates,
    "diffusion": diffusion,
}


def run_demo(
    out: str | Path = "splitsde-demo", quick: bool = False, only: list[str] | None = None
) -> dict[str, Any]:
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
