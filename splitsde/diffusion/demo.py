"""The ``diffusion`` section of ``splitsde demo``: samplers on a 2-D Gaussian mixture."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

__all__ = ["DEMO_SAMPLERS", "EXPONENTIAL_DEMO_SAMPLERS", "exponential_demo", "mixture_demo"]

#: Samplers shown by the demo (other instances append theirs).
DEMO_SAMPLERS: list[str] = ["em", "sps"]
#: Exponential integrators shown on VP (they need the exponential clock of a one-block process).
EXPONENTIAL_DEMO_SAMPLERS: list[str] = ["em", "ddim", "deis-tab3"]


def mixture_demo(out: Path, quick: bool = False, seed: int = 0) -> dict[str, Any]:
    """EM and SPS with the exact score of an 8-mode ring under PSLD (CIFAR-10 configuration):
    sliced Wasserstein distance to fresh data at small NFE, and a scatter plot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    import splitsde.diffusion as dm

    proc = dm.process("psld-cifar10")
    ring = dm.GaussianMixture.ring(8)
    nfes, n = ([10, 20], 400) if quick else ([10, 20, 50, 100], 4000)
    comp = dm.compare(
        proc, ring, DEMO_SAMPLERS, nfes, n=n, seed=seed, progress=False, batches=5 if quick else 10
    )
    print(comp.table())
    show = nfes[1]
    fig, axes = plt.subplots(
        1,
        len(DEMO_SAMPLERS) + 1,
        figsize=(3.2 * (len(DEMO_SAMPLERS) + 1), 3.2),
        sharex=True,
        sharey=True,
    )
    data = ring.sample(n, generator=torch.Generator().manual_seed(seed))
    axes[0].scatter(data[:, 0], data[:, 1], s=2, alpha=0.4)
    axes[0].set_title("data", fontsize=9)
    for ax, name in zip(axes[1:], DEMO_SAMPLERS):
        res = dm.sample(
            name, proc, ring.score(proc), n, shape=2, nfe=show, seed=seed, dtype=torch.float64
        )
        x = res.x
        keep = x.abs().max(dim=1).values < 4
        ax.scatter(x[keep, 0], x[keep, 1], s=2, alpha=0.4, color="C1")
        ax.set_title(f"{name}, NFE {res.nfe}", fontsize=9)
    for ax in axes:
        ax.set_xlim(-3, 3)
        ax.set_ylim(-3, 3)
        ax.set_aspect("equal")
    fig.suptitle("PSLD (CIFAR-10 configuration), exact score of an 8-mode ring", fontsize=9)
    fig.tight_layout()
    path = out / "diffusion_mixture.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    print(f"  samples: {path}")
    return {"rows": comp.rows, "figure": str(path)}


def exponential_demo(out: Path, quick: bool = False, seed: int = 0) -> dict[str, Any]:
    """EM, DDIM and DEIS tAB3 with the exact score of the 8-mode ring under VP (quadratic
    grid) at small NFE: sliced Wasserstein distance, mode-weight error and a scatter plot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    import splitsde.diffusion as dm

    proc = dm.process("vp")
    ring = dm.GaussianMixture.ring(8)
    nfes, n = ([5, 10], 400) if quick else ([5, 10, 20], 4000)
    names = EXPONENTIAL_DEMO_SAMPLERS
    comp = dm.compare(
        proc,
        ring,
        names,
        nfes,
        n=n,
        seed=seed,
        progress=False,
        grid="quadratic",
        batches=5 if quick else 10,
    )
    print(comp.table())
    print("  mode-weight error:")
    for name in names:
        cells = [
            "diverged" if r.get("diverged") else f"{r['mode_weight']:.3f}"
            for r in comp.rows
            if r["sampler"] == name and ("mode_weight" in r or r.get("diverged"))
        ]
        print(f"    {name:12} " + "  ".join(cells))
    fig, axes = plt.subplots(
        1, len(names), figsize=(3.2 * len(names), 3.2), sharex=True, sharey=True
    )
    for ax, name in zip(axes, names):
        res = dm.sample(
            name,
            proc,
            ring.score(proc),
            n,
            shape=2,
            nfe=nfes[0],
            grid="quadratic",
            seed=seed,
            dtype=torch.float64,
        )
        x = res.x
        keep = x.abs().max(dim=1).values < 4
        ax.scatter(x[keep, 0], x[keep, 1], s=2, alpha=0.4, color="C2")
        ax.set_title(f"{name}, NFE {res.nfe}", fontsize=9)
        ax.set_xlim(-3, 3)
        ax.set_ylim(-3, 3)
        ax.set_aspect("equal")
    fig.suptitle("VP, exact score of an 8-mode ring, quadratic grid", fontsize=9)
    fig.tight_layout()
    path = out / "diffusion_exponential.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    print(f"  samples: {path}")
    return {"rows": comp.rows, "figure": str(path)}
