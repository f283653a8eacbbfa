r"""The probability-flow ODE solved by torchdiffeq: a sampler and a tight reference.

The probability-flow ODE is the :math:`\lambda = 0` member of the reverse family
(:class:`~splitsde.diffusion.reverse.ReverseSDE`): in reverse time :math:`\tau`,

.. math:: \frac{d\bar z_b}{d\tau} = -(F\bar z)_b + \tfrac12 g_b^2\, s_b(\bar z, \tau).

:class:`ProbabilityFlow` lowers that family's own symbolic drift (the score applications become
the values of one score call) to a torch vector field and hands it to
``torchdiffeq.odeint`` -- an adaptive Dormand--Prince 5(4) solve (``dopri5``) with tolerances,
or a fixed-grid method (``rk4``, ``midpoint``, ``euler``) on the sampling grid. The trajectory
is solved by torchdiffeq's own loop (an adaptive solve chooses its steps, so it is not a word
on a grid); every score call still goes through one counter, :attr:`ProbabilityFlow.nfe`,
which the sampler reports. As a sampler it has the interface of every other family
(:class:`~splitsde.diffusion.protocols.SamplerProtocol`: ``plan``, then ``run``, ``nfe``,
``weak_order`` and ``exact_law`` on the plan), and its denoising step is the shared one
(:mod:`splitsde.diffusion.denoise`), run by :func:`splitsde.integrate`.

Uses: :class:`PFODESampler` (``pf-dopri5``, ``pf-rk4`` in ``splitsde compare``) and
:func:`reference`, the tight-tolerance endpoint (dopri5, ``rtol = 1e-10``) the order tests of
the exponential integrators measure against.

References: Song et al., *Score-based generative modeling through SDEs*, ICLR 2021 (the
probability-flow ODE); Dormand & Prince, J. Comput. Appl. Math. 6 (1980); Chen et al.,
torchdiffeq (NeurIPS 2018).
"""

from __future__ import annotations

import time as _time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import numpy as np
import sympy
import torch

from splitsde.diffusion import denoise as _denoise
from splitsde.diffusion.defaults import recommended_grid
from splitsde.diffusion.grids import check_grid, time_grid
from splitsde.diffusion.processes import ForwardProcess
from splitsde.diffusion.processes import process as get_process
from splitsde.diffusion.protocols import BudgetError, Law, SampleResult
from splitsde.symbolic.field import field_applications, field_of
from splitsde.symbolic.spellings import lambdify as _spell_lambdify
from splitsde.symbolic.symbols import t

__all__ = ["METHODS", "PFODE_SAMPLERS", "PFODEPlan", "PFODESampler", "ProbabilityFlow", "reference"]

#: torchdiffeq methods and their field evaluations per step (``None``: adaptive).
METHODS: dict[str, int | None] = {
    "dopri5": None,
    "bosh3": None,
    "adaptive_heun": None,
    "rk4": 4,
    "midpoint": 2,
    "euler": 1,
}


class ProbabilityFlow:
    r"""The probability-flow ODE of ``process`` with the score callable ``score`` (the
    reverse-SDE field ``s``: blocks and reverse time in, one tensor per block out), as a
    torchdiffeq vector field ``f(tau, state)`` on a tuple of block tensors.

    ``nfe`` counts score calls (one per vector-field evaluation).
    """

    def __init__(self, process: ForwardProcess, score: Callable[..., Any]) -> None:
        self.process = process
        self.score = score
        self.nfe = 0
        rev = process.reverse(0.0)
        drift = rev.drift
        blocks = process.blocks
        values = {p: v for p in _parameters(drift) for k, v in rev.params.items() if p.name == k}
        score_syms = [sympy.Symbol(f"_s_{b.name}", real=True) for b in blocks]
        exprs = []
        for b in blocks:
            e = drift[b]
            repl = {}
            for app in field_applications(e):
                repl[app] = score_syms[field_of(app)[1]]
            exprs.append(e.xreplace(repl).xreplace(values))
        self._fns = [_spell_lambdify([t, *blocks, *score_syms], e, "math") for e in exprs]

    def __call__(self, tau: torch.Tensor, state: tuple[torch.Tensor, ...]) -> tuple:
        tau_f = float(tau)
        s = self.score(*state, tau_f)
        self.nfe += 1
        s = tuple(s) if isinstance(s, tuple | list) else (s,)
        out = []
        for fn, z in zip(self._fns, state):
            v = fn(tau_f, *state, *s)
            out.append(v if isinstance(v, torch.Tensor) else torch.full_like(z, float(v)))
        return tuple(out)

    def solve(
        self,
        y0: Mapping[str, torch.Tensor],
        taus: Sequence[float] | np.ndarray,
        *,
        method: str = "dopri5",
        rtol: float = 1e-5,
        atol: float = 1e-5,
    ) -> dict[str, torch.Tensor]:
        """The state at the last of the reverse times ``taus`` (from ``taus[0]``); fixed-grid
        methods step on ``taus``."""
        from torchdiffeq import odeint

        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}; methods: {', '.join(METHODS)}")
        names = self.process.block_names
        missing = [n for n in names if n not in y0]
        if missing:
            raise ValueError(f"the state misses block(s) {', '.join(missing)}")
        state = tuple(y0[n] for n in names)
        grid = torch.as_tensor(np.asarray(taus, np.float64), dtype=state[0].dtype)
        if METHODS[method] is None:
            grid = grid[[0, -1]]
            sol = odeint(self, state, grid, rtol=rtol, atol=atol, method=method)
        else:
            sol = odeint(self, state, grid, method=method)
        return {n: s[-1] for n, s in zip(names, sol)}


def _parameters(exprs: Mapping[Any, sympy.Expr]) -> set:
    from splitsde.symbolic.symbols import Parameter

    return {s for e in exprs.values() for s in e.free_symbols if isinstance(s, Parameter)}


def reference(
    process: str | ForwardProcess,
    score: Callable[..., Any],
    y0: Mapping[str, torch.Tensor],
    t_end: float,
    *,
    rtol: float = 1e-10,
    atol: float = 1e-10,
) -> dict[str, torch.Tensor]:
    """The probability-flow endpoint at diffusion time ``t_end`` from ``y0`` at ``T``:
    torchdiffeq dopri5 with tight tolerances (the reference of the order tests)."""
    proc = get_process(process)
    flow = ProbabilityFlow(proc, score)
    return flow.solve(y0, [0.0, proc.T - t_end], method="dopri5", rtol=rtol, atol=atol)


# ---------------------------------------------------------------------------------------------
# As a sampler
# ---------------------------------------------------------------------------------------------
@dataclass
class PFODEPlan:
    """A probability-flow solve compiled for one process, score and grid (or tolerance)."""

    sampler: PFODESampler
    process: ForwardProcess
    score: Callable[..., Any]
    grid: np.ndarray  # diffusion times T -> eps (fixed-grid methods; [T, eps] for adaptive)
    budget: int | None
    denoise: bool = True

    @property
    def tau(self) -> np.ndarray:
        return self.process.T - self.grid

    @property
    def steps(self) -> int:
        return len(self.grid) - 1

    @property
    def weak_order(self) -> int | None:
        return self.sampler.order

    @property
    def nfe(self) -> int | None:
        """Compiled NFE for fixed-grid methods (steps x stages + denoising); ``None`` for
        adaptive ones (measured by :meth:`run`)."""
        per = METHODS[self.sampler.method]
        if per is None:
            return None
        return self.steps * per + (1 if self.denoise else 0)

    def _solve(self, y0: Mapping[str, torch.Tensor], rtol: float) -> tuple[dict, int]:
        flow = ProbabilityFlow(self.process, self.score)
        out = flow.solve(y0, self.tau, method=self.sampler.method, rtol=rtol, atol=rtol)
        return out, flow.nfe

    def tolerance(self, y0: Mapping[str, torch.Tensor]) -> float:
        """Adaptive methods with a budget: the tightest tolerance (rtol = atol) whose solve
        from ``y0`` fits the budget (minus the denoising step).

        dopri5's cost is not monotone in the tolerance (a looser tolerance can take more
        evaluations when it forces step rejections), so the search does not assume it: it
        scans tolerances from 1 down in quarter decades, keeps the tightest one that fits,
        stops after four misses in a row (a decade), and then bisects (to 0.05 decades)
        between that tolerance and the next tighter one. A larger budget never gives a looser
        tolerance."""
        s = self.sampler
        if METHODS[s.method] is not None or self.budget is None:
            return s.rtol
        budget = self.budget - (1 if self.denoise else 0)
        costs: dict[float, int] = {}

        def cost(log_tol: float) -> int:
            if log_tol not in costs:
                costs[log_tol] = self._solve(y0, 10.0**log_tol)[1]
            return costs[log_tol]

        scan = [-0.25 * k for k in range(49)]  # 1 ... 1e-12
        best, misses = None, 0
        for k, lt in enumerate(scan):
            n = cost(lt)
            if n <= budget:
                best, misses = k, 0
                continue
            misses += 1
            if misses >= 4:
                break
        if best is None:
            n, lt = min((n, lt) for lt, n in costs.items())
            raise BudgetError(
                f"an NFE budget of {self.budget} is too small for {s.name}: the cheapest "
                f"tolerance tried (rtol = atol = {10.0**lt:.3g}) takes {n} score evaluations"
                + (" plus 1 for the denoising step" if self.denoise else "")
            )
        hi = scan[best]  # fits
        if best + 1 < len(scan):
            lo = scan[best + 1]  # tighter; does not fit (or was not reached)
            while hi - lo > 0.05:
                mid = 0.5 * (lo + hi)
                if cost(mid) <= budget:
                    hi = mid
                else:
                    lo = mid
        return 10.0**hi

    def run(
        self, y0: Mapping[str, torch.Tensor], *, seed: int = 0, progress: bool | None = None
    ) -> SampleResult:
        started = _time.perf_counter()
        tol = self.tolerance(y0)
        final, n = self._solve(y0, tol)
        results = []
        nfe_d = 0
        if self.denoise:
            den = _denoise.denoiser(self.process, self.score)
            res = _denoise.denoise(den, final, self.process, self.grid, seed)
            final, nfe_d = res.final, res.nfe
            results.append(res)
        return SampleResult(
            final,
            n + nfe_d,
            n,
            nfe_d,
            self.steps,
            self.grid,
            _time.perf_counter() - started,
            results,
            tolerance=tol,
        )

    def exact_law(self, mean0: Any, cov0: Any) -> Law:
        r"""The law of the output for Gaussian data (the solve is then linear in the initial
        state): the solve is probed on the zero state and the basis states (one batch), then
        :math:`m = A m_0 + c`, :math:`\Sigma = A\Sigma_0A^\top`. For adaptive methods the step
        sequence is the one chosen for the probe batch; :attr:`Law.nfe
        <splitsde.diffusion.protocols.Law.nfe>` is the score evaluations of that probe run."""
        m0 = torch.as_tensor(mean0, dtype=torch.float64)
        c0 = torch.as_tensor(cov0, dtype=torch.float64)
        nb = len(self.process.blocks)
        D = m0.numel()
        d = D // nb
        probe = torch.cat([torch.zeros(1, D, dtype=torch.float64), torch.eye(D)])
        names = self.process.block_names
        y0 = {n: probe[:, i * d : (i + 1) * d].clone() for i, n in enumerate(names)}
        res = self.run(y0)
        out = torch.cat([res.final[n] for n in self.process.block_names], dim=1)
        c = out[0]
        A = (out[1:] - c).T
        return Law(A @ m0 + c, A @ c0 @ A.T, "gaussian", nfe=res.nfe)


@dataclass(frozen=True)
class PFODESampler:
    """A torchdiffeq solve of the probability-flow ODE (then the usual denoising step).

    ``method`` is a torchdiffeq method (:data:`METHODS`); adaptive methods use ``rtol`` (=
    ``atol``) unless an NFE budget is given, which selects the tightest tolerance that fits.
    Fixed-grid methods step on the sampling grid. ``order`` is the declared order of the
    method. It runs on every process (the probability-flow ODE of any forward process).
    """

    name: str
    method: str = "dopri5"
    rtol: float = 1e-5
    order: int = 5
    description: str = ""
    reference: str = ""
    reconstructed: bool = False

    #: A whole-trajectory solve: its plans have no step integrator (see
    #: :class:`~splitsde.diffusion.protocols.SamplerProtocol`).
    stepwise: ClassVar[bool] = False

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; methods: {', '.join(METHODS)}")

    def check_process(self, process: ForwardProcess) -> None:
        """Every forward process has a probability-flow ODE: nothing to check."""

    def configure(self, **options: Any) -> PFODESampler:
        """Registry options: none (use :meth:`with_options` for ``rtol``)."""
        if options:
            raise ValueError(f"unknown sampler option(s) {sorted(options)}")
        return self

    def with_options(self, **changes: Any) -> PFODESampler:
        """A copy with some attributes changed (``rtol``, ``name``, ...)."""
        return replace(self, **changes)

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
        **options: Any,
    ) -> PFODEPlan:
        """Compile for a process, a score and a grid; adaptive methods take an NFE budget
        ``nfe`` (or none: tolerance ``rtol``), fixed-grid ones ``nfe`` or ``steps`` on ``grid``
        (``None``: the recommended grid)."""
        if options:
            raise TypeError(
                f"{self.name} is not a splitting integrator; it takes no integrator options "
                f"({', '.join(options)})"
            )
        proc = get_process(process)
        per = METHODS[self.method]
        if per is None:
            if steps is not None:
                raise ValueError(f"{self.name} is adaptive: give nfe= (a budget) or neither")
            ts = check_grid(proc, [proc.T, proc.eps if eps is None else eps], eps)
            return PFODEPlan(self, proc, score, ts, nfe, denoise)
        if grid is None:
            grid = recommended_grid(self.name, proc, eps)
        if isinstance(grid, str):
            if (nfe is None) == (steps is None):
                raise ValueError("give exactly one of nfe= and steps=")
            if nfe is not None:
                steps = (int(nfe) - (1 if denoise else 0)) // per
                if steps < 1:
                    raise BudgetError(
                        f"an NFE budget of {nfe} is too small for {self.name}: one step costs "
                        f"{per} score evaluations"
                        + (" plus 1 for the denoising step" if denoise else "")
                    )
            ts = time_grid(proc, grid, steps, eps, sampler=self.name)
        else:
            ts = check_grid(proc, grid, eps)
        return PFODEPlan(self, proc, score, ts, nfe, denoise)

    def weak_order_for(self, process: ForwardProcess) -> int | None:
        """The declared order of the method (the same on every process)."""
        return self.order

    def __str__(self) -> str:
        return f"{self.name}: torchdiffeq {self.method} on the probability-flow ODE"


def _pf(name: str, method: str, order: int, what: str) -> PFODESampler:
    return PFODESampler(
        name,
        method=method,
        order=order,
        description=what,
        reference="Song et al., ICLR 2021; Dormand & Prince (1980); torchdiffeq",
    )


#: The probability-flow family (listed in :data:`splitsde.diffusion.registry.SAMPLERS`).
PFODE_SAMPLERS: dict[str, PFODESampler] = {
    s.name: s
    for s in [
        _pf("pf-dopri5", "dopri5", 5, "adaptive Dormand-Prince 5(4) on the probability-flow ODE"),
        _pf("pf-rk4", "rk4", 4, "classical RK4 (3/8 rule) on the probability-flow ODE grid"),
    ]
}
