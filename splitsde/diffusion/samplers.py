r"""Diffusion samplers as words over a split reverse SDE, with derived solvers and reductions.

A sampler is data: a split of the reverse-SDE family (:mod:`splitsde.diffusion.reverse`), a
word over its letters, noise scales :math:`\lambda`, optional solver choices and a
:class:`~splitsde.compose.reduce.Reduction`. Running it is :func:`splitsde.integrate` over the
reverse-time grid, followed by the noise-free denoising step run as a second one-step
integrator through :func:`splitsde.integrate`. No sampler has its own loop.

=================  ========  =====================================================  ==========
name               split     word / rule                                            NFE/step
=================  ========  =====================================================  ==========
``em``             full      ``R`` solved by Euler--Maruyama                        1
``pf-euler``       full      ``R`` at :math:`\lambda = 0` (probability-flow Euler)  1
``sscs``           sscs      ``A S A``: exact OU half steps around an Euler score   1
                             step (Dockhorn et al., ICLR 2022)
``oba`` ``bao``    abo-ou    naive splitting words (fields evaluated afresh)        2, 2, 2
``obab``
``vv``             abo       ``B A B`` at :math:`\lambda = 0` (velocity Verlet on   3
                             the probability-flow ODE)
``reduced-*``      same      the same words with ``reuse="per_step"``               1
``sps``            abo-ou    reduced ``OBA`` with data-block noise :math:`\lambda_s` 1
=================  ========  =====================================================  ==========

All of them have finite-time weak order 1 (Euler-type treatment of the score; the reduction
rule caps the order at 1); :meth:`Sampler.weak_order_for` reads it off the integrator compiled
for a process, and a compiled plan has it as the property :attr:`Plan.weak_order`.

The splitting samplers follow Pandey, Rudolph & Mandt, *Towards fast stochastic sampling in
diffusion generative models* (2024) and *Efficient integrators for diffusion generative models*
(ICLR 2024). Their sub-flows, the solvers of the sub-flows and the evaluation point and time
label of the reduced variants are **reconstructed**: the public record available to us (the
papers' abstracts and reviews, the official PSLD code, which has EM, SSCS and a black-box ODE
sampler but no splitting sampler) names the ingredients but not the update equations; see
``docs/diffusion.md``. The stochastic words run on the ``abo-ou`` split
(:mod:`~splitsde.diffusion.reverse`): ``A`` moves the data block with its score term and noise,
``B`` kicks the momentum with the data (:math:`\tfrac\beta2\bar x`), ``O`` is the momentum's
Ornstein--Uhlenbeck part (friction, score term, noise); ``A`` and ``O`` are Euler--Maruyama
steps, ``B`` is exact. The derived solver of ``O`` would be exponential Euler (its expanding
linear part :math:`e^{\beta\nu h/2}` exact, the contracting score term frozen), which is
unstable at the step sizes of interest; pass ``solvers={}`` through
:meth:`Sampler.with_options` to use it. The velocity-Verlet words run on the probability-flow
ODE split into the data and momentum equations (``abo`` at :math:`\lambda = 0`).
"""

from __future__ import annotations

import time as _time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from fractions import Fraction
from typing import Any, ClassVar

import numpy as np
import torch

from splitsde.compose.reduce import Reduction
from splitsde.compose.word import Word
from splitsde.diffusion import denoise as _denoise
from splitsde.diffusion.defaults import RECOMMENDED_LAM, recommended_grid
from splitsde.diffusion.grids import check_grid, time_grid
from splitsde.diffusion.kernels import prepare_kernel_tables
from splitsde.diffusion.processes import ForwardProcess
from splitsde.diffusion.processes import process as get_process
from splitsde.diffusion.protocols import BudgetError, Law, SampleResult
from splitsde.diffusion.reverse import ReverseSDE, SplitSpec
from splitsde.diffusion.scores import bind_kernels
from splitsde.runtime.integrate import integrate
from splitsde.runtime.integrator import Integrator
from splitsde.symbolic.solve import EulerMaruyama, SolverStrategy

__all__ = [
    "SPLITTING_SAMPLERS",
    "BudgetError",
    "Plan",
    "SampleResult",
    "Sampler",
    "steps_for_budget",
]

_PANDEY = (
    "Pandey, Rudolph & Mandt, Towards fast stochastic sampling in diffusion generative models "
    "(2024); Efficient integrators for diffusion generative models, ICLR 2024"
)


@dataclass(frozen=True)
class Sampler:
    """A diffusion sampler: split, word, noise scales, solvers and reduction.

    Attributes
    ----------
    name, description, reference:
        What it is and where it comes from.
    split:
        Named split of the reverse SDE (or a spec, see :mod:`~splitsde.diffusion.reverse`).
    word:
        The splitting word over the split's letters. Letters whose flow vanishes for the
        chosen noise scales (``O`` at :math:`\\lambda_m = 0`) are dropped.
    lam:
        Noise scale :math:`\\lambda` (one number, or per block name).
    solvers:
        Solver strategies overriding the derived ones, by letter.
    reduction:
        Evaluation reuse rules (``None``: reuse only provably unchanged values).
    reconstructed:
        Whether parts of the definition are reconstructed rather than taken from a paper.
    needs_blocks:
        Blocks the split needs (``("x", "m")`` for the splitting samplers).
    """

    name: str
    split: str | SplitSpec
    word: str
    lam: float | Mapping[str, float] = 1.0
    solvers: Mapping[str, SolverStrategy] = field(default_factory=dict)
    reduction: Reduction | None = None
    description: str = ""
    reference: str = ""
    reconstructed: bool = False
    needs_blocks: tuple[str, ...] = ()

    #: Plans are one compiled step integrator over the grid (see
    #: :class:`~splitsde.diffusion.protocols.SamplerProtocol`).
    stepwise: ClassVar[bool] = True

    # -- building ---------------------------------------------------------------------------------
    def check_process(self, process: ForwardProcess) -> None:
        missing = [b for b in self.needs_blocks if b not in process.block_names]
        if missing:
            raise ValueError(
                f"sampler {self.name} needs blocks {', '.join(self.needs_blocks)}; process "
                f"{process.name} has {', '.join(process.block_names)} (use an augmented process "
                "such as psld-cifar10 or cld)"
            )

    def reverse(self, process: ForwardProcess) -> ReverseSDE:
        self.check_process(process)
        return process.reverse(self.lam)

    def compiled_word(self, process: ForwardProcess) -> Word:
        """The word with letters of vanished flows left out."""
        letters = set(self.reverse(process).letters(self.split))
        w = Word(self.word)
        kept = [o for o in w if o.letter in letters]
        if not kept:
            raise ValueError(f"sampler {self.name}: no flow left at these noise scales")
        counts: dict[str, int] = {}
        for o in kept:
            counts[o.letter] = counts.get(o.letter, 0) + 1
        # keep explicit weights only where a letter keeps all its occurrences
        parts = []
        for o in kept:
            full = w.counts[o.letter] == counts[o.letter]
            default = o.weight == Fraction(1, w.counts[o.letter])
            parts.append(o.letter if (full and default) or not full else f"{o.letter}[{o.weight}]")
        return Word(" ".join(parts))

    def integrator(
        self, process: ForwardProcess, score: Callable[..., Any], **kwargs: Any
    ) -> Integrator:
        """The sampling integrator for ``process`` with ``score`` bound to the field ``s``."""
        rev = self.reverse(process)
        sde = rev.sde(self.split)
        solvers = {k: v for k, v in self.solvers.items() if k in sde.flows}
        return Integrator(
            sde,
            self.compiled_word(process),
            rev.params_for(sde),
            {"s": score},
            reduction=self.reduction,
            solvers=solvers or None,
            **kwargs,
        )

    def denoiser(
        self, process: ForwardProcess, score: Callable[..., Any], **kwargs: Any
    ) -> Integrator:
        """The one-step noise-free Euler integrator of the final denoising step (the drift at
        :math:`\\lambda = 1`, as in the reference implementations)."""
        return _denoise.denoiser(process, score, **kwargs)

    def weak_order_for(self, process: ForwardProcess) -> int | None:
        """Declared finite-time weak order on ``process``, read off the integrator compiled
        for it (the word drops letters whose flow vanishes, so it depends on the process)."""
        return self.integrator(process, _never).weak_order

    def with_options(self, **changes: Any) -> Sampler:
        """A copy with some attributes changed (``lam``, ``reduction``, ``solvers``, ...)."""
        return replace(self, **changes)

    def configure(self, **options: Any) -> Sampler:
        """A copy with user options: ``lam`` (noise scales), ``lam_s`` (the data-block noise
        scale of SPS), ``eval_at`` / ``time_label`` (reduced variants), ``solvers`` (merged
        into the sampler's own)."""
        changes: dict[str, Any] = {}
        if "lam_s" in options:
            lam_s = float(options.pop("lam_s"))
            lam = self.lam
            base = dict(lam) if isinstance(lam, Mapping) else {"x": lam, "m": lam}
            base["x"] = lam_s
            changes["lam"] = base
        if "lam" in options:
            changes["lam"] = options.pop("lam")
        if "eval_at" in options or "time_label" in options:
            red = self.reduction
            if red is None or red.reuse != "per_step":
                raise ValueError(f"eval_at/time_label apply to reduced samplers, not {self.name}")
            changes["reduction"] = Reduction(
                "per_step",
                options.pop("eval_at", red.eval_at),
                options.pop("time_label", red.time_label),
                red.fields,
            )
        if "solvers" in options:
            changes["solvers"] = {**self.solvers, **options.pop("solvers")}
        if options:
            raise ValueError(f"unknown sampler option(s) {sorted(options)}")
        return replace(self, **changes) if changes else self

    def plan(
        self,
        process: str | ForwardProcess,
        score: Callable[..., Any],
        *,
        nfe: int | None = None,
        steps: int | None = None,
        grid: str | Sequence[float] | np.ndarray | None = None,
        eps: float | None = None,
        denoise: bool = True,
        **integrator_options: Any,
    ) -> Plan:
        """Compile for a process, a score callable and a grid (see
        :func:`splitsde.diffusion.planning.plan`; ``grid=None`` is the recommended grid);
        ``integrator_options`` go to both :class:`~splitsde.runtime.integrator.Integrator`
        objects."""
        proc = get_process(process)
        score = bind_kernels(score)  # kernel terms of score conversions: one table per plan
        integ = self.integrator(proc, score, **integrator_options)
        den = self.denoiser(proc, score, **integrator_options) if denoise else None
        if grid is None or isinstance(grid, str):
            if (nfe is None) == (steps is None):
                raise ValueError("give exactly one of nfe= and steps=")
            if nfe is not None:
                steps = steps_for_budget(integ, nfe, denoise, self.name)
            if grid is None:
                grid = recommended_grid(self.name, proc, eps, steps)
            ts = time_grid(proc, grid, steps, eps, sampler=self.name)
        else:
            if nfe is not None or steps is not None:
                raise ValueError("an explicit grid fixes the steps; do not give nfe= or steps=")
            ts = check_grid(proc, grid, eps)
        out = Plan(self, proc, integ, den, ts)
        prepare_kernel_tables(integ, out.tau)
        if den is not None:
            prepare_kernel_tables(den, out.denoise_tau)
        return out

    def __str__(self) -> str:
        red = f", {self.reduction}" if self.reduction else ""
        return f"{self.name}: {self.word} on the {self.split} split{red}"


def _never(*args: Any) -> Any:  # a placeholder field callable for structural queries
    raise RuntimeError("placeholder score called")


# ---------------------------------------------------------------------------------------------
# The registry
# ---------------------------------------------------------------------------------------------
_EULER_S = {"S": EulerMaruyama(reason="SSCS treats the score part by Euler")}
#: Sub-step solvers of the stochastic splitting samplers (reconstructed; B, the momentum kick by
#: the data, is solved exactly by its derived shear). The derived exponential Euler of O solves
#: the momentum's expanding friction e^{beta nu h / 2} exactly while freezing the contracting
#: score term, which is unstable at large steps; docs/diffusion.md shows the comparison.
_EULER_AO = {
    "A": EulerMaruyama(reason="splitting samplers update the data block by Euler"),
    "O": EulerMaruyama(reason="splitting samplers update the momentum's OU part by Euler"),
}
#: Sub-step solvers of the velocity-Verlet words (data and momentum equations of the
#: probability-flow ODE, Euler steps as in the paper's symplectic Euler and velocity Verlet).
_EULER_AB = {
    "A": EulerMaruyama(reason="splitting samplers update the data block by Euler"),
    "B": EulerMaruyama(reason="splitting samplers update the momentum drift by Euler"),
}
_EM = {"R": EulerMaruyama(reason="Euler-Maruyama sampler")}
#: Default reduction of the reduced splitting samplers (reconstructed): evaluate the score once
#: per step where the naive word first needs it (same state and time label as the naive
#: word), and reuse that value in every later sub-flow of the step. For OBA on the abo-ou split
#: that is the state at the start of the step, labelled with the step's start time.
REDUCED = Reduction(reuse="per_step", eval_at="first")
#: The split of the stochastic splitting samplers (see splitsde.diffusion.reverse).
SPLITTING = "abo-ou"


def _reduced(name: str, word: str, lam: Any = 1.0) -> Sampler:
    deterministic = lam == 0.0
    return Sampler(
        f"reduced-{name}",
        "abo" if deterministic else SPLITTING,
        word,
        lam,
        _EULER_AB if deterministic else _EULER_AO,
        reduction=REDUCED,
        reconstructed=True,
        needs_blocks=("x", "m"),
        reference=_PANDEY,
        description=f"{word} with one score evaluation per step reused by every sub-flow",
    )


def _naive(name: str, word: str, lam: Any = 1.0, what: str = "") -> Sampler:
    deterministic = lam == 0.0
    return Sampler(
        name,
        "abo" if deterministic else SPLITTING,
        word,
        lam,
        _EULER_AB if deterministic else _EULER_AO,
        reconstructed=True,
        needs_blocks=("x", "m"),
        reference=_PANDEY,
        description=what or f"naive splitting {word}: each sub-flow evaluates the score afresh",
    )


#: The splitting family (listed in :data:`splitsde.diffusion.registry.SAMPLERS`).
SPLITTING_SAMPLERS: dict[str, Sampler] = {
    s.name: s
    for s in [
        Sampler(
            "em",
            "full",
            "R",
            1.0,
            _EM,
            description="Euler-Maruyama on the reverse SDE",
            reference="Kloeden & Platen (1992); Song et al., ICLR 2021",
        ),
        Sampler(
            "pf-euler",
            "full",
            "R",
            0.0,
            _EM,
            description="Euler on the probability-flow ODE (lambda = 0)",
            reference="Song et al., ICLR 2021",
        ),
        Sampler(
            "sscs",
            "sscs",
            "ASA",
            1.0,
            _EULER_S,
            description="symmetric splitting: exact OU half steps around an Euler step of "
            "the score part (score minus the stationary score)",
            reference="Dockhorn, Vahdat & Kreis, ICLR 2022 (SSCS)",
        ),
        _naive("oba", "OBA"),
        _naive("bao", "BAO"),
        _naive("obab", "OBAB"),
        _naive("vv", "BAB", 0.0, "velocity Verlet B A B on the probability-flow ODE"),
        _reduced("oba", "OBA"),
        _reduced("bao", "BAO"),
        _reduced("obab", "OBAB"),
        _reduced("vv", "BAB", 0.0),
        Sampler(
            "sps",
            SPLITTING,
            "OBA",
            RECOMMENDED_LAM.get("sps", {"x": 0.0}),
            _EULER_AO,
            reduction=REDUCED,
            reconstructed=True,
            needs_blocks=("x", "m"),
            reference=_PANDEY,
            description="reduced OBA with data-block noise regulation lambda_s (default: the "
            "recommended value, splitsde.diffusion.defaults)",
        ),
    ]
}


# ---------------------------------------------------------------------------------------------
# Planning and running
# ---------------------------------------------------------------------------------------------
@dataclass
class Plan:
    """A sampler compiled for one process, score and grid: what :func:`sample` runs and what
    the exact analysis propagates."""

    sampler: Sampler
    process: ForwardProcess
    integrator: Integrator
    denoiser: Integrator | None
    grid: np.ndarray  # diffusion times, T -> eps

    @property
    def tau(self) -> np.ndarray:
        """The reverse-time grid the integrator runs on."""
        return self.process.T - self.grid

    @property
    def denoise_tau(self) -> np.ndarray:
        """Reverse times of the denoising step."""
        return _denoise.denoise_grid(self.process, self.grid)

    @property
    def steps(self) -> int:
        return len(self.grid) - 1

    @property
    def weak_order(self) -> int | None:
        """The declared weak order of the sampling word (the PF-ODE plans have the same)."""
        return self.integrator.weak_order

    @property
    def nfe(self) -> int:
        """NFE as compiled (first step, steady steps, denoising step); :func:`sample` reports
        the measured count."""
        prog = self.integrator.program
        first = prog.evaluations_per_step(first=True)
        per = prog.evaluations_per_step()
        return first + (self.steps - 1) * per + (1 if self.denoiser is not None else 0)

    def run(
        self, y0: Mapping[str, torch.Tensor], *, seed: int = 0, progress: bool | None = None
    ) -> SampleResult:
        started = _time.perf_counter()
        res = integrate(self.integrator, y0, grid=self.tau, seed=seed, progress=progress)
        results = [res]
        final = res.final
        nfe_d = 0
        if self.denoiser is not None:
            den = _denoise.denoise(self.denoiser, final, self.process, self.grid, seed)
            results.append(den)
            final, nfe_d = den.final, den.nfe
        return SampleResult(
            final,
            res.nfe + nfe_d,
            res.nfe,
            nfe_d,
            self.steps,
            self.grid,
            _time.perf_counter() - started,
            results,
        )

    def exact_law(self, mean0: Any, cov0: Any) -> Law:
        r"""The law of the output started from :math:`N(m_0, \Sigma_0)` (blocks
        concatenated, block-major): :func:`splitsde.analysis.propagate` over the sampling grid
        and the denoising step. A randomized program (Poisson midpoint) gives the exact mean
        and covariance of its mixture law
        (:func:`splitsde.analysis.randomized.propagate_moments`, ``kind="moments"``). Raises
        :class:`~splitsde.analysis.affine.NotAffineError` for a score that is not affine."""
        from splitsde.analysis import propagate
        from splitsde.analysis.randomized import propagate_moments

        m0 = torch.as_tensor(mean0, dtype=torch.float64)
        c0 = torch.as_tensor(cov0, dtype=torch.float64)
        d = len(m0) // len(self.process.blocks)
        shapes = {b: (d,) for b in self.process.block_names}
        randomized = bool(self.integrator.program.uniform_draws)
        if randomized:
            mean, cov = propagate_moments(self.integrator, self.tau, m0.numpy(), c0.numpy(), shapes)
        else:
            mean, cov = propagate(self.integrator, self.tau, m0, c0, shapes)
        if self.denoiser is not None:
            mean, cov = propagate(self.denoiser, self.denoise_tau, mean, cov, shapes)
        return Law(
            torch.as_tensor(mean, dtype=torch.float64),
            torch.as_tensor(cov, dtype=torch.float64),
            "moments" if randomized else "gaussian",
        )


def steps_for_budget(integ: Integrator, nfe: int, denoise: bool, name: str) -> int:
    """The most steps whose NFE (with the denoising step) fits the budget ``nfe``."""
    prog = integ.program
    first, per = prog.evaluations_per_step(first=True), prog.evaluations_per_step()
    budget = int(nfe) - (1 if denoise else 0)
    if budget < first or (per == 0 and budget < first):
        raise BudgetError(
            f"an NFE budget of {nfe} is too small for {name}: one step costs {first} score "
            f"evaluation(s){' plus 1 for the denoising step' if denoise else ''}"
        )
    if per == 0:
        raise BudgetError(f"{name} evaluates no score per step; give steps= instead of nfe=")
    return 1 + (budget - first) // per
