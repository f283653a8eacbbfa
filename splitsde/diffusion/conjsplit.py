r"""Conjugate splitting samplers for augmented processes (PSLD, CLD): the reverse family split
into its probability-flow part and its Langevin part, each sub-flow solved in the conjugate
variables of the point-data flow.

**The split.** In the noise-prediction parametrisation (:func:`~splitsde.diffusion.epsilon.
epsilon_sde`, :math:`s = -C_t^{-\top}\varepsilon`, :math:`C_t` the Cholesky factor of the
kernel covariance :math:`S_t`) the :math:`\lambda`-family in reverse time is the sum of two
flows,

.. math::
    P:\quad d\bar z = \big[-F\bar z - \tfrac12 GG^\top C_t^{-\top}\varepsilon\big]\,d\tau,
    \qquad
    O:\quad d\bar z = -\tfrac12\Lambda^2 GG^\top C_t^{-\top}\varepsilon\,d\tau
        + \Lambda G\,d\bar W,

``P`` the probability-flow ODE (:math:`\lambda = 0`) and ``O`` the Langevin dynamics of the
marginal :math:`p_t` at fixed :math:`t` (it leaves :math:`p_t` invariant; this is the
predictor--corrector reading of the reverse SDE, Song et al. 2021).

**P in the conjugate variables** is the conjugate DDIM step of
:mod:`splitsde.diffusion.conjugate`: the linear part :math:`-F` is solved exactly by the kernel's
backward map :math:`\Phi_{ba}` and the noise prediction is frozen in the frame transported by
the point-data flow, :math:`E_{ba}`:

.. math:: z_b = \Phi_{ba} z_a + \big(C_b E_{ba} - \Phi_{ba} C_a\big)\,\varepsilon(z_a, t_a).

**O in the conjugate variables.** With the data prediction :math:`\hat m = z - C_t\varepsilon`
frozen, the Cholesky noise :math:`e = C_t^{-1}(z - \hat m)` of ``O`` at fixed :math:`t` is the
Ornstein--Uhlenbeck process :math:`de = -\tfrac12 D^\Lambda_t e\,d\tau + C_t^{-1}\Lambda G\,
d\bar W` with :math:`D^\Lambda_t = C_t^{-1}\Lambda^2 GG^\top C_t^{-\top}`, whose stationary law
is :math:`N(0, I)`; solved exactly over a sub-step :math:`s`,

.. math:: z' = z + C_t\big(e^{-\frac12 D^\Lambda_t s} - I\big)\,\varepsilon(z, t)
          + C_t\big(I - e^{-\frac12 D^\Lambda_t s} e^{-\frac12 D^\Lambda_t s\,\top}\big)^{1/2}
          \xi .

``O`` is solved at the diffusion time of the start of its slice (time moves only in ``P``; in
the words below ``O`` comes first in the step, so that is the time of the state it acts on).
Both sub-steps keep :math:`N(a_t x_0, S_t)` exactly for data at a point :math:`x_0` (``P``
maps :math:`N(a_{t_a}x_0, S_{t_a})` to :math:`N(a_{t_b}x_0, S_{t_b})`, ``O`` leaves it
invariant), at any step size and noise scale, when each evaluates the noise prediction at its
own state.

=======================  ======  ===================================================  =========
name                     word    evaluations                                          NFE/step
=======================  ======  ===================================================  =========
``conj-op``              ``OP``  afresh in each sub-flow: exact for data at a point   2
``conj-reduced-op``      ``OP``  once per step, at its start, reused by ``P``          1
=======================  ======  ===================================================  =========

Weak order 1 (Lie--Trotter composition; each sub-step freezes the noise prediction), declared
by the compiled integrator. The noise scale :math:`\lambda` (one number or per block name)
is an option (``dm.sampler("conj-op", lam=...)``); the default is :math:`\lambda = 1`.
The reduced word reuses the *noise prediction* evaluated at the start of the step (the
framework's reuse rule, :class:`~splitsde.compose.reduce.Reduction`), so it is not exact for
data at a point: ``P`` sees the stale :math:`\varepsilon` after ``O`` moved the state.

References: Pandey, Rudolph & Mandt, *Efficient integrators for diffusion generative models*,
ICLR 2024 (conjugate and splitting integrators); Zhang, Tao & Chen, *gDDIM*, ICLR 2023; Song et
al., *Score-based generative modeling through stochastic differential equations*, ICLR 2021
(predictor--corrector sampling).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.linalg
import sympy

from splitsde.compose.word import Word
from splitsde.diffusion.conjugate import (
    ConjugateDEIS,
    PointFlowFrame,
    _psd_sqrt,
    point_flow_frame,
)
from splitsde.diffusion.epsilon import EpsilonField, epsilon_params, epsilon_sde
from splitsde.diffusion.processes import ForwardProcess
from splitsde.diffusion.samplers import REDUCED, Sampler
from splitsde.runtime.integrator import Integrator
from splitsde.symbolic.expint import _semilinear
from splitsde.symbolic.field import field_applications, field_of
from splitsde.symbolic.flow import Flow
from splitsde.symbolic.sde import SDE
from splitsde.symbolic.solve import Solver, noise_symbol
from splitsde.symbolic.update import (
    CoefficientSymbols,
    NoiseSpec,
    NumericCoefficients,
    Update,
)

__all__ = [
    "CONJUGATE_SPLITTING_SAMPLERS",
    "ConjugateOU",
    "ConjugateSplittingSampler",
    "conjugate_split_sde",
]

_REF = (
    "Pandey, Rudolph & Mandt, Efficient integrators for diffusion generative models, ICLR 2024; "
    "Zhang, Tao & Chen, gDDIM, ICLR 2023; Song et al., ICLR 2021 (predictor-corrector)"
)


def _lam_key(lam: float | Mapping[str, float]) -> Any:
    return (
        tuple(sorted((str(k), float(v)) for k, v in lam.items()))
        if isinstance(lam, Mapping)
        else float(lam)
    )


def conjugate_split_sde(process: ForwardProcess, lam: float | Mapping[str, float] = 1.0) -> SDE:
    r"""The :math:`\varepsilon`-parametrised :math:`\lambda`-family of ``process`` split into the
    probability-flow part ``P`` (the :math:`\lambda = 0` flow) and the Langevin part ``O``
    (the rest: :math:`-\tfrac12\Lambda^2 GG^\top C^{-\top}\varepsilon` and the noise). The
    :class:`~splitsde.symbolic.sde.SDE` checks that the two flows add up to the family."""
    key = _lam_key(lam)
    cache = process.__dict__.setdefault("_conjugate_split_cache", {})
    if key in cache:
        return cache[key]
    pf = epsilon_sde(process, 0.0).flows["R"]
    full = epsilon_sde(process, lam).flows["R"]
    full_field = next(iter(epsilon_sde(process, lam).fields.values()))
    if not full.noise:
        raise ValueError(
            "the conjugate splitting needs noise (lambda > 0 on some block); for lambda = 0 the "
            "family is the probability-flow ODE: use cddim or cdeis1..3"
        )
    # one field object for both flows: rewrite the probability-flow part's field terms with
    # the family's own field (the two cached SDEs each carry a field named e)
    apps: dict[sympy.Expr, sympy.Expr] = {}
    for d in pf.drift.values():
        for u in field_applications(d):
            apps[u] = full_field.apply(field_of(u)[1], u.args)
    pf_drift = {b: d.xreplace(apps) for b, d in pf.drift.items()}
    o_drift = {}
    for b in process.blocks:
        d = sympy.expand(full.drift.get(b, sympy.Integer(0)) - pf_drift.get(b, sympy.Integer(0)))
        if d != 0:
            o_drift[b] = d
    flows = {
        "P": Flow(pf_drift, description=f"reverse {process.name}, probability-flow part"),
        "O": Flow(o_drift, dict(full.noise), description=f"reverse {process.name}, Langevin part"),
    }
    sde = SDE(
        process.blocks,
        flows,
        drift=dict(full.drift),
        noise=dict(full.noise),
        name=f"reverse {process.name} (epsilon parametrisation, probability-flow / Langevin split)",
    )
    cache[key] = sde
    return sde


@dataclass(frozen=True)
class ConjugateOU:
    r"""Exact solver of the Langevin part ``O`` of :func:`conjugate_split_sde` with the data
    prediction frozen: the Ornstein--Uhlenbeck process of the Cholesky noise at the diffusion
    time of the slice start (see the module docstring). Weak order 1 for the flow ``O`` (the
    noise prediction is frozen); exact for data at a point."""

    process: ForwardProcess
    lam: float | Mapping[str, float] = 1.0
    frame: PointFlowFrame | None = field(default=None, compare=False)

    def _lam2(self) -> np.ndarray:
        names = self.process.block_names
        if isinstance(self.lam, Mapping):
            return np.array([float(self.lam.get(b, 1.0)) ** 2 for b in names])
        return np.full(len(names), float(self.lam) ** 2)

    def derive(self, flow: Any) -> Solver:
        what = "conjugate Ornstein-Uhlenbeck step"
        sl = _semilinear(flow, what)
        if any(sympy.expand(e) != 0 for e in sl.A):
            raise ValueError(f"{what}: the Langevin part has no linear term; this flow has one")
        if not sl.stochastic:
            raise ValueError(f"{what}: the flow has no noise")
        found = {field_of(u)[0] for u in sl.fields}
        if len(found) != 1:
            raise ValueError(f"{what}: expected the one noise-prediction field of the flow")
        (f,) = found
        blocks = self.process.blocks
        if len(f.outputs) != len(blocks):
            raise ValueError(f"{what}: expected one noise prediction per block")
        args = sl.fields[0].args
        apps = [f.apply(c, args) for c in range(len(blocks))]
        changed = tuple(sl.changed)
        rows = [blocks.index(b) for b in changed]
        n = len(blocks)
        keys = [("K", i, c) for i in rows for c in range(n)]
        keys += [("N", i, c) for i in rows for c in range(n)]
        group = NumericCoefficients(
            tuple(keys),
            lambda t0, s, params, past=None: self._coefficients(t0, s, rows),
            method=f"exact Ornstein-Uhlenbeck step of the Cholesky noise of {self.process.name}",
            autonomous=False,
        )
        coef = CoefficientSymbols(group, lambda key: "o" + "_".join(map(str, key)))

        xis = [noise_symbol(b) for b in blocks]
        exprs = []
        for i in rows:
            e = blocks[i] + sum((coef(("K", i, c)) * apps[c] for c in range(n)), sympy.Integer(0))
            e += sum((coef(("N", i, c)) * xis[c] for c in range(n)), sympy.Integer(0))
            exprs.append(e)
        noises = tuple((xi, NoiseSpec(b)) for xi, b in zip(xis, blocks))
        return Solver(
            method=what,
            exact=False,
            reason="data prediction frozen; the Cholesky noise relaxes by its exact "
            "Ornstein-Uhlenbeck law at the slice start: exact for data at a point",
            update=Update(changed, tuple(exprs), noises, coefficients=coef.defs),
            weak_order=1,
            strong_order=None,
            time=group.method,
        )

    def _coefficients(
        self, tau0: np.ndarray, s: np.ndarray, rows: list[int]
    ) -> dict[Any, np.ndarray]:
        fr = self.frame if self.frame is not None else point_flow_frame(self.process)
        n = fr.n
        out: dict[Any, np.ndarray] = {}
        if tau0.shape[0] == 0:
            return {
                k: np.zeros(0) for i in rows for c in range(n) for k in (("K", i, c), ("N", i, c))
            }
        q = fr.at(self.process.T - tau0)
        C, Ci = q["C"], q["Cinv"]
        D = np.einsum("kij,kj,klj->kil", Ci, self._lam2() * q["g2"], Ci)
        EO = scipy.linalg.expm(-0.5 * s[:, None, None] * D)
        K = C @ (EO - np.eye(n))
        N = C @ _psd_sqrt(np.eye(n) - EO @ np.swapaxes(EO, -1, -2))
        for i in rows:
            for c in range(n):
                out[("K", i, c)] = K[:, i, c]
                out[("N", i, c)] = N[:, i, c]
        return out


@dataclass(frozen=True)
class ConjugateSplittingSampler(Sampler):
    """A word over the probability-flow / Langevin split (:func:`conjugate_split_sde`) with
    ``P`` solved by the conjugate DDIM step and ``O`` by :class:`ConjugateOU`."""

    def check_process(self, process: ForwardProcess) -> None:
        super().check_process(process)
        if len(process.blocks) < 2:
            raise ValueError(
                f"sampler {self.name} is for augmented processes (psld-cifar10, cld); "
                f"{process.name} has one block (use cddim-sde or ddpm)"
            )

    def compiled_word(self, process: ForwardProcess) -> Word:
        return Word(self.word)

    def integrator(
        self, process: ForwardProcess, score: Callable[..., Any], **kwargs: Any
    ) -> Integrator:
        """The sampling integrator: the word on :func:`conjugate_split_sde` with field ``e``
        computed from ``score``."""
        self.check_process(process)
        sde = conjugate_split_sde(process, self.lam)
        return Integrator(
            sde,
            self.word,
            epsilon_params(process, sde),
            {"e": EpsilonField(process, score)},
            reduction=self.reduction,
            solvers={
                "P": ConjugateDEIS(process, 0, name="conjugate DDIM (P)"),
                "O": ConjugateOU(process, self.lam),
            },
            **kwargs,
        )

    def __str__(self) -> str:
        red = f", {self.reduction}" if self.reduction else ""
        return f"{self.name}: {self.word} on the probability-flow / Langevin split{red}"


def _conj_split(name: str, reduced: bool) -> ConjugateSplittingSampler:
    return ConjugateSplittingSampler(
        name,
        "conjugate-pf-langevin",
        "OP",
        1.0,
        reduction=REDUCED if reduced else None,
        needs_blocks=(),
        reference=_REF,
        description=(
            "O P: exact Ornstein-Uhlenbeck step of the Cholesky noise, then a conjugate DDIM "
            "step of the probability flow"
            + (
                "; one noise prediction per step, reused by P"
                if reduced
                else "; each evaluates afresh (exact for data at a point)"
            )
        ),
    )


#: The conjugate splitting family (listed in :data:`splitsde.diffusion.registry.SAMPLERS`).
CONJUGATE_SPLITTING_SAMPLERS: dict[str, ConjugateSplittingSampler] = {
    s.name: s for s in [_conj_split("conj-op", False), _conj_split("conj-reduced-op", True)]
}
