r"""Exponential-integrator samplers: DDIM, DEIS (tAB, :math:`\rho`AB, log-:math:`\rho`AB,
:math:`\rho`RK), iPNDM and stochastic DDIM(:math:`\eta`).

Every sampler here is the one-flow word ``R`` over the :math:`\varepsilon`-parametrised reverse
family (:func:`~splitsde.diffusion.epsilon.epsilon_sde`) with a core solver strategy from
:mod:`splitsde.symbolic.expint` -- the same strategies apply to any flow "linear part +
field" -- run by :func:`splitsde.integrate` like every other sampler, followed by the usual
denoising step.

==================  =========================================================  ========  =====
name                solver                                                     NFE/step  order
==================  =========================================================  ========  =====
``ddim``            exponential Euler, :math:`\varepsilon` frozen (= DDIM)       1         1
``ddpm``            stochastic DDIM with :math:`\eta = 1` (ancestral DDPM)      1         1 (weak)
``deis-tab1..3``    Lagrange in :math:`t` through 2--4 past values              1         2--4
``deis-rhoab1..3``  Lagrange in :math:`\rho = \sigma/\alpha`                     1         2--4
``deis-logrho1..3`` Lagrange in :math:`\log\rho` (``diffusers``' DEIS)          1         2--4
``rhork-*``         Runge--Kutta in :math:`\rho` (euler, heun, kutta3, rk4)     1--4      1--4
``ipndm``           fixed Adams--Bashforth weights (orders 1--4, warm start)   1         2*
``ei-sde``          exponential Euler of the reverse SDE (:math:`\lambda = 1`)  1         1 (weak)
==================  =========================================================  ========  =====

(* iPNDM's fixed weights are the Adams--Bashforth weights of equal steps in :math:`\rho`, where it
equals :math:`\rho`AB3 (order 4); on other grids the weight mismatch makes it order 2.)

DDIM, :math:`\rho`AB, log-:math:`\rho`AB, :math:`\rho`RK and iPNDM need the
scalar exponential clock (one-block processes: VP, VE, the cosine schedule); tAB also runs on
PSLD/CLD (the coefficients are then Gauss--Legendre quadratures in :math:`t` of the matrix
propagator). :math:`\lambda > 0` (``sampler.with_options(lam=...)``) gives the stochastic
variants through the :math:`\lambda`-family; the field is then frozen in an SDE (weak order 1).

References: Song, Meng & Ermon, DDIM, ICLR 2021; Zhang & Chen, DEIS, ICLR 2023; Karras et al.,
EDM, NeurIPS 2022 (Heun in :math:`\sigma`); Liu et al., PNDM, ICLR 2022.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from splitsde.compose.word import Word
from splitsde.diffusion.epsilon import DiffusionClock, EpsilonField, epsilon_params, epsilon_sde
from splitsde.diffusion.processes import ForwardProcess
from splitsde.diffusion.samplers import Sampler
from splitsde.runtime.integrator import Integrator
from splitsde.symbolic.expint import (
    TABLEAUS,
    ExponentialMultistep,
    ExponentialRungeKutta,
    _require_scalar,
    _semilinear,
)
from splitsde.symbolic.solve import Solver, SolverStrategy, noise_symbol
from splitsde.symbolic.symbols import Coefficient, Parameter
from splitsde.symbolic.update import CoefficientDef, NoiseSpec, NumericCoefficients, Update

__all__ = [
    "EXPONENTIAL_SAMPLERS",
    "ExponentialSampler",
    "StochasticDDIM",
    "ddim",
    "deis",
    "ipndm",
    "rhork",
]

_DEIS = "Zhang & Chen, Fast sampling of diffusion models with exponential integrator, ICLR 2023"
_DDIM = "Song, Meng & Ermon, Denoising diffusion implicit models, ICLR 2021"


@dataclass(frozen=True)
class StochasticDDIM:
    r"""DDIM(:math:`\eta`) as a solver of the one-block :math:`\varepsilon`-flow.

    With :math:`\rho = \sigma/\alpha` at the slice start :math:`a` and end :math:`b`
    (diffusion times),

    .. math:: x_b = \tfrac{\alpha_b}{\alpha_a} x_a
              + \alpha_b\big(\sqrt{\rho_b^2 - \zeta^2} - \rho_a\big)\,\varepsilon(x_a)
              + \alpha_b\,\zeta\,\xi, \qquad
              \zeta^2 = \eta^2 (\rho_a^2 - \rho_b^2)\,\rho_b^2/\rho_a^2,

    i.e. :math:`\sigma_\eta^2 = \eta^2\frac{1-\bar\alpha_b}{1-\bar\alpha_a}
    (1 - \bar\alpha_a/\bar\alpha_b)` for VP. :math:`\eta = 0` is DDIM, :math:`\eta = 1` the
    ancestral DDPM sampler. It is consistent with the :math:`\lambda = \eta` member of the
    family (weak order 1), the flow it should be applied to.
    """

    process: ForwardProcess
    eta: float = 0.0

    def __post_init__(self) -> None:
        if not (self.eta >= 0 and math.isfinite(self.eta)):
            raise ValueError(f"eta must be finite and >= 0, got {self.eta}")

    def derive(self, flow: Any) -> Solver:
        what = f"stochastic DDIM (eta = {self.eta:g})"
        sl = _semilinear(flow, what)
        _require_scalar(sl, what)
        (x,) = sl.changed
        (u,) = sl.fields
        group = NumericCoefficients(
            ("a", "b", "c"),
            self._coefficients,
            method="DDIM coefficients from the exact kernel (alpha, sigma)",
            autonomous=False,
        )
        coefs = {
            Coefficient(f"{k}_ddim"): CoefficientDef(numeric=group, key=k, method=group.method)
            for k in ("a", "b", "c")
        }
        a, b, c = coefs
        expr = a * x + b * u
        noises = ()
        if self.eta > 0:
            xi = noise_symbol(x)
            expr += c * xi
            noises = ((xi, NoiseSpec(x)),)
        else:
            del coefs[c]
        return Solver(
            method=what,
            exact=False,
            reason="DDIM update from the kernel's alpha and sigma at the slice ends, "
            f"{u} frozen at the slice start",
            update=Update((x,), (expr,), noises, coefficients=coefs),
            weak_order=1,
            strong_order=None,
            time=group.method,
        )

    def _coefficients(
        self, t0: np.ndarray, s: np.ndarray, params: Mapping[Parameter, Any]
    ) -> dict[str, np.ndarray]:
        T = self.process.T
        alpha_a, S_a = self.process.data_kernel(T - t0)
        alpha_b, S_b = self.process.data_kernel(T - (t0 + s))
        al_a, al_b = alpha_a[..., 0], alpha_b[..., 0]
        rho_a = np.sqrt(S_a[..., 0, 0]) / al_a
        rho_b = np.sqrt(S_b[..., 0, 0]) / al_b
        zeta2 = self.eta**2 * (rho_a**2 - rho_b**2) * rho_b**2 / rho_a**2
        return {
            "a": al_b / al_a,
            "b": al_b * (np.sqrt(np.maximum(rho_b**2 - zeta2, 0.0)) - rho_a),
            "c": al_b * np.sqrt(np.maximum(zeta2, 0.0)),
        }


@dataclass(frozen=True)
class ExponentialSampler(Sampler):
    """A sampler whose one flow ``R`` is the :math:`\\varepsilon`-parametrised reverse family,
    solved by the strategy ``make(process, lam)``.

    Attributes (besides :class:`~splitsde.diffusion.samplers.Sampler`'s)
    ----------------------------------------------------------------------
    make:
        Builds the solver strategy for a process and noise scale.
    scalar_only:
        The strategy needs the scalar exponential clock (one-block processes).
    order:
        The declared order (global order of the ODE solver; 1 for stochastic variants).
    """

    make: Callable[[ForwardProcess, float], SolverStrategy] | None = None
    scalar_only: bool = False
    order: int = 1

    def check_process(self, process: ForwardProcess) -> None:
        super().check_process(process)
        if self.scalar_only and len(process.blocks) != 1:
            raise ValueError(
                f"sampler {self.name} needs the exponential clock rho = sigma/alpha of a "
                f"one-block process (vp, ve, vp-cosine); {process.name} has blocks "
                f"{', '.join(process.block_names)} (deis-tab* and pmm-* run on any process)"
            )

    def compiled_word(self, process: ForwardProcess) -> Word:
        return Word("R")

    def strategy(self, process: ForwardProcess) -> SolverStrategy:
        lam = float(self.lam) if not isinstance(self.lam, Mapping) else self.lam
        return self.make(process, lam)

    def integrator(
        self, process: ForwardProcess, score: Callable[..., Any], **kwargs: Any
    ) -> Integrator:
        """The sampling integrator: word ``R`` on :func:`epsilon_sde` with the strategy and the
        field ``e`` computed from ``score``."""
        self.check_process(process)
        sde = epsilon_sde(process, self.lam)
        return Integrator(
            sde,
            "R",
            epsilon_params(process, sde),
            {"e": EpsilonField(process, score)},
            solvers={"R": self.strategy(process)},
            **kwargs,
        )

    def __str__(self) -> str:
        return f"{self.name}: word R on the epsilon-parametrised reverse family"


def _clock_or_none(process: ForwardProcess, lam: Any) -> DiffusionClock | None:
    if len(process.blocks) != 1 or isinstance(lam, Mapping):
        return None
    return DiffusionClock(process, float(lam))


def deis(
    order: int, variable: str = "t", *, lam: float = 0.0, name: str = ""
) -> ExponentialSampler:
    r"""DEIS of ``order`` (0--3) with the Lagrange polynomial in ``variable`` (``"t"``,
    ``"rho"``, ``"log-rho"``); ``lam > 0`` is the stochastic variant."""
    ExponentialMultistep(order, variable if variable != "log-rho" else "rho")  # validate
    short = {"t": "tab", "rho": "rhoab", "log-rho": "logrho"}[variable]
    deterministic = lam == 0

    def make(process: ForwardProcess, lam_: Any) -> SolverStrategy:
        clock = _clock_or_none(process, lam_)
        return ExponentialMultistep(order, variable, clock, name=f"DEIS {short}{order}")

    return ExponentialSampler(
        name or f"deis-{short}{order}",
        "epsilon",
        "R",
        lam,
        make=make,
        scalar_only=variable != "t",
        order=order + 1 if deterministic else 1,
        description=f"exponential multistep, Lagrange polynomial of degree {order} in "
        f"{variable} through past noise predictions, warm start"
        + ("" if deterministic else f", lambda = {lam:g}"),
        reference=_DEIS
        + ("; diffusers' DEISMultistepScheduler is this variant" if short == "logrho" else ""),
    )


def ddim(eta: float = 0.0, *, name: str = "") -> ExponentialSampler:
    r"""DDIM (:math:`\eta = 0`: exponential Euler of the probability-flow ODE with
    :math:`\varepsilon` frozen) or stochastic DDIM(:math:`\eta`) on the :math:`\lambda = \eta`
    family."""
    if eta == 0:
        return ExponentialSampler(
            name or "ddim",
            "epsilon",
            "R",
            0.0,
            make=lambda p, lam: ExponentialMultistep(0, "rho", _clock_or_none(p, lam), name="DDIM"),
            scalar_only=True,
            order=1,
            description="exponential Euler with the noise prediction frozen (deterministic DDIM)",
            reference=_DDIM + "; " + _DEIS,
        )
    return ExponentialSampler(
        name or f"ddim-eta{eta:g}",
        "epsilon",
        "R",
        float(eta),
        make=lambda p, lam: StochasticDDIM(p, eta),
        scalar_only=True,
        order=1,
        description=f"stochastic DDIM with eta = {eta:g} (eta = 1: ancestral DDPM)",
        reference=_DDIM,
    )


def rhork(tableau: str, *, name: str = "") -> ExponentialSampler:
    r"""Runge--Kutta in :math:`\rho` (``"euler"``, ``"heun"``, ``"kutta3"``, ``"rk4"``)."""
    if tableau not in TABLEAUS:
        raise ValueError(f"unknown tableau {tableau!r}; tableaus: {', '.join(TABLEAUS)}")
    c, _, _, order = TABLEAUS[tableau]
    return ExponentialSampler(
        name or f"rhork-{tableau}",
        "epsilon",
        "R",
        0.0,
        make=lambda p, lam: ExponentialRungeKutta(tableau, DiffusionClock(p, lam)),
        scalar_only=True,
        order=order,
        description=f"{tableau} Runge-Kutta in rho = sigma/alpha on y = x/alpha "
        f"({len(c)} score evaluation(s) per step)",
        reference=_DEIS + ("; Karras et al., EDM, NeurIPS 2022" if tableau == "heun" else ""),
    )


def ipndm(order: int = 3, *, name: str = "") -> ExponentialSampler:
    """iPNDM: DDIM steps with the noise prediction replaced by the fixed Adams--Bashforth
    combination of the last ``order + 1`` predictions (lower orders first)."""
    ExponentialMultistep(order, weights="adams-bashforth")  # validate
    return ExponentialSampler(
        name or ("ipndm" if order == 3 else f"ipndm{order + 1}"),
        "epsilon",
        "R",
        0.0,
        make=lambda p, lam: ExponentialMultistep(
            order, "rho", _clock_or_none(p, lam), weights="adams-bashforth", name="iPNDM"
        ),
        scalar_only=True,
        order=min(order + 1, 2),
        description=f"Adams-Bashforth weights of {order + 1} past noise predictions in DDIM "
        "steps (warm start)",
        reference="Zhang & Chen, DEIS, ICLR 2023 (iPNDM); Liu et al., PNDM, ICLR 2022",
    )


def _ei_sde() -> ExponentialSampler:
    return ExponentialSampler(
        "ei-sde",
        "epsilon",
        "R",
        1.0,
        make=lambda p, lam: ExponentialMultistep(0, "t", None, name="exponential Euler (SDE)"),
        order=1,
        description="exponential Euler of the reverse SDE (lambda = 1): linear part and noise "
        "exact, noise prediction frozen",
        reference=_DEIS,
    )


#: The exponential-integrator family (listed in :data:`splitsde.diffusion.registry.SAMPLERS`).
EXPONENTIAL_SAMPLERS: dict[str, ExponentialSampler] = {
    s.name: s
    for s in [
        ddim(),
        ddim(1.0, name="ddpm"),
        *(deis(r, "t") for r in (1, 2, 3)),
        *(deis(r, "rho") for r in (1, 2, 3)),
        *(deis(r, "log-rho") for r in (1, 2, 3)),
        *(rhork(tab) for tab in ("euler", "heun", "kutta3", "rk4")),
        ipndm(3),
        _ei_sde(),
    ]
}
