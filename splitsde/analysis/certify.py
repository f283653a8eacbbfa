r"""A certificate for a splitting word on a built-in linear system.

:func:`certificate` gathers, for one word on the harmonic oscillator (underdamped or
overdamped) or a random stable linear SDE:

* the **finite-time weak order** for quadratic observables, exact: from the symbolic series of
  the modified generator (:func:`~splitsde.analysis.symbolic.finite_time_order`) for the
  harmonic systems, from exact weak errors over a step ladder (log--log slopes, no Monte
  Carlo) for the linear systems -- next to the order the integrator declares;
* the scheme's **stationary second moments** at the given step, exact (discrete Lyapunov
  equation), as formulas in :math:`h` for the harmonic systems, with the SDE's exact values,
  the relative bias and its leading term in :math:`h`;
* the **number of field evaluations per step**, measured by a short run of
  :func:`splitsde.integrate`;
* the **stability bound**: the smallest step at which the spectral radius of the one-step
  map reaches one (scanned and bisected at the given parameters).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import sympy
import torch

from splitsde.analysis.affine import UnstableError, affine_step, stationary
from splitsde.analysis.continuous import second_moments, weak_error_ladder
from splitsde.analysis.symbolic import (
    finite_time_order,
    leading_term,
    stationary_moments,
    symbolic_step,
)
from splitsde.compose.reduce import Reduction
from splitsde.probe import stability_bound
from splitsde.symbolic.numeric import NUMPY_FUNCTIONS
from splitsde.symbolic.symbols import h as H

__all__ = ["SYSTEMS", "Certificate", "certificate", "stability_bound"]

#: Built-in systems of :func:`certificate` and ``splitsde verify``.
SYSTEMS = ("harmonic", "overdamped-harmonic", "linear")

_MOMENT_NAMES = {"q2": (0, 0), "p2": (1, 1), "qp": (0, 1)}


@dataclass
class Certificate:
    """What :func:`certificate` found; :meth:`to_json` and :meth:`format` present it."""

    word: str
    system: str
    params: dict[str, float]
    h: float
    substeps: list[str]
    declared_weak_order: int | None
    weak_order: int | None
    weak_order_exact: bool
    weak_order_method: str
    nfe_per_step: float
    stationary: dict[str, Any] | None
    stationary_exact: dict[str, Any]
    relative_bias: dict[str, Any] | None
    stationary_formulas: dict[str, str] = field(default_factory=dict)
    bias_leading_terms: dict[str, str] = field(default_factory=dict)
    bias_orders: dict[str, int | None] = field(default_factory=dict)
    spectral_radius: float = float("nan")
    stability_bound: float | None = None
    stability_note: str = ""
    ladder: dict[str, list[float]] = field(default_factory=dict)
    stationary_ladder: dict[str, list[float]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dictionary (numbers, strings, lists; ``null`` for "not available")."""
        return {
            "word": self.word,
            "system": self.system,
            "params": self.params,
            "h": self.h,
            "substeps": self.substeps,
            "weak_order": self.weak_order,
            "weak_order_exact": self.weak_order_exact,
            "weak_order_method": self.weak_order_method,
            "declared_weak_order": self.declared_weak_order,
            "nfe_per_step": self.nfe_per_step,
            "stationary": self.stationary,
            "stationary_exact": self.stationary_exact,
            "relative_bias": self.relative_bias,
            "stationary_formulas": self.stationary_formulas,
            "bias_leading_terms": self.bias_leading_terms,
            "bias_orders": self.bias_orders,
            "spectral_radius": _finite(self.spectral_radius),
            "stability_bound": self.stability_bound,
            "stability_note": self.stability_note,
            "ladder": self.ladder,
            "stationary_ladder": self.stationary_ladder,
            "notes": self.notes,
            "seconds": round(self.seconds, 3),
        }

    def format(self) -> str:
        """The certificate as readable text."""
        ps = ", ".join(f"{k}={v:g}" for k, v in self.params.items())
        lines = [f"certificate: {self.word} on the {self.system} ({ps}), h = {self.h:g}"]
        lines.append("  sub-steps: " + "; ".join(self.substeps))
        lines.append(f"  field evaluations per step (measured): {self.nfe_per_step:g}")
        order = "exact (the split reproduces the SDE)" if self.weak_order_exact else self.weak_order
        declared = "exact" if self.declared_weak_order is None else self.declared_weak_order
        lines.append(
            f"  finite-time weak order (quadratic observables): {order}  [{self.weak_order_method};"
            f" declared: {declared}]"
        )
        if self.ladder:
            slopes = ", ".join(f"{s:.3f}" for s in self.ladder["slopes"])
            lines.append(
                f"    exact weak-error slopes over h = {self.ladder['hs'][0]:g} .. "
                f"{self.ladder['hs'][-1]:g} (T = {self.ladder['T']:g}): {slopes}"
            )
        if self.stationary is None:
            lines.append(f"  stationary law: none at this h ({self.stability_note})")
        else:
            lines.append("  stationary second moments (exact law of the scheme at this h):")
            for key in self.stationary:
                if key in ("mean", "cov"):
                    continue
                val, ex, rel = (
                    self.stationary[key],
                    self.stationary_exact[key],
                    self.relative_bias[key],
                )
                formula = self.stationary_formulas.get(key)
                lead = self.bias_leading_terms.get(key)
                txt = (
                    f"    <{_pretty(key)}> = {val:.8g}   exact {ex:.8g}   relative bias {rel:+.3e}"
                )
                lines.append(txt)
                if formula is not None:
                    lines.append(f"        = {formula}")
                if lead is not None:
                    lines.append(f"        bias ~ {lead}")
            if "cov" in self.stationary:
                cov = np.asarray(self.stationary["cov"])
                ex = np.asarray(self.stationary_exact["cov"])
                rb = np.asarray(self.relative_bias["cov"])
                lines.append(
                    f"    covariance ({cov.shape[0]}x{cov.shape[0]}): max |relative bias| = "
                    f"{np.abs(rb).max():.3e}; diagonal scheme/exact: "
                    + ", ".join(f"{a:.5g}/{b:.5g}" for a, b in zip(np.diag(cov), np.diag(ex)))
                )
        if self.stability_bound is not None:
            lines.append(
                f"  stability: stable for h < {self.stability_bound:.6g} (spectral radius "
                f"{self.spectral_radius:.6g} at h = {self.h:g})"
            )
        else:
            lines.append(
                f"  stability: {self.stability_note} (spectral radius "
                f"{self.spectral_radius:.6g} at h = {self.h:g})"
            )
        lines.extend(f"  note: {n}" for n in self.notes)
        return "\n".join(lines)


def _pretty(key: str) -> str:
    return {"q2": "q^2", "p2": "p^2", "qp": "qp"}.get(key, key)


def _finite(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def _measured_nfe(integ: Any, walkers: int = 2) -> float:
    state = {b: torch.zeros(walkers, dtype=torch.float64) for b in integ.blocks}
    from splitsde.integrate import integrate

    res = integrate(integ, state, h=1e-3, steps=4, seed=0, progress=False)
    return float(res.nfe_per_step)


def _lambdified_phi(step: Any, values: dict[str, float]) -> Callable[[float], np.ndarray]:
    rep = {p: sympy.Float(values[p.name], 17) for p in step.parameters if p.name in values}
    Phi = step.Phi.xreplace(rep)
    fn = sympy.lambdify([H], Phi, modules=[NUMPY_FUNCTIONS, "numpy"])
    return lambda x: np.asarray(fn(x), dtype=np.float64)


def certificate(
    word: str,
    system: str = "harmonic",
    *,
    h: float = 0.1,
    omega: float = 1.0,
    gamma: float = 1.0,
    kT: float = 1.0,
    mass: float = 1.0,
    dim: int = 4,
    seed: int = 0,
    reuse: str = "exact",
    ladder_steps: int = 5,
) -> Certificate:
    """Certify ``word`` on a built-in system (see the module docstring)."""
    from splitsde import problems

    started = time.perf_counter()
    if system not in SYSTEMS:
        raise ValueError(f"unknown system {system!r}; choose one of {', '.join(SYSTEMS)}")
    if not (h > 0 and math.isfinite(h)):
        raise ValueError(f"h must be positive and finite, got {h}")
    if system == "harmonic":
        prob = problems.harmonic(omega, gamma, kT, mass)
        params = {"omega": omega, "gamma": gamma, "kT": kT, "M": mass}
        name = "underdamped harmonic oscillator"
    elif system == "overdamped-harmonic":
        prob = problems.overdamped_harmonic(omega, kT)
        params = {"omega": omega, "kT": kT}
        name = "overdamped harmonic oscillator"
    else:
        prob = problems.random_linear(dim, seed)
        params = {"dim": dim, "seed": seed}
        name = f"random stable linear SDE (dim {dim}, seed {seed})"
    integ = prob.integrator(word, reduction=Reduction(reuse))
    substeps = [
        f"{s.occurrence.letter}[{s.occurrence.weight}] {s.solver.method}"
        + ("" if s.solver.exact else f" (weak order {s.solver.weak_order})")
        for s in integ.program.substeps
    ]
    # time scale of the problem: ladder, scan range
    rate = float(np.max(np.abs(np.linalg.eigvals(prob.A))))
    scale = 1.0 / rate
    T = 2.0 * scale
    hs = [T / 2**k for k in range(3, 3 + ladder_steps)]
    D = prob.dim
    ladder_res = weak_error_ladder(integ, T, hs, np.ones(D), 0.5 * np.eye(D), sde=prob.linear_sde)
    ladder = {
        "T": T,
        "hs": ladder_res.hs.tolist(),
        "errors": ladder_res.errors.tolist(),
        "slopes": ladder_res.slopes.tolist(),
    }
    notes: list[str] = []
    amap = affine_step(integ, 0.0, h)
    rho = amap.spectral_radius

    if system == "linear":
        method = "exact weak errors over a step ladder (log-log slope, no Monte Carlo)"
        order = ladder_res.order
        exact_split = bool(np.max(ladder_res.errors) < 1e-12)
        if order is None and not exact_split:
            notes.append("the ladder slopes are not close to an integer: order not certified")
        formulas: dict[str, str] = {}
        leads: dict[str, str] = {}
        orders: dict[str, int | None] = {}
        phi_of_h = lambda x: affine_step(integ, 0.0, x).Phi  # noqa: E731
        points = 80
        exact_values: dict[str, Any] = {}
        try:
            _, cov_ex = prob.stationary_exact()
            exact_values = {"mean": np.zeros(D).tolist(), "cov": cov_ex.tolist()}
            m, S = stationary(amap)
            sec, sec_ex = second_moments(m, S), cov_ex
            scale_m = np.sqrt(np.outer(np.diag(sec_ex), np.diag(sec_ex)))
            stat: dict[str, Any] | None = {"mean": m.tolist(), "cov": S.tolist()}
            rel: dict[str, Any] | None = {
                "cov": ((sec - sec_ex) / scale_m).tolist(),
                "max": float(np.abs((sec - sec_ex) / scale_m).max()),
            }
        except UnstableError as err:
            stat, rel = None, None
            notes.append(str(err))
        stat_ladder: dict[str, list[float]] = {}
    else:
        sym = symbolic_step(integ)
        fto = finite_time_order(sym, prob.sde, values=prob.params)
        method = "exact series of the modified generator at these parameters"
        order = fto.order
        exact_split = fto.order is None
        if not fto.consistent:
            notes.append(
                "the word is inconsistent with the SDE (modified generator at h = 0 "
                "differs from the SDE's)"
            )
        _, cov_f = stationary_moments(sym)
        ex_f = prob.stationary_formulas()
        keys = [k for k in _MOMENT_NAMES if k in ex_f]
        values = {**prob.params, "h": h}
        rep = {
            s: sympy.Float(values[s.name], 17) for s in cov_f.free_symbols | {H} if s.name in values
        }
        formulas, leads, orders = {}, {}, {}
        exact_values = {}
        for k in keys:
            i, j = _MOMENT_NAMES[k]
            formulas[k] = sympy.sstr(cov_f[i, j])
            lt = leading_term(cov_f[i, j] - ex_f[k])
            leads[k] = str(lt)
            orders[k] = lt.order
            exact_values[k] = float(ex_f[k].xreplace(rep))
        phi_of_h = _lambdified_phi(sym, prob.params)
        points = 240
        stat, rel = None, None
        if rho < 1.0 - 1e-12:
            _, S_num = stationary(amap)
            stat, rel = {}, {}
            for k in keys:
                i, j = _MOMENT_NAMES[k]
                v = float(cov_f[i, j].xreplace(rep).evalf(17))
                # relative to the scale of the covariance (an off-diagonal entry may be 0) and
                # to the conditioning of the discrete Lyapunov equation, about 1 / (1 - rho)
                scale = max(1.0, abs(v), math.sqrt(abs(S_num[i, i] * S_num[j, j])))
                if abs(v - S_num[i, j]) > max(1e-9, 1e-14 / (1.0 - rho)) * scale:
                    raise RuntimeError(  # pragma: no cover - guarded by the tests
                        f"symbolic and probed stationary {k} disagree: {v} vs {S_num[i, j]}"
                    )
                stat[k] = v
                denom = (
                    exact_values[k]
                    if k != "qp"
                    else math.sqrt(exact_values["q2"] * exact_values["p2"])
                )
                rel[k] = (v - exact_values[k]) / denom
        else:
            notes.append(f"no stationary law at h = {h:g}: spectral radius {rho:.6g} >= 1")
        # stationary bias over a ladder of steps (for the plot)
        stat_ladder = {"hs": [], **{k: [] for k in keys}}
        fns = {
            k: sympy.lambdify(
                [H],
                cov_f[_MOMENT_NAMES[k]].xreplace({s: v for s, v in rep.items() if s != H}),
                modules=[NUMPY_FUNCTIONS, "numpy"],
            )
            for k in keys
        }
        for x in np.geomspace(scale / 50, scale, 12):
            if np.max(np.abs(np.linalg.eigvals(phi_of_h(x)))) >= 1 - 1e-12:
                continue
            stat_ladder["hs"].append(float(x))
            for k in keys:
                denom = (
                    exact_values[k]
                    if k != "qp"
                    else math.sqrt(exact_values["q2"] * exact_values["p2"])
                )
                stat_ladder[k].append(float((fns[k](x) - exact_values[k]) / denom))

    bound = stability_bound(phi_of_h, scale * 1e-3, scale * 200.0, points=points)
    if bound is None:
        note = f"stable for every scanned h up to {scale * 200:.4g}"
    elif bound <= scale * 1e-3 * 1.0000001:
        bound, note = None, "no stationary law even for small h (the scheme is not dissipative)"
    else:
        note = ""
    return Certificate(
        word=str(integ.word),
        system=name,
        params=params,
        h=float(h),
        substeps=substeps,
        declared_weak_order=integ.weak_order,
        weak_order=order,
        weak_order_exact=exact_split,
        weak_order_method=method,
        nfe_per_step=_measured_nfe(integ),
        stationary=stat,
        stationary_exact=exact_values,
        relative_bias=rel,
        stationary_formulas=formulas,
        bias_leading_terms=leads,
        bias_orders=orders,
        spectral_radius=rho,
        stability_bound=bound,
        stability_note=note,
        ladder=ladder,
        stationary_ladder=stat_ladder,
        notes=notes,
        seconds=time.perf_counter() - started,
    )


def plot_certificate(cert: Certificate, path: str) -> str:
    """Weak error against h: the exact finite-time error ladder and the stationary biases."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
            if np.all(v < 1e-13):
                ax.plot([], [], label=f"<{_pretty(k)}>: exact")
                continue
            ax.loglog(shs, np.where(v > 0, v, np.nan), "o-", label=f"<{_pretty(k)}>")
        ax.set_xlabel("h")
        ax.set_ylabel("|relative stationary bias|")
        ax.set_title(f"{cert.word}: stationary moments")
        ax.legend()
    from matplotlib.ticker import NullFormatter

    for a in axes.ravel():
        a.xaxis.set_minor_formatter(NullFormatter())
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
