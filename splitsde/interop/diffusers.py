r"""diffusers interop: any registered VP splitsde sampler as a diffusers scheduler.

:class:`SplitsdeScheduler` follows the scheduler protocol of diffusers (``SchedulerMixin`` and
``ConfigMixin``: ``set_timesteps``, ``step``, ``scale_model_input``, ``init_noise_sigma``,
``timesteps``, ``order``, ``add_noise``, ``save_pretrained`` / ``from_config``), so a pipeline
with an :math:`\varepsilon`-prediction UNet (``DDPMPipeline``, ``DDIMPipeline``, ...) samples
with a splitsde sampler::

    from diffusers import DDPMPipeline
    from splitsde.interop.diffusers import SplitsdeScheduler

    pipe = DDPMPipeline(unet, SplitsdeScheduler(sampler="deis-tab3"))
    images = pipe(num_inference_steps=10, output_type="np").images

(``DDIMPipeline`` rebuilds its scheduler as a ``DDIMScheduler`` when it is constructed; assign
``pipe.scheduler = SplitsdeScheduler(...)`` after construction.)

**Schedule and time.** The UNet was trained on a discrete schedule
:math:`\bar\alpha_i`, :math:`i = 0, \dots, N - 1` (diffusers' own, from the config's betas).
The scheduler runs the continuous VP process :math:`dx = -\tfrac12\beta(t)x\,dt +
\sqrt{\beta(t)}\,dW` with :math:`\beta(t) = N\beta_{\text{start}} + t\,N(\beta_{\text{end}} -
\beta_{\text{start}})` and maps timestep :math:`i` to the diffusion time :math:`t_i` with
:math:`\bar\alpha(t_i) = \bar\alpha_i` (vectorised bisection in float64), so the network is
always evaluated on the marginal it was trained for. Samplers whose coefficients depend only on
:math:`\bar\alpha` at the step ends (DDIM, DEIS in :math:`\rho`, iPNDM) reproduce the discrete
schedule exactly; samplers that integrate inside a step (EM, DEIS tAB) see the continuous
:math:`\beta(t)` between the timesteps. An evaluation between timesteps (a Runge--Kutta stage)
gets the fractional timestep interpolated linearly in :math:`\log\bar\alpha_i`.

**Steps.** ``set_timesteps(n)`` picks ``n`` timesteps with the config's ``timestep_spacing``
(``"leading"``, ``"trailing"``, ``"linspace"``: the conventions of diffusers' schedulers, Lin
et al., *Common diffusion noise schedules and sample steps are flawed*, 2024, table 2). The
sampler runs from :math:`t(\text{timesteps}_0)` through every timestep. The last step goes to
the schedule's final :math:`\bar\alpha`: 1 with ``set_alpha_to_one`` (diffusion time 0), where
it is one DDIM step -- exponential Euler with :math:`\varepsilon` frozen -- which lands on the
denoised estimate :math:`\hat x_0 = (x - \sqrt{1 - \bar\alpha}\,\varepsilon)/\sqrt{\bar\alpha}`,
as every diffusers scheduler ends; otherwise :math:`\bar\alpha_0`, reached by a step of the
sampler itself. ``timesteps`` lists one entry per network evaluation: ``n`` for the
one-evaluation samplers, the Runge--Kutta stages in between for ``rhork-*`` (then ``order`` is
the evaluations per step, like diffusers' Heun scheduler).

**Running one step at a time.** diffusers' pipeline owns the loop; splitsde's one loop is
:func:`splitsde.integrate`. The scheduler runs the sampler's plan through ``integrate`` in a
worker thread whose score field hands every network evaluation to the pipeline: ``step``
passes the pipeline's model output in and returns the state at which the sampler wants the
next evaluation (``prev_sample``). The pipeline's ``sample`` is adopted at every evaluation,
so a pipeline that edits the sample between steps (inpainting) is followed. History of
multistep samplers (DEIS, iPNDM) lives in that run: it persists across ``step`` calls and a
new ``set_timesteps`` starts a new run. Stochastic samplers draw from the pipeline's
``generator`` (else from ``torch.Generator().manual_seed(seed)``).

References: von Platen et al., *Diffusers: state-of-the-art diffusion models* (2022); Song,
Meng & Ermon, *DDIM*, ICLR 2021; Zhang & Chen, *DEIS*, ICLR 2023.
"""

from __future__ import annotations

import queue
import threading
from typing import Any, ClassVar

import numpy as np
import torch

from splitsde.base.optional import require

require("diffusers", extra="diffusers", feature="splitsde.interop.diffusers")
from diffusers import DDPMScheduler  # noqa: E402  (installed: require passed)
from diffusers.configuration_utils import ConfigMixin, register_to_config  # noqa: E402
from diffusers.schedulers.scheduling_utils import (  # noqa: E402
    KarrasDiffusionSchedulers,
    SchedulerMixin,
    SchedulerOutput,
)

import splitsde.diffusion as dm  # noqa: E402
from splitsde.base.errors import SplitsdeError  # noqa: E402
from splitsde.diffusion.grids import _invert_noise_level  # noqa: E402
from splitsde.diffusion.kernels import evaluation_labels  # noqa: E402
from splitsde.runtime.integrate import integrate  # noqa: E402
from splitsde.runtime.noise import GaussianNoise  # noqa: E402

__all__ = ["SPACINGS", "SchedulerError", "SplitsdeScheduler", "spaced_timesteps"]

#: Timestep spacings (diffusers' conventions).
SPACINGS = ("leading", "trailing", "linspace")


class SchedulerError(SplitsdeError, ValueError):
    """A scheduler configuration or call the splitsde scheduler cannot serve."""


def spaced_timesteps(
    n: int, num_train_timesteps: int, spacing: str = "leading", offset: int = 0
) -> np.ndarray:
    """``n`` decreasing integer timesteps in ``[0, num_train_timesteps)`` with diffusers'
    spacing conventions: ``leading`` (multiples of ``N // n`` from 0, plus ``offset``),
    ``trailing`` (from ``N - 1`` down in strides of ``N / n``), ``linspace`` (``n`` rounded
    points of ``[0, N - 1]``)."""
    N = int(num_train_timesteps)
    if not 1 <= n <= N:
        raise SchedulerError(f"num_inference_steps must lie in [1, {N}], got {n}")
    if spacing == "leading":
        ts = np.arange(n, dtype=np.int64)[::-1] * (N // n) + int(offset)
    elif spacing == "trailing":
        ts = np.round(np.arange(N, 0, -N / n)).astype(np.int64) - 1
    elif spacing == "linspace":
        ts = np.round(np.linspace(0, N - 1, n))[::-1].astype(np.int64)
    else:
        raise SchedulerError(f"unknown timestep_spacing {spacing!r}; use one of {SPACINGS}")
    if np.any(ts < 0) or np.any(ts >= N):
        raise SchedulerError(f"timesteps leave [0, {N}) (steps_offset = {offset})")
    return ts


class _Cancelled(Exception):
    """Raised inside the worker when its run is abandoned (a new ``set_timesteps``)."""


class _Bridge:
    """One sampling run in a worker thread. The score field of the run blocks until the
    pipeline hands over the model output; ``exchange`` passes one output in and returns the
    worker's next request (an evaluation state) or its final state."""

    def __init__(self, scheduler: SplitsdeScheduler) -> None:
        self.scheduler = scheduler
        self.requests: queue.Queue = queue.Queue()
        self.replies: queue.Queue = queue.Queue()
        self.thread: threading.Thread | None = None
        self.pending: tuple[torch.Tensor, float] | None = None
        self.finished = False
        self.calls = 0

    # -- worker side ------------------------------------------------------------------------
    def network(self, x: torch.Tensor, time: torch.Tensor) -> torch.Tensor:
        """The "network" of the run's :class:`~splitsde.diffusion.ScoreModel`: called with
        the state and the diffusion time, it returns the pipeline's model output there."""
        s = self.scheduler
        want = s._expected[self.calls] if self.calls < len(s._expected) else None
        got = float(time[0])
        tol = 8 * torch.finfo(time.dtype).eps * max(1.0, abs(want or 0.0))  # time's dtype
        if want is None or abs(got - want) > tol:
            # integrate replays steps after non-finite values; the pipeline cannot
            raise FloatingPointError(
                "the sampler's state became non-finite (a run replay asked for evaluation "
                f"{self.calls} at t = {got:.6g} again)"
            )
        self.calls += 1
        self.requests.put(("eval", x, got))
        kind, value = self.replies.get()
        if kind == "cancel":
            raise _Cancelled
        return value

    def _run(self, y0: torch.Tensor, noise: GaussianNoise) -> None:
        s = self.scheduler
        try:
            x = y0
            if s._plan is not None:
                res = integrate(
                    s._plan.integrator,
                    {"x": x},
                    grid=s._plan.tau,
                    noise=noise,
                    progress=False,
                    check_every=len(s._plan.tau),
                )
                x = res.final["x"]
            if s._final is not None:
                final, grid = s._final
                x = integrate(final, {"x": x}, grid=grid, seed=0, progress=False).final["x"]
            self.requests.put(("done", x, None))
        except _Cancelled:
            return
        except BaseException as err:  # handed to the pipeline's thread
            self.requests.put(("error", err, None))

    # -- pipeline side ----------------------------------------------------------------------
    def start(self, sample: torch.Tensor, generator: torch.Generator | None) -> None:
        if generator is None:
            generator = torch.Generator(device=sample.device).manual_seed(self.scheduler.seed)
        noise = GaussianNoise(generator)
        self.thread = threading.Thread(
            target=self._run, args=(sample.clone(), noise), daemon=True, name="splitsde-run"
        )
        self.thread.start()
        self._receive()

    def _receive(self) -> torch.Tensor | None:
        kind, value, tau = self.requests.get()
        if kind in ("error", "done"):
            self.finished = True
            self.pending = None
            self.thread.join()  # let the worker leave torch before anything else happens
            if kind == "error":
                raise value
            return value
        self.pending = (value, tau)
        return None

    def exchange(self, model_output: torch.Tensor, sample: torch.Tensor) -> torch.Tensor:
        """Hand ``model_output`` (at ``sample``) to the pending evaluation; the next state."""
        x, _ = self.pending
        if sample is not x:
            x.copy_(sample)  # the model saw the pipeline's sample: continue from it
        self.replies.put(("eps", model_output.to(dtype=x.dtype, device=x.device)))
        final = self._receive()
        if final is not None:
            return final
        return self.pending[0].clone()

    def cancel(self) -> None:
        if self.thread is not None and self.thread.is_alive() and not self.finished:
            self.replies.put(("cancel", None))
            self.thread.join(timeout=10)
        self.finished = True


class SplitsdeScheduler(SchedulerMixin, ConfigMixin):
    """A diffusers scheduler that samples with a registered VP splitsde sampler.

    Parameters (stored in the config, so ``save_pretrained`` / ``from_config`` round-trip)
    ----------
    sampler:
        A registered splitsde sampler that runs on VP (``"ddim"``, ``"deis-tab3"``,
        ``"ipndm"``, ``"em"``, ``"rhork-heun"``, ...; see :data:`splitsde.diffusion.SAMPLERS`).
    num_train_timesteps, beta_start, beta_end, beta_schedule, trained_betas:
        The discrete training schedule, as in diffusers' schedulers (``"linear"``,
        ``"scaled_linear"``, ``"squaredcos_cap_v2"``).
    timestep_spacing, steps_offset:
        How ``set_timesteps`` spaces the timesteps (diffusers' conventions).
    set_alpha_to_one:
        End at :math:`\\bar\\alpha = 1` with the denoised estimate (default), else at
        :math:`\\bar\\alpha_0`.
    prediction_type:
        ``"epsilon"`` (the network predicts the noise; the only type supported).
    seed:
        Seed of the sampler's noise when the pipeline passes no generator.
    """

    _compatibles: ClassVar[list[str]] = [e.name for e in KarrasDiffusionSchedulers]
    order = 1

    @register_to_config
    def __init__(
        self,
        sampler: str = "ddim",
        num_train_timesteps: int = 1000,
        beta_start: float = 0.0001,
        beta_end: float = 0.02,
        beta_schedule: str = "linear",
        trained_betas: np.ndarray | list[float] | None = None,
        timestep_spacing: str = "leading",
        steps_offset: int = 0,
        set_alpha_to_one: bool = True,
        prediction_type: str = "epsilon",
        seed: int = 0,
    ) -> None:
        if prediction_type != "epsilon":
            raise SchedulerError(
                f"prediction_type {prediction_type!r} is not supported; the splitsde scheduler "
                "needs a noise-prediction (epsilon) network"
            )
        if timestep_spacing not in SPACINGS:
            raise SchedulerError(
                f"unknown timestep_spacing {timestep_spacing!r}; use one of {SPACINGS}"
            )
        self.sampler = _vp_sampler(sampler)
        schedule = DDPMScheduler(
            num_train_timesteps=num_train_timesteps,
            beta_start=beta_start,
            beta_end=beta_end,
            beta_schedule=beta_schedule,
            trained_betas=trained_betas,
        )
        #: The discrete schedule (float64 copy of diffusers' own values).
        self.alphas_cumprod = schedule.alphas_cumprod.to(torch.float64)
        abar = self.alphas_cumprod.numpy()
        if not (np.all(abar > 0) and np.all(abar < 1) and np.all(np.diff(abar) < 0)):
            raise SchedulerError(
                "the schedule must have 0 < alpha_bar < 1, decreasing (zero terminal SNR "
                "schedules reach alpha_bar = 0 at the last timestep: not supported)"
            )
        self.process, self._t_of_step = _matched_process(
            abar, num_train_timesteps * beta_start, num_train_timesteps * beta_end
        )
        #: The noise-prediction "network" the sampler sees: the pipeline's model outputs.
        self._model = dm.ScoreModel(self._network, self.process, "eps", concat_dim=None)
        self.seed = int(seed)
        self.init_noise_sigma = 1.0
        self.num_inference_steps: int | None = None
        self.timesteps = torch.from_numpy(np.arange(num_train_timesteps)[::-1].copy())
        self._plan: Any = None
        self._final: Any = None
        self._bridge: _Bridge | None = None
        self._expected: list[float] = []
        self._index = 0

    # -- protocol -------------------------------------------------------------------------------
    def scale_model_input(self, sample: torch.Tensor, timestep: Any = None) -> torch.Tensor:
        """The network takes the sample as it is (VP, :math:`\\varepsilon`-prediction)."""
        return sample

    def set_timesteps(
        self, num_inference_steps: int, device: str | torch.device | None = None
    ) -> None:
        """Choose the timesteps, compile the sampler for them and start a fresh run (the
        history of a multistep sampler starts anew)."""
        self._reset()
        cfg = self.config
        ts = spaced_timesteps(
            int(num_inference_steps),
            cfg.num_train_timesteps,
            cfg.timestep_spacing,
            cfg.steps_offset,
        )
        self.num_inference_steps = int(num_inference_steps)
        times = self._t_of_step[ts]
        T = self.process.T
        if cfg.set_alpha_to_one:
            grid, final_to_zero = times, True
        else:
            t_end = self._t_of_step[0]
            grid = times if times[-1] <= t_end else np.append(times, t_end)
            final_to_zero = False
        plan = None
        if len(grid) > 1:
            try:
                plan = dm.plan(self.sampler, self.process, self._model, grid=grid, denoise=False)
                plan.integrator.grid_coefficients(plan.tau)  # refused grids fail here, not later
            except ValueError as err:  # a grid too short for a multistep sampler, ...
                raise SchedulerError(f"sampler {self.sampler.name}: {err}") from None
        final = None
        if final_to_zero:  # one DDIM step to alpha_bar = 1: the denoised estimate
            ddim = dm.sampler("ddim").integrator(self.process, self._model)
            final = (ddim, np.array([T - grid[-1], T]))
        self._plan, self._final = plan, final
        labels = _evaluation_times(plan) if plan is not None else []
        if final is not None:
            labels.append(float(grid[-1]))
        elif len(labels) < len(ts):
            # leading spacing ends at timestep 0 = the final alpha_bar: the last evaluation
            # is taken (the pipeline makes it) and the sample is returned unchanged
            labels.append(float(grid[-1]))
        self._expected = labels
        steps = self._timestep_values(np.asarray(labels), ts)
        self.timesteps = torch.from_numpy(steps).to(device)
        per = plan.integrator.program.evaluations_per_step() if plan is not None else 1
        self.order = int(per) if per else 1

    def step(
        self,
        model_output: torch.Tensor,
        timestep: Any,
        sample: torch.Tensor,
        generator: torch.Generator | None = None,
        return_dict: bool = True,
        eta: float = 0.0,
        **kwargs: Any,
    ) -> SchedulerOutput | tuple[torch.Tensor]:
        """One network evaluation of the sampler: ``model_output`` is the noise prediction at
        ``sample`` and ``timestep``; returns the state of the next evaluation (or the final
        samples). ``generator`` (first call) seeds the sampler's noise; ``eta`` must be 0 (the
        sampler's own noise is used: choose ``ddpm`` or ``em`` for stochastic sampling)."""
        if self.num_inference_steps is None:
            raise SchedulerError("call set_timesteps before step")
        if eta:
            raise SchedulerError(
                f"eta = {eta} is a DDIMScheduler option; choose a stochastic splitsde sampler "
                "(ddpm, em, ei-sde, ...) instead"
            )
        if self._index >= len(self._expected):
            raise SchedulerError(
                f"all {len(self._expected)} evaluations of this run were made; call "
                "set_timesteps to sample again"
            )
        want = self.timesteps[self._index]
        if float(timestep) != float(want):
            raise SchedulerError(
                f"step {self._index} expects timestep {float(want):g}, got {float(timestep):g} "
                "(use scheduler.timesteps in order)"
            )
        if self._index == 0:
            self._bridge = _Bridge(self)
            if self._plan is None and self._final is None:
                self._bridge.finished = True
            else:
                self._bridge.start(sample, generator)
        self._index += 1
        bridge = self._bridge
        if bridge.finished:  # the evaluation at alpha_bar_0 = the final alpha_bar
            out = sample
        else:
            out = bridge.exchange(model_output, sample)
        if not return_dict:
            return (out,)
        return SchedulerOutput(prev_sample=out)

    def add_noise(
        self, original_samples: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor
    ) -> torch.Tensor:
        """The forward kernel at integer ``timesteps``:
        :math:`\\sqrt{\\bar\\alpha_i}\\,x_0 + \\sqrt{1 - \\bar\\alpha_i}\\,n`."""
        abar = self.alphas_cumprod[timesteps.to("cpu").long()]
        shape = (-1,) + (1,) * (original_samples.ndim - 1)
        a = abar.sqrt().reshape(shape).to(original_samples)
        s = (1 - abar).sqrt().reshape(shape).to(original_samples)
        return a * original_samples + s * noise

    def __len__(self) -> int:
        return self.config.num_train_timesteps

    # -- internals ------------------------------------------------------------------------------
    def _network(self, x: torch.Tensor, time: torch.Tensor) -> torch.Tensor:
        return self._bridge.network(x, time)

    def _reset(self) -> None:
        if self._bridge is not None:
            self._bridge.cancel()
        self._bridge = None
        self._index = 0

    def _timestep_values(self, labels: np.ndarray, spaced: np.ndarray) -> np.ndarray:
        """Timestep of every evaluation: the spaced integer timesteps when the evaluations are
        exactly at them, else fractional timesteps (linear in log alpha_bar)."""
        t_eval = labels
        if len(t_eval) == len(spaced) and np.allclose(
            t_eval, self._t_of_step[spaced], rtol=1e-12, atol=1e-15
        ):
            return spaced
        i = np.arange(len(self._t_of_step), dtype=np.float64)
        return np.interp(-np.log(self._abar_at(t_eval)), -np.log(self.alphas_cumprod.numpy()), i)

    def _abar_at(self, t: np.ndarray) -> np.ndarray:
        a, _ = self.process.data_kernel(np.asarray(t, np.float64))
        return a[..., 0] ** 2

    def __repr__(self) -> str:
        return f"SplitsdeScheduler({self.sampler.name}, {self.config.num_train_timesteps} steps)"


def _vp_sampler(name: str) -> dm.Sampler:
    """The registered sampler ``name`` if it runs step by step on a one-block VP process."""
    try:
        s = dm.sampler(name)
    except ValueError as err:
        raise SchedulerError(str(err)) from None
    if not s.stepwise:
        raise SchedulerError(
            f"sampler {s.name} solves the whole trajectory with torchdiffeq; the diffusers "
            "protocol needs a step-wise sampler"
        )
    try:
        s.check_process(dm.vp())
    except ValueError as err:
        raise SchedulerError(f"sampler {s.name} does not run on VP: {err}") from None
    return s


def _matched_process(
    abar: np.ndarray, beta_min: float, beta_max: float
) -> tuple[dm.ForwardProcess, np.ndarray]:
    """A linear-beta VP process covering the schedule, and the diffusion time of every
    timestep (``alpha_bar(t_i) = abar_i``, bisection in float64)."""

    def t_of(a: np.ndarray) -> np.ndarray:  # closed form of the linear schedule's clock
        L = -np.log(a)
        if beta_max == beta_min:
            return L / beta_min
        return (np.sqrt(beta_min**2 + 2 * (beta_max - beta_min) * L) - beta_min) / (
            beta_max - beta_min
        )

    lo, hi = float(t_of(abar[:1])[0]), float(t_of(abar[-1:])[0])
    proc = dm.vp(beta_min, beta_max, T=hi * (1 + 1e-6), eps=lo * (1 - 1e-6))
    sig = np.sqrt((1 - abar) / abar)
    times = _invert_noise_level(proc, sig, proc.eps, proc.T)
    proc = dm.vp(beta_min, beta_max, T=float(times[-1]), eps=float(times[0]))
    return proc, times


def _evaluation_times(plan: Any) -> list[float]:
    """Diffusion times of the plan's network evaluations, in run order."""
    prog = plan.integrator.program
    if prog.uniform_draws or any(e.mask is not None for e in prog.evals):
        raise SchedulerError(
            f"sampler {plan.sampler.name} evaluates the network a random number of times per "
            "step; a diffusers pipeline needs a fixed list of timesteps"
        )
    labels = evaluation_labels(plan.integrator, plan.tau)
    if any(label is None for _, label in labels):
        raise SchedulerError(
            f"sampler {plan.sampler.name}: the times of its network evaluations are not known "
            "before the run"
        )
    return [plan.process.T - label for _, label in labels]
