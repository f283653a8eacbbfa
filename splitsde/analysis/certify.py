r"""A certificate for a splitting word: on a built-in system or on any user SDE.

:func:`certificate` takes a word on a built-in system (``certificate("BAOAB", "harmonic")``),
or any integrator (``certificate(integrator)``), or a tuple ``(sde, word)``,
``(sde, word, params)``, ``(sde, word, params, fields)`` or ``(system, word)`` -- any user SDE
with bound fields, force-group words (``B0``, ``B1``) and user letters. It gathers:

* the **finite-time weak order** for quadratic observables, next to the order the
  integrator declares. Linear problems: exact, from the symbolic series of the modified
  generator (:func:`~splitsde.analysis.symbolic.finite_time_order`; the harmonic systems, and
  user SDEs of at most :data:`SYMBOLIC_MAX_BLOCKS` blocks whose fields carry definitions)
  or from exact weak errors over a step ladder (log--log slopes, no Monte Carlo). Nonlinear
  problems: Monte Carlo (:func:`~splitsde.analysis.montecarlo.estimate_weak_order`, with its
  goodness-of-fit verdict) against a fine-step or quadrature reference;
* the scheme's **stationary second moments** at the given step, exact (discrete Lyapunov
  equation), as formulas in :math:`h` for the harmonic systems, with the SDE's exact values,
  the relative bias and its leading term in :math:`h`;
* the **number of field evaluations per step**, measured by a short run of
  :func:`splitsde.integrate`;
* the **stability bound**: the smallest step at which the spectral radius of the one-step
  map reaches one (:mod:`~splitsde.analysis.stability`).

The cost is stated before the expensive part (``say``): for a linear system the number of
lowerings of the step program and the size of the probe batch, with a time estimate after the
first one; a progress bar follows them (``progress``).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import sympy
import torch

from splitsde.analysis.affine import NotAffineError, UnstableError, affine_step, stationary
from splitsde.analysis.continuous import (
    LinearSDE,
    linear_sde,
    second_moments,
    weak_error_ladder,
)
from splitsde.analysis.fit import Verdict
from splitsde.analysis.montecarlo import MonteCarloOptions, WeakOrderResult
from splitsde.analysis.stability import (
    bisection_rounds,
    integrator_stability_bound,
    stability_bound,
)
from splitsde.analysis.symbolic import (
    SymbolicError,
    finite_time_order,
    leading_term,
    stationary_moments,
    symbolic_step,
)
from splitsde.base.errors import SplitsdeError
from splitsde.base.progress import progress_bar
from splitsde.compose.reduce import Reduction
from splitsde.symbolic.spellings import lambdify as _spell_lambdify
from splitsde.symbolic.symbols import h as H

__all__ = [
    "LINEAR_SYSTEMS",
    "NONLINEAR_SYSTEMS",
    "SYMBOLIC_MAX_BLOCKS",
    "SYSTEMS",
    "Certificate",
    "CertificateError",
    "certificate",
    "plot_certificate",
    "stability_bound",
]

#: Built-in linear systems (exact analysis).
LINEAR_SYSTEMS = ("harmonic", "overdamped-harmonic", "linear")
#: Built-in nonlinear systems (Monte Carlo against fine-step and quadrature references).
NONLINEAR_SYSTEMS = ("quartic", "double-well", "muller-brown")
#: Built-in systems of :func:`certificate` and ``splitsde verify``.
SYSTEMS = LINEAR_SYSTEMS + NONLINEAR_SYSTEMS
#: Largest number of scalar blocks for which a user SDE gets the exact series in h by default
#: (its moment system has :math:`1 + D + D(D+1)/2` unknowns).
SYMBOLIC_MAX_BLOCKS = 3

_MOMENT_NAMES = {"q2": (0, 0), "p2": (1, 1), "qp": (0, 1)}


class CertificateError(SplitsdeError, ValueError):
    """What :func:`certificate` was given cannot be certified."""


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
    linear: bool = True
    verdict: Verdict | None = None
    monte_carlo: WeakOrderResult | None = None
    cost: list[str] = field(default_factory=list)

    @property
    def certified(self) -> bool:
        return self.verdict is not None and self.verdict.certified

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dictionary (numbers, strings, lists; ``null`` for "not available")."""
        return {
            "word": self.word,
            "system": self.system,
            "params": self.params,
            "h": self.h,
            "substeps": self.substeps,
            "linear": self.linear,
            "weak_order": self.weak_order,
            "weak_order_exact": self.weak_order_exact,
            "weak_order_method": self.weak_order_method,
            "declared_weak_order": self.declared_weak_order,
            "certified": self.certified,
            "verdict": None if self.verdict is None else str(self.verdict),
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
            "monte_carlo": None if self.monte_carlo is None else self.monte_carlo.to_json(),
            "cost": self.cost,
            "notes": self.notes,
            "seconds": round(self.seconds, 3),
        }

    def format(self) -> str:
        """The certificate as readable text."""
        ps = ", ".join(f"{k}={v:g}" for k, v in self.params.items())
        lines = [
            f"certificate: {self.word} on the {self.system}"
            + (f" ({ps})" if ps else "")
            + (f", h = {self.h:g}" if self.linear else "")
        ]
        lines.append("  sub-steps: " + "; ".join(self.substeps))
        lines.append(f"  field evaluations per step (measured): {self.nfe_per_step:g}")
        order: Any = self.weak_order
        if self.weak_order_exact:
            order = "exact (the split reproduces the SDE)"
        elif order is None:
            order = "not certified"
        declared = "exact" if self.declared_weak_order is None else self.declared_weak_order
        lines.append(
            f"  finite-time weak order (quadratic observables): {order}  [{self.weak_order_method};"
            f" declared: {declared}]"
            if self.linear
            else f"  finite-time weak order: {order}  [{self.weak_order_method}; declared: "
            f"{declared}]"
        )
        if self.ladder:
            slopes = ", ".join(f"{s:.3f}" for s in self.ladder["slopes"])
            lines.append(
                f"    exact weak-error slopes over h = {self.ladder['hs'][0]:g} .. "
                f"{self.ladder['hs'][-1]:g} (T = {self.ladder['T']:g}): {slopes}"
            )
        if not self.linear:
            if self.stationary_exact:
                refs = ", ".join(f"<{k}> = {v:.8g}" for k, v in self.stationary_exact.items())
                lines.append(f"  Boltzmann averages (quadrature): {refs}")
        elif self.stationary is None:
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
                pairs = [f"{a:.5g}/{b:.5g}" for a, b in zip(np.diag(cov), np.diag(ex))]
                diag = ", ".join(pairs[:6]) + (
                    f", ... ({len(pairs)} in all)" if len(pairs) > 6 else ""
                )
                lines.append(
                    f"    covariance ({cov.shape[0]}x{cov.shape[0]}): max |relative bias| = "
                    f"{np.abs(rb).max():.3e}; diagonal scheme/exact: " + diag
                )
        if self.linear:
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
        if self.monte_carlo is not None:
            lines.extend("  " + ln for ln in self.monte_carlo.format(verdict=False).splitlines())
        lines.extend(f"  note: {n}" for n in self.notes)
        if self.verdict is not None:
            lines.append(f"verdict: {self.verdict}")
        return "\n".join(lines)


def _pretty(key: str) -> str:
    return {"q2": "q^2", "p2": "p^2", "qp": "qp"}.get(key, key)


def _finite(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def _measured_nfe(integ: Any, like: Mapping[str, torch.Tensor] | None = None) -> float:
    """Field evaluations per step, measured by a 4-step run of two walkers (shaped like the
    state ``like`` when given, else scalar blocks at zero)."""
    from splitsde.analysis.affine import layout_of
    from splitsde.runtime.integrate import integrate

    if like is not None:
        state = {k: v[:2].detach().clone() for k, v in like.items()}
    else:
        state = {
            lay.block: torch.zeros(2, *lay.shape, dtype=torch.float64) for lay in layout_of(integ)
        }
    res = integrate(integ, state, h=1e-3, steps=4, seed=0, progress=False)
    return float(res.nfe_per_step)


def _lambdified_phi(step: Any, values: dict[str, float]) -> Callable[[float], np.ndarray]:
    rep = {p: sympy.Float(values[p.name], 17) for p in step.parameters if p.name in values}
    Phi = step.Phi.xreplace(rep)
    fn = _spell_lambdify([H], Phi, "numpy")
    return lambda x: np.asarray(fn(x), dtype=np.float64)


def _substeps(integ: Any) -> list[str]:
    return [
        f"{s.occurrence.letter}[{s.occurrence.weight}] {s.solver.method}"
        + ("" if s.solver.exact else f" (weak order {s.solver.weak_order})")
        for s in integ.program.substeps
    ]


def _as_integrator(target: Any, reuse: str) -> tuple[Any, str]:
    """An integrator and a name for what :func:`certificate` was given."""
    from splitsde.runtime.integrator import Integrator
    from splitsde.runtime.system import System
    from splitsde.symbolic.sde import SDE

    reduction = Reduction(reuse)
    if isinstance(target, Integrator):
        return target, _sde_name(target.sde)
    if isinstance(target, tuple | list) and 2 <= len(target) <= 4:
        head, word, *rest = target
        if isinstance(head, System):
            if rest:
                raise CertificateError(
                    "give (system, word): a System already carries its parameters and fields"
                )
            return head.integrator(word, reduction=reduction), head.name or _sde_name(head.sde)
        if isinstance(head, SDE):
            params = rest[0] if rest else None
            fields = rest[1] if len(rest) > 1 else None
            integ = System(head, params, fields).integrator(word, reduction=reduction)
            return integ, _sde_name(head)
    raise CertificateError(
        "certificate() takes a word (on a built-in system), an Integrator, or a tuple "
        "(sde, word[, params[, fields]]) or (system, word); got "
        f"{type(target).__name__}"
    )


def _sde_name(sde: Any) -> str:
    blocks = ", ".join(b.name for b in sde.blocks)
    letters = " ".join(sde.flows)
    base = sde.name or "user SDE"
    return f"{base} (blocks {blocks}; letters {letters})"


#: Seconds of one core to build ``random_linear(dim)`` and compile a word for it, per dim^2
#: (the symbolic work grows like dim^2; measured 22 s at dim 200 on an idle CI machine, up to
#: four times more under load).
COMPILE_SECONDS_PER_DIM2 = 6e-4


class _TimedBar:
    """A progress bar over an estimated duration, for work without natural steps (symbolic
    compilation): a timer thread advances it with the elapsed time, held below its end until
    the work is done, so the user sees that the work goes on and about how long it takes."""

    def __init__(self, seconds: float, desc: str, progress: bool | None):
        self.total = max(1, round(seconds))
        self.bar = progress_bar(
            self.total,
            desc,
            progress,
            unit="s",
            bar_format="{desc}: {percentage:3.0f}%|{bar}| {elapsed} of about {total_fmt} s",
        )
        self.done = threading.Event()
        self.thread: threading.Thread | None = None

    def _tick(self) -> None:
        started = time.perf_counter()
        while not self.done.wait(0.5):
            self.bar.n = min(time.perf_counter() - started, 0.99 * self.total)
            self.bar.refresh()

    def __enter__(self) -> _TimedBar:
        if self.bar is not None:
            self.thread = threading.Thread(target=self._tick, daemon=True)
            self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        if self.thread is not None:
            self.thread.join()
        if self.bar is not None:
            self.bar.close()


class _Cost:
    """States the cost of the exact analysis up front and drives its progress bar."""

    def __init__(self, total: int, desc: str, progress: bool | None, say: Callable[[str], None]):
        self.total, self.done = total, 0
        self.say = say
        self.bar = progress_bar(total, desc, progress, unit="lowering")
        self.first: float | None = None
        self.started = time.perf_counter()

    def step(self, n: int = 1) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
        if self.first is None:
            self.first = (time.perf_counter() - self.started) / n
            left = self.total - self.done
            if left > 0 and self.first * left > 5.0:
                self.say(
                    f"  about {self.first:.2g} s per lowering of the step program: "
                    f"~{self.first * left:.0f} s more"
                )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def certificate(
    target: Any,
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
    monte_carlo: MonteCarloOptions | None = None,
    symbolic: bool | None = None,
    progress: bool | None = False,
    say: Callable[[str], None] | None = None,
) -> Certificate:
    """Certify a word on a built-in system, or any integrator / user SDE.

    Parameters
    ----------
    target:
        A word (with ``system``: one of :data:`SYSTEMS`), an
        :class:`~splitsde.runtime.integrator.Integrator`, or a tuple
        ``(sde, word[, params[, fields]])`` or ``(system, word)``.
    system, omega, gamma, kT, mass, dim, seed:
        The built-in system and its parameters (``dim``/``seed``: the random linear SDE).
    h:
        The step at which stationary moments and the spectral radius are reported.
    reuse:
        Field-evaluation reuse rule of the compiled word (words given as text).
    ladder_steps:
        Steps of the exact weak-error ladder.
    monte_carlo:
        :class:`~splitsde.analysis.montecarlo.MonteCarloOptions` of a Monte Carlo weak-order
        estimate: required for a nonlinear user SDE, optional for linear ones (where it runs
        next to the exact analysis); built-in nonlinear systems have defaults.
    symbolic:
        Use the exact series in :math:`h` for a linear user SDE (``None``: when it has at
        most :data:`SYMBOLIC_MAX_BLOCKS` blocks and its fields carry definitions).
    progress, say:
        A progress bar (``None``: on a terminal) and a function receiving the statements of
        cost (default: silent).
    """
    from splitsde import problems

    started = time.perf_counter()
    say = say or (lambda _msg: None)
    if not (h > 0 and math.isfinite(h)):
        raise CertificateError(f"h must be positive and finite, got {h}")
    if isinstance(target, str):
        if system not in SYSTEMS:
            raise CertificateError(f"unknown system {system!r}; choose one of {', '.join(SYSTEMS)}")
        if system in ("harmonic", "overdamped-harmonic"):
            cert, integ = _harmonic_certificate(
                target, system, h, omega, gamma, kT, mass, reuse, ladder_steps
            )
        elif system == "linear":
            estimate = COMPILE_SECONDS_PER_DIM2 * dim**2
            if estimate > 5.0:
                say(
                    f"cost: building the random stable linear SDE (dim {dim}) and compiling "
                    f"{target} is symbolic work that grows like dim^2 (roughly {estimate:.0f} s "
                    "of one core before the analysis starts)"
                )
            with _TimedBar(estimate, f"compiling {target}", progress if estimate > 5.0 else False):
                prob = problems.random_linear(dim, seed)
                integ = prob.integrator(target, reduction=Reduction(reuse))
            cert = _linear_certificate(
                integ,
                prob.linear_sde,
                "random stable linear SDE",
                {"dim": dim, "seed": seed},
                h,
                ladder_steps,
                symbolic=bool(symbolic),
                progress=progress,
                say=say,
            )
        else:
            prob, name, params = _nonlinear_problem(system, gamma, kT, mass)
            integ = prob.integrator(target, reduction=Reduction(reuse))
            options = monte_carlo or default_monte_carlo(prob, system)
            cert = _nonlinear_certificate(integ, name, params, options, progress, say)
            cert.stationary_exact = {
                k: v for k, v in prob.stationary_moments_exact().items() if k != "p2"
            }
        if monte_carlo is not None and cert.linear:
            _attach_monte_carlo(cert, integ, monte_carlo, progress=progress)
    else:
        integ, name = _as_integrator(target, reuse)
        try:
            ref = linear_sde(integ)
            ref.coefficients(0.0)  # probes the drift: raises for a nonlinear SDE
        except NotAffineError as err:
            if monte_carlo is None:
                raise CertificateError(
                    f"{name} is not linear ({err}); its weak order needs a Monte Carlo estimate: "
                    "pass monte_carlo=MonteCarloOptions(...) (splitsde verify: --monte-carlo)"
                ) from None
            cert = _nonlinear_certificate(integ, name, {}, monte_carlo, progress, say)
        else:
            cert = _linear_certificate(
                integ, ref, name, {}, h, ladder_steps, symbolic, progress, say
            )
            if monte_carlo is not None:
                _attach_monte_carlo(cert, integ, monte_carlo, progress=progress)
    cert.seconds = time.perf_counter() - started
    return cert


def _attach_monte_carlo(
    cert: Certificate, integ: Any, options: MonteCarloOptions, progress: bool | None = False
) -> None:
    """Run a Monte Carlo estimate next to the exact analysis (a cross-check)."""
    res = options.run(integ, progress=progress)
    cert.monte_carlo = res
    cert.notes.append(
        "Monte Carlo next to the exact analysis: "
        + (
            f"certified {res.verdict.order}"
            if res.verdict.certified
            else "not certified (" + res.verdict.reason + ")"
        )
    )


def _exact_verdict(order: int | None, exact_split: bool, method: str) -> Verdict:
    if exact_split:
        return Verdict(True, None, "exact: the split reproduces the SDE's moments at every h")
    if order is None:
        return Verdict(
            False,
            None,
            "the exact weak-error slopes have not settled to an integer",
            ("more ladder steps (smaller h): ladder_steps=",),
        )
    return Verdict(True, order, method)


# ---------------------------------------------------------------------------------------------
# The harmonic systems: exact formulas in h
# ---------------------------------------------------------------------------------------------
def _harmonic_certificate(
    word: str,
    system: str,
    h: float,
    omega: float,
    gamma: float,
    kT: float,
    mass: float,
    reuse: str,
    ladder_steps: int,
) -> tuple[Certificate, Any]:
    prob, params, name = _harmonic_problem(system, omega, gamma, kT, mass)
    integ = prob.integrator(word, reduction=Reduction(reuse))
    scale = 1.0 / float(np.max(np.abs(np.linalg.eigvals(prob.A))))
    ladder, _ = _ladder(integ, prob.linear_sde, prob.dim, scale, ladder_steps)
    notes: list[str] = []
    amap = affine_step(integ, 0.0, h)
    sym = symbolic_step(integ)
    order, exact_split, method = _harmonic_order(sym, prob, notes)
    moments = _HarmonicMoments(sym, prob, h)
    stat, rel = moments.stationary(amap, notes)
    # the stationary ladder and the stability scan are sized by the time scale 1 / rate (a
    # covariance scale would miss the bound of a stiff oscillator, omega >> 1)
    phi_of_h = _lambdified_phi(sym, prob.params)
    stat_ladder = moments.ladder(phi_of_h, scale)
    # the scan spans the fastest and the slowest time scale of the exact dynamics: a stiff
    # oscillator (omega >> gamma) and an overdamped one (omega << gamma) both keep their bound
    rates = np.abs(np.linalg.eigvals(prob.A))
    lo, hi = 1e-3 * scale, 200.0 / float(np.min(rates[rates > 0], initial=1.0 / scale))
    bound, note = _bound(stability_bound(phi_of_h, lo, hi, 240), lo, hi)
    return _exact_certificate(
        integ,
        name,
        params,
        h,
        order,
        exact_split,
        method,
        nfe_per_step=_measured_nfe(integ),
        stationary=stat,
        stationary_exact=moments.exact_values,
        relative_bias=rel,
        stationary_formulas=moments.formulas,
        bias_leading_terms=moments.leads,
        bias_orders=moments.orders,
        spectral_radius=amap.spectral_radius,
        stability_bound=bound,
        stability_note=note,
        ladder=ladder,
        stationary_ladder=stat_ladder,
        notes=notes,
    ), integ


def _harmonic_problem(
    system: str, omega: float, gamma: float, kT: float, mass: float
) -> tuple[Any, dict[str, float], str]:
    """The problem, its parameters as reported and its name."""
    from splitsde import problems

    if system == "harmonic":
        prob = problems.harmonic(omega, gamma, kT, mass)
        params = {"omega": omega, "gamma": gamma, "kT": kT, "M": mass}
        return prob, params, "underdamped harmonic oscillator"
    prob = problems.overdamped_harmonic(omega, kT)
    return prob, {"omega": omega, "kT": kT}, "overdamped harmonic oscillator"


def _harmonic_order(sym: Any, prob: Any, notes: list[str]) -> tuple[int | None, bool, str]:
    """(order, exact split, method) from the exact series of the modified generator."""
    fto = finite_time_order(sym, prob.sde, values=prob.params)
    if not fto.consistent:
        notes.append(
            "the word is inconsistent with the SDE (modified generator at h = 0 differs from "
            "the SDE's)"
        )
    method = "exact series of the modified generator at these parameters"
    return fto.order, fto.order is None, method


class _HarmonicMoments:
    """The scheme's stationary second moments as formulas in :math:`h`, next to the SDE's
    exact ones: the formulas, the leading terms of their bias and its values."""

    def __init__(self, sym: Any, prob: Any, h: float):
        self.h = h
        _, self.cov_f = stationary_moments(sym)
        ex_f = prob.stationary_formulas()
        self.keys = [k for k in _MOMENT_NAMES if k in ex_f]
        values = {**prob.params, "h": h}
        self.rep = {
            s: sympy.Float(values[s.name], 17)
            for s in self.cov_f.free_symbols | {H}
            if s.name in values
        }
        self.formulas: dict[str, str] = {}
        self.leads: dict[str, str] = {}
        self.orders: dict[str, int | None] = {}
        self.exact_values: dict[str, Any] = {}
        for k in self.keys:
            i, j = _MOMENT_NAMES[k]
            self.formulas[k] = sympy.sstr(self.cov_f[i, j])
            lt = leading_term(self.cov_f[i, j] - ex_f[k])
            self.leads[k] = str(lt)
            self.orders[k] = lt.order
            self.exact_values[k] = float(ex_f[k].xreplace(self.rep))

    def denom(self, k: str) -> float:
        """The scale of the relative bias of moment ``k``."""
        if k != "qp":
            return self.exact_values[k]
        return math.sqrt(self.exact_values["q2"] * self.exact_values["p2"])

    def stationary(
        self, amap: Any, notes: list[str]
    ) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        """(moments at h, relative bias), the formulas checked against the probed map's
        discrete Lyapunov solution; Nones if unstable."""
        rho = amap.spectral_radius
        if not rho < 1.0 - 1e-12:
            notes.append(f"no stationary law at h = {self.h:g}: spectral radius {rho:.6g} >= 1")
            return None, None
        _, S_num = stationary(amap)
        stat, rel = {}, {}
        for k in self.keys:
            i, j = _MOMENT_NAMES[k]
            v = float(self.cov_f[i, j].xreplace(self.rep).evalf(17))
            # relative to the scale of the covariance (an off-diagonal entry may be 0) and
            # to the conditioning of the discrete Lyapunov equation, about 1 / (1 - rho)
            scale = max(1.0, abs(v), math.sqrt(abs(S_num[i, i] * S_num[j, j])))
            if abs(v - S_num[i, j]) > max(1e-9, 1e-14 / (1.0 - rho)) * scale:
                raise RuntimeError(  # pragma: no cover - guarded by the tests
                    f"symbolic and probed stationary {k} disagree: {v} vs {S_num[i, j]}"
                )
            stat[k] = v
            rel[k] = (v - self.exact_values[k]) / self.denom(k)
        return stat, rel

    def ladder(self, phi_of_h: Callable[[float], np.ndarray], scale: float) -> dict[str, list]:
        """The relative stationary bias over a ladder of stable steps (for the plot)."""
        stat_ladder: dict[str, list[float]] = {"hs": [], **{k: [] for k in self.keys}}
        fixed = {s: v for s, v in self.rep.items() if s != H}
        fns = {
            k: _spell_lambdify([H], self.cov_f[_MOMENT_NAMES[k]].xreplace(fixed), "numpy")
            for k in self.keys
        }
        for x in np.geomspace(scale / 50, scale, 12):
            if np.max(np.abs(np.linalg.eigvals(phi_of_h(x)))) >= 1 - 1e-12:
                continue
            stat_ladder["hs"].append(float(x))
            for k in self.keys:
                stat_ladder[k].append(float((fns[k](x) - self.exact_values[k]) / self.denom(k)))
        return stat_ladder


def _exact_certificate(
    integ: Any,
    name: str,
    params: dict[str, float],
    h: float,
    order: int | None,
    exact_split: bool,
    method: str,
    **found: Any,
) -> Certificate:
    """The certificate of an exact analysis: the integrator's word, substeps and declared
    order, the order found and its verdict, and what else was ``found``."""
    return Certificate(
        word=str(integ.word),
        system=name,
        params=params,
        h=float(h),
        substeps=_substeps(integ),
        declared_weak_order=integ.weak_order,
        weak_order=order,
        weak_order_exact=exact_split,
        weak_order_method=method,
        verdict=_exact_verdict(order, exact_split, method),
        **found,
    )


def _ladder(
    integ: Any, ref: LinearSDE, D: int, scale: float, ladder_steps: int, tick: Any = None
) -> tuple[dict[str, Any], Any]:
    """The exact weak-error ladder at T = 2 / rate (one lowering per step of the ladder)."""
    T = 2.0 * scale
    hs = [T / 2**k for k in range(3, 3 + ladder_steps)]
    obs = None
    if tick is not None:
        calls = [0]

        def obs(m: np.ndarray, S: np.ndarray) -> np.ndarray:
            if calls[0] > 0:  # the first call is the SDE's exact law, not a lowering
                tick()
            calls[0] += 1
            return np.concatenate([m, second_moments(m, S).ravel()])

    res = weak_error_ladder(integ, T, hs, np.ones(D), 0.5 * np.eye(D), sde=ref, observable=obs)
    ladder = {
        "T": T,
        "hs": res.hs.tolist(),
        "errors": res.errors.tolist(),
        "slopes": res.slopes.tolist(),
    }
    return ladder, res


def _bound(bound: float | None, lo: float, hi: float) -> tuple[float | None, str]:
    """The stability bound found by a scan over ``[lo, hi]`` and its note."""
    if bound is None:
        return None, f"stable for every scanned h up to {hi:.4g}"
    if bound <= lo * 1.0000001:
        return None, "no stationary law even for small h (the scheme is not dissipative)"
    return bound, ""


# ---------------------------------------------------------------------------------------------
# Any linear problem: exact numerics on the compiled step
# ---------------------------------------------------------------------------------------------
def _linear_certificate(
    integ: Any,
    ref: LinearSDE,
    name: str,
    params: dict[str, float],
    h: float,
    ladder_steps: int,
    symbolic: bool | None,
    progress: bool | None,
    say: Callable[[str], None],
) -> Certificate:
    plan = _LinearPlan(integ, ref, ladder_steps, symbolic)
    plan.state_cost(say)
    notes: list[str] = []
    cost = _Cost(plan.total, f"certificate {integ.word}", progress, say)
    try:
        ladder, lad = _ladder(integ, ref, plan.D, plan.scale, ladder_steps, tick=cost.step)
        amap = affine_step(integ, 0.0, h)
        cost.step()
        order, exact_split, method = _linear_order(integ, lad, plan, notes)
        exact_values, stat, rel = _linear_stationary(ref, amap, plan, notes)
        bound, note = _linear_bound(integ, plan, cost)
        nfe = _measured_nfe(integ)
        cost.step()
    finally:
        cost.close()
    return _exact_certificate(
        integ,
        name,
        params,
        h,
        order,
        exact_split,
        method,
        nfe_per_step=nfe,
        stationary=stat,
        stationary_exact=exact_values,
        relative_bias=rel,
        spectral_radius=amap.spectral_radius,
        stability_bound=bound,
        stability_note=note,
        ladder=ladder,
        notes=notes,
    )


class _LinearPlan:
    r"""The size of the exact analysis of a linear problem, decided before it runs: the
    dimension, the time scale :math:`1/\max|\lambda(A)|`, the number of lowerings of the
    step program, and whether the exact series in :math:`h` is attempted (``symbolic``) or
    required (``forced``)."""

    def __init__(self, integ: Any, ref: LinearSDE, ladder_steps: int, symbolic: bool | None):
        from splitsde.analysis.affine import layout_of

        self.ladder_steps = ladder_steps
        self.D = D = ref.dim
        self.n_moments = 1 + D + D * (D + 1) // 2
        layout = layout_of(integ)
        self.draws = sum(max(1, layout.entry(d.like.name).size) for d in integ.program.draws)
        A0, _, _ = ref.coefficients(0.0)
        rate = float(np.max(np.abs(np.linalg.eigvals(A0)))) or 1.0
        self.scale = 1.0 / rate
        self.autonomous = ref.autonomous
        self.rounds = (
            bisection_rounds(self.scale * 1e-3, self.scale * 200.0) if ref.autonomous else 0
        )
        self.total = ladder_steps + 1 + self.rounds + 1
        definitions = all(f.definition is not None for f in integ.program.fields)
        self.forced = bool(symbolic)
        if symbolic is None:
            symbolic = D <= SYMBOLIC_MAX_BLOCKS and definitions and ref.autonomous
        elif symbolic and not definitions:
            raise CertificateError(
                "the exact series in h needs fields with symbolic definitions; this SDE has "
                "fields given only as callables"
            )
        self.symbolic = symbolic

    def state_cost(self, say: Callable[[str], None]) -> None:
        """Say what the analysis will cost, before it runs."""
        D = self.D
        say(
            f"cost: exact analysis of a {D}-dimensional affine step (probe batch of "
            f"{1 + D + self.draws + 2} states), at most {self.total} lowerings of the step "
            f"program ({self.ladder_steps} for the weak-error ladder, 1 for the map at h, up to "
            f"{self.rounds} for the stability bound, 1 to measure the field evaluations)"
        )
        series_cost = f"moment system of {self.n_moments} unknowns"
        if self.symbolic:
            say(
                "      plus, where the coefficients have closed forms, the exact series in h of "
                f"the modified generator ({series_cost})"
            )
        else:
            say(
                f"      the exact series in h ({series_cost}) is not computed: the exact numeric "
                "weak-error ladder decides the order instead (symbolic=True / --symbolic forces "
                "the series)"
            )


def _linear_order(
    integ: Any, lad: Any, plan: _LinearPlan, notes: list[str]
) -> tuple[int | None, bool, str]:
    """(order, exact split, method): from the exact series in h when planned and available,
    else from the slopes of the exact weak-error ladder ``lad``."""
    exact_split = bool(np.max(lad.errors) < 1e-12)
    method = "exact weak errors over a step ladder (log-log slope, no Monte Carlo)"
    order = lad.order
    if plan.symbolic:
        try:
            fto = finite_time_order(symbolic_step(integ), integ.sde, values=_values(integ))
        except SymbolicError as err:
            if plan.forced:
                raise CertificateError(f"the exact series in h is not available: {err}") from None
            notes.append(
                "the exact series in h needs closed-form coefficients; this word has "
                "numerical ones (matrix exponentials), so the exact numeric ladder decides"
            )
        else:
            method = "exact series of the modified generator at these parameters"
            order, exact_split = fto.order, fto.order is None
            if not fto.consistent:
                notes.append("the word is inconsistent with the SDE")
    if order is None and not exact_split:
        notes.append("the ladder slopes are not close to an integer: order not certified")
    return order, exact_split, method


def _linear_stationary(
    ref: LinearSDE, amap: Any, plan: _LinearPlan, notes: list[str]
) -> tuple[dict[str, Any], dict[str, Any] | None, dict[str, Any] | None]:
    """(the SDE's stationary law, the scheme's, the relative bias of the second moments);
    what does not exist is empty or None, with a note."""
    exact_values: dict[str, Any] = {}
    stat: dict[str, Any] | None = None
    rel: dict[str, Any] | None = None
    if not plan.autonomous:
        notes.append("time-dependent coefficients: no stationary law or stability bound")
        return exact_values, stat, rel
    try:
        me, cov_ex = ref.stationary()
        exact_values = {"mean": me.tolist(), "cov": cov_ex.tolist()}
        m, S = stationary(amap)
        sec, sec_ex = second_moments(m, S), second_moments(me, cov_ex)
        scale_m = np.sqrt(np.outer(np.diag(sec_ex), np.diag(sec_ex)))
        stat = {"mean": m.tolist(), "cov": S.tolist()}
        rb = (sec - sec_ex) / scale_m
        rel = {"cov": rb.tolist(), "max": float(np.abs(rb).max())}
    except UnstableError as err:
        notes.append(str(err))
    except np.linalg.LinAlgError:
        notes.append("the SDE itself has no stationary law (its drift is not stable)")
    return exact_values, stat, rel


def _linear_bound(integ: Any, plan: _LinearPlan, cost: _Cost) -> tuple[float | None, str]:
    """The stability bound in h and its note (each bisection round ticks ``cost``)."""
    if not plan.autonomous:
        return None, "not applicable (time-dependent coefficients)"
    bound = integrator_stability_bound(
        integ, plan.scale * 1e-3, plan.scale * 200.0, progress=lambda n: cost.step()
    )
    return _bound(bound, plan.scale * 1e-3, plan.scale * 200.0)


def _values(integ: Any) -> dict[str, float]:
    out = {}
    for p, v in integ.params.items():
        if isinstance(v, torch.Tensor):
            if v.numel() != 1:
                continue
            v = float(v)
        out[p.name] = float(v)
    return out


# ---------------------------------------------------------------------------------------------
# Nonlinear problems: Monte Carlo
# ---------------------------------------------------------------------------------------------
def _nonlinear_problem(system: str, gamma: float, kT: float, mass: float) -> tuple[Any, str, dict]:
    from splitsde import problems

    params = {"gamma": gamma, "kT": kT, "M": mass}
    if system == "quartic":
        return problems.quartic(gamma=gamma, kT=kT, mass=mass), "quartic potential q^4/4", params
    if system == "double-well":
        prob = problems.double_well(gamma=gamma, kT=kT, mass=mass)
        return prob, "double well (q^2 - 1)^2", params
    prob = problems.muller_brown(gamma=gamma, kT=kT, mass=mass)
    return prob, "Müller-Brown potential (scale 0.05)", params


#: Default Monte Carlo ladders of the built-in nonlinear systems.
DEFAULT_LADDERS = {
    "quartic": (0.0125, 0.025, 0.05, 0.1, 0.2),
    "double-well": (0.025, 0.05, 0.1, 0.2, 0.4),
    "muller-brown": (0.0125, 0.025, 0.05, 0.1),
}
#: Default start of the finite-time Monte Carlo certificate: a configuration away from the
#: minima (so the finite-time error is large enough to resolve), momenta zero.
DEFAULT_STARTS: dict[str, tuple[float, ...]] = {
    "quartic": (1.0,),
    "double-well": (0.5,),
    "muller-brown": (-0.3, 1.0),
}
#: Default final time of the finite-time Monte Carlo certificate.
DEFAULT_T = {"quartic": 2.0, "double-well": 2.0, "muller-brown": 1.0}


def default_start(prob: Any, system: str, walkers: int, seed: int = 0) -> dict[str, Any]:
    """Every walker at :data:`DEFAULT_STARTS` with zero momenta (a deterministic start: the
    finite-time error is the scheme's alone)."""
    q0 = torch.tensor(DEFAULT_STARTS[system], dtype=torch.float64)
    q = q0.expand(walkers, len(q0)).clone()
    state = {"q": q}
    if getattr(prob, "underdamped", True):
        state["p"] = torch.zeros_like(q)
    return state


def default_monte_carlo(
    prob: Any,
    system: str,
    *,
    walkers: int = 50_000,
    hs: Sequence[float] | None = None,
    seed: int = 0,
    T: float | None = None,
) -> MonteCarloOptions:
    """The finite-time Monte Carlo certificate of a built-in nonlinear system:
    :math:`\\langle q^2\rangle` at ``T`` from :func:`default_start`, on the ladder
    :data:`DEFAULT_LADDERS`, against a fine-step run on the same Brownian path."""
    return MonteCarloOptions(
        hs=tuple(hs or DEFAULT_LADDERS[system]),
        y0=default_start(prob, system, walkers, seed),
        observable=lambda s: s["q"] ** 2,
        observable_name="q^2",
        mode="final",
        T=DEFAULT_T[system] if T is None else T,
        reference="fine",
        seed=seed,
    )


def _nonlinear_certificate(
    integ: Any,
    name: str,
    params: Mapping[str, float],
    options: MonteCarloOptions,
    progress: bool | None,
    say: Callable[[str], None],
) -> Certificate:
    walkers = options.walkers
    say(
        f"cost: Monte Carlo over {len(options.hs)} steps"
        + (" and a fine-step reference run" if options.reference == "fine" else "")
        + f", {walkers} walkers, {options.cost():.3g} walker-steps"
    )
    res = options.run(integ, progress=progress)
    v = res.verdict
    return Certificate(
        word=str(integ.word),
        system=name,
        params=dict(params),
        h=float(max(options.hs)),
        substeps=_substeps(integ),
        declared_weak_order=integ.weak_order,
        weak_order=v.order if v.certified else None,
        weak_order_exact=False,
        weak_order_method=(
            f"Monte Carlo, {options.observable_name} "
            + (f"at T = {options.T:g}" if options.mode == "final" else "stationary")
            + f", {res.reference_kind} reference"
        ),
        nfe_per_step=_measured_nfe(
            integ, options.y0(min(options.hs)) if callable(options.y0) else options.y0
        ),
        stationary=None,
        stationary_exact={},
        relative_bias=None,
        stability_note="nonlinear: no linear stability bound (unstable steps of the ladder are "
        "recorded)",
        linear=False,
        verdict=v,
        monte_carlo=res,
    )


def plot_certificate(cert: Certificate, path: str) -> str:
    """Weak error against h (see :func:`splitsde.analysis.plot.plot_certificate`)."""
    from splitsde.analysis.plot import plot_certificate as plot

    return plot(cert, path)
