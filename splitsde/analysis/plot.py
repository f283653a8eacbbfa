r"""Figures of weak-order fits and certificates.

* :func:`plot_fit` -- the biases of a Monte Carlo ladder against :math:`h` (log--log, with
  error bars), the fitted curve :math:`C h^p\,[+ D h^{p+1}]` and its confidence band (the
  envelope of the curves refitted at every order of the profile interval,
  :func:`~splitsde.analysis.fit.model_band`), unstable steps and steps left out of the
  asymptotic subset marked, and the verdict in the title;
* :func:`plot_certificate` -- the exact weak-error ladder and stationary biases of a linear
  certificate, or the Monte Carlo fit of a nonlinear one.

:func:`ensure_writable` checks an output path *before* a long computation, so a typo in a
directory name does not cost the run.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from splitsde.analysis.fit import model_band
from splitsde.base.errors import SplitsdeError

__all__ = ["PlotError", "ensure_writable", "plot_certificate", "plot_fit"]

_FORMATS = {".png", ".pdf", ".svg", ".jpg", ".jpeg", ".eps", ".ps", ".tif", ".tiff", ".webp"}


class PlotError(SplitsdeError, ValueError):
    """A figure cannot be written where asked."""


def ensure_writable(path: str | os.PathLike) -> Path:
    """Check that a figure can be written at ``path`` (an image suffix, an existing writable
    directory, not a directory itself); raises :class:`PlotError` with the reason."""
    p = Path(path)
    if p.suffix.lower() not in _FORMATS:
        raise PlotError(
            f"cannot write a figure to {str(p)!r}: use one of the suffixes "
            + ", ".join(sorted(_FORMATS))
        )
    if p.is_dir():
        raise PlotError(f"cannot write a figure to {str(p)!r}: it is a directory")
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise PlotError(f"cannot write a figure to {str(p)!r}: no directory {str(parent)!r}")
    if not os.access(parent, os.W_OK) or (p.exists() and not os.access(p, os.W_OK)):
        raise PlotError(f"cannot write a figure to {str(p)!r}: permission denied")
    return p


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_fit(result: Any, path: str | os.PathLike | None = None, ax: Any = None) -> Any:
    """Plot a :class:`~splitsde.analysis.montecarlo.WeakOrderResult` (see the module
    docstring) into ``ax`` (a new figure when ``None``); save it to ``path`` if given.
    Returns the axes."""
    plt = _pyplot()
    own = ax is None
    if own:
        fig, ax = plt.subplots(figsize=(6.0, 4.2))
    fit = result.fit
    pts = [p for p in result.points if p.estimate is not None]
    hs = np.array([p.h for p in pts])
    ref = fit.reference if fit is not None else np.nan
    bias = np.array([p.estimate.value for p in pts]) - ref
    se_by_h = dict(zip(result.fit_hs.tolist(), result.bias_se.tolist()))
    err = np.array([se_by_h.get(p.h, p.estimate.se) for p in pts])
    used = set(fit.hs) if fit is not None else set()
    for sign, filled, label in ((1, True, "bias > 0"), (-1, False, "bias < 0")):
        for kind in ("in", "out"):
            sel = np.array(
                [
                    (np.sign(b) == sign or (b == 0 and sign == 1))
                    and ((p.h in used) == (kind == "in"))
                    for b, p in zip(bias, pts)
                ],
                dtype=bool,
            )
            if not sel.any():
                continue
            ax.errorbar(
                hs[sel],
                np.abs(bias[sel]),
                yerr=2 * err[sel],
                fmt="o" if kind == "in" else "s",
                mfc="C0" if filled and kind == "in" else "white",
                mec="C0" if kind == "in" else "0.5",
                ecolor="C0" if kind == "in" else "0.5",
                capsize=3,
                label=f"{label}" + ("" if kind == "in" else ", left out"),
            )
    fine = [(p.h, abs(b)) for p, b in zip(pts, bias) if p.status == "reference"]
    if fine:
        ax.plot(*zip(*fine), "D", ms=9, mfc="none", mec="C1", label="fine-step reference run")
    if fit is not None and len(fit.hs) >= 2:
        grid = np.geomspace(min(fit.hs), max(fit.hs), 60)
        values = [p.estimate.value for p in pts if p.h in set(result.fit_hs.tolist())]
        curve, lo, hi = model_band(fit, result.fit_hs, values, result.cov, grid)
        ax.plot(grid, np.abs(curve), "k-", lw=1.2, label=f"fit {fit.model}, p = {fit.order:.2f}")
        low = np.minimum(np.abs(lo), np.abs(hi))
        high = np.maximum(np.abs(lo), np.abs(hi))
        cross = np.sign(lo) != np.sign(hi)
        low = np.where(cross, np.nan, low)
        ax.fill_between(
            grid,
            np.where(np.isnan(low), np.nanmin(np.abs(bias[bias != 0])) / 10, low),
            high,
            color="0.6",
            alpha=0.3,
            label=f"{100 * fit.level:.0f}% band (order in [{fit.interval[0]:.2f}, "
            f"{fit.interval[1]:.2f}])",
        )
    for p in result.unstable:
        ax.axvline(p.h, color="C3", ls=":", lw=1)
        ax.text(
            p.h,
            0.98,
            " unstable",
            color="C3",
            rotation=90,
            va="top",
            ha="right",
            transform=ax.get_xaxis_transform(),
            fontsize=8,
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("h")
    what = (
        f"{result.observable} at T = {result.T:g}"
        if result.mode == "final"
        else f"stationary {result.observable}"
    )
    ax.set_ylabel(f"|bias of {what}| (error bars: 2 se)")
    v = result.verdict
    title = f"certified weak order {v.order}" if v.certified else "NOT CERTIFIED"
    ax.set_title(f"{title}; reference: {result.reference_kind}", fontsize=10)
    ax.legend(fontsize=7)
    if own:
        fig.tight_layout()
        if path is not None:
            fig.savefig(path, dpi=120)
            plt.close(fig)
    return ax


def plot_certificate(cert: Any, path: str | os.PathLike) -> str:
    """A certificate's figure: the Monte Carlo fit of a nonlinear certificate, or the exact
    finite-time error ladder (and stationary biases) of a linear one."""
    plt = _pyplot()
    from matplotlib.ticker import NullFormatter

    if not cert.linear and cert.monte_carlo is not None:
        plot_fit(cert.monte_carlo, path)
        return str(path)
    panels = 2 if cert.stationary_ladder.get("hs") else 1
    fig, axes = plt.subplots(1, panels, figsize=(5.2 * panels, 3.8), squeeze=False)
    ax = axes[0, 0]
    hs = np.asarray(cert.ladder["hs"])
    err = np.asarray(cert.ladder["errors"])
    ax.loglog(hs, err, "o-", label="exact weak error at T")
    if cert.weak_order:
        ref = err[-1] * (hs / hs[-1]) ** cert.weak_order
        ax.loglog(hs, ref, "k--", lw=1, label=f"slope {cert.weak_order}")
    ax.set_xlabel("h")
    ax.set_ylabel("max |error| of mean and second moments")
    ax.set_title(f"{cert.word}: finite time T = {cert.ladder['T']:.3g}")
    ax.legend()
    if panels == 2:
        ax = axes[0, 1]
        shs = np.asarray(cert.stationary_ladder["hs"])
        for k, v in cert.stationary_ladder.items():
            if k == "hs":
                continue
            v = np.abs(np.asarray(v))
            name = {"q2": "q^2", "p2": "p^2"}.get(k, k)
            if np.all(v < 1e-13):
                ax.plot([], [], label=f"<{name}>: exact")
                continue
            ax.loglog(shs, np.where(v > 0, v, np.nan), "o-", label=f"<{name}>")
        ax.set_xlabel("h")
        ax.set_ylabel("|relative stationary bias|")
        ax.set_title(f"{cert.word}: stationary moments")
        ax.legend()
    for a in axes.ravel():
        a.xaxis.set_minor_formatter(NullFormatter())
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return str(path)
