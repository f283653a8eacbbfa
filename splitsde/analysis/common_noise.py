r"""Common random numbers across step sizes: one Brownian path, coarsened.

Monte Carlo estimates of a weak error at several steps :math:`h` are differences of averages
that are close to each other; with independent noise at every :math:`h` each average carries
its full variance and a small bias drowns in it. :class:`CommonNoise` drives every run of a
ladder with **the same Brownian path**: one standard normal per fine interval
:math:`[t_0 + j\,\delta, t_0 + (j+1)\,\delta]` and Brownian coordinate, and a draw of the step
program standing for the increment over :math:`[a, b]` (a multiple of :math:`\delta` at both
ends) is

.. math:: \xi = \frac{1}{\sqrt{(b-a)/\delta}} \sum_{j=a/\delta}^{b/\delta - 1} z_j ,

so the coarse increment :math:`\sqrt{b-a}\,\xi` is exactly the sum of the fine increments
:math:`\sqrt\delta\,z_j`. Each draw is a standard normal and draws over disjoint intervals are
independent, so every run has exactly the law of a run with independent noise; only the runs
at different :math:`h` become correlated, which is what makes their differences precise.
The estimator measures the gain (:attr:`~splitsde.analysis.montecarlo.WeakOrderResult.
variance_reduction`).

Brownian coordinates are keyed by (letter, block, channel): every flow gets its own Brownian
motion per block (two flows with noise on the same block are independent), and a second draw
of the same flow and block over an overlapping interval of the same step (a solver that draws
two normals for one slice) gets a further channel. Each coordinate has its own generator,
seeded from ``(seed, letter, block, channel)``, so two words on the same SDE share the path
of every coordinate they both use. The fine normals are generated ``chunk`` fine intervals at a
time; runs that should share the path must use the same ``seed``, ``dt``, ``chunk`` and
``t0``. Uniform draws (Metropolis tests, random selections) come from a separate generator and
are not coupled across runs.

Reference: common random numbers for weak-error estimation, Glasserman, *Monte Carlo Methods
in Financial Engineering* (Springer 2004), sec. 4.1 and 7.1 (differences of estimators under
a common Brownian path); Giles, Oper. Res. 56 (2008) 607 (coarse increments as sums of fine
ones).
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Sequence
from fractions import Fraction
from functools import partial
from typing import Any

import numpy as np
import sympy
import torch

from splitsde.compose.program import Draw, Mark
from splitsde.errors import SplitsdeError
from splitsde.noise import NoiseSource
from splitsde.symbolic.symbols import h as H
from splitsde.symbolic.symbols import t as T

__all__ = ["CommonNoise", "CommonNoiseError", "draw_fractions", "fine_step"]


class CommonNoiseError(SplitsdeError, ValueError):
    """A step or a draw does not lie on the fine grid of the common Brownian path."""


def derived_seed(*parts: int | str) -> int:
    """A 63-bit seed derived deterministically from integers and strings (independent streams
    for distinct inputs; strings hashed with CRC-32, not Python's salted ``hash``)."""
    ints = [zlib.crc32(p.encode()) if isinstance(p, str) else int(p) for p in parts]
    if any(i < 0 for i in ints):
        raise ValueError(f"seeds must be non-negative, got {parts}")
    state = np.random.SeedSequence(ints).generate_state(2, np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1]))


def _draw_letters(program: Any) -> list[tuple[Draw, str]]:
    """Every normal draw of the program with the letter of the sub-step it belongs to."""
    out, k = [], 0
    for s in program.statements:
        if isinstance(s, Draw) and s.kind == "normal":
            out.append((s, program.substeps[k].occurrence.letter))
        elif isinstance(s, Mark):
            k = s.substep + 1
    return out


def draw_fractions(integrator: Any) -> list[tuple[str, str, Fraction, Fraction]]:
    """``(letter, block, start, stop)`` of every normal draw, as exact fractions of the step."""
    out = []
    for d, letter in _draw_letters(integrator.program):
        fr = []
        for e in (d.start, d.stop):
            x = sympy.nsimplify(sympy.expand(e - T).xreplace({H: 1}))
            if not x.is_Rational:
                raise CommonNoiseError(
                    f"draw of {letter} on {d.like.name} covers [{d.start}, {d.stop}], not a fixed "
                    "fraction of the step: common random numbers need fixed fractions"
                )
            fr.append(Fraction(int(x.p), int(x.q)))
        out.append((letter, d.like.name, fr[0], fr[1]))
    return out


def fine_step(integrator: Any, h_min: float) -> tuple[float, int]:
    """The fine interval :math:`\\delta = h_{\\min}/L` on which every draw of a step of length
    ``h_min`` (or any integer multiple of it) starts and stops, and ``L``."""
    dens = [f.denominator for _, _, a, b in draw_fractions(integrator) for f in (a, b)]
    L = math.lcm(*dens) if dens else 1
    return h_min / L, L


class CommonNoise(NoiseSource):
    """Standard normals built from one fine-grid Brownian path (see the module docstring).

    Parameters
    ----------
    integrator:
        The integrator whose program will be run (its draws are mapped to coordinates).
    seed:
        Seed of the path (every coordinate's generator is derived from it).
    dt:
        The fine interval :math:`\\delta`; the run's step ``h`` and every draw boundary
        ``t0 + k h + f h`` must be multiples of it.
    h:
        The step of the run this source feeds (uniform grid).
    t0:
        Start time of the path (the run's start).
    chunk:
        Fine intervals generated per call (equal for all runs sharing the path).
    """

    takes_times = True

    def __init__(
        self,
        integrator: Any,
        *,
        seed: int,
        dt: float,
        h: float,
        t0: float = 0.0,
        chunk: int = 1,
    ) -> None:
        if not (dt > 0 and math.isfinite(dt)):
            raise CommonNoiseError(f"the fine interval must be positive, got {dt}")
        m = h / dt
        if not (m >= 1 - 1e-9 and abs(m - round(m)) <= 1e-9 * m):
            raise CommonNoiseError(
                f"the step h = {h:g} is not an integer multiple of the fine interval {dt:g} of "
                "the common Brownian path"
            )
        if int(chunk) != chunk or chunk < 1:
            raise CommonNoiseError(f"chunk must be a positive integer, got {chunk}")
        self.seed = int(seed)
        self.dt, self.h, self.t0 = float(dt), float(h), float(t0)
        self.per_step = round(m)
        self.chunk = int(chunk)
        fractions = draw_fractions(integrator)
        for letter, block, a, b in fractions:
            for f in (a, b):
                k = f * self.per_step
                if k.denominator != 1:
                    raise CommonNoiseError(
                        f"the draw of {letter} on {block} starts or stops at {f} of the step, "
                        f"which is not on the fine grid (h = {h:g} is {self.per_step} fine "
                        f"intervals); use a fine interval that divides {f} h"
                    )
        # channels: draws of one flow and block over overlapping intervals of one step
        self.keys: list[tuple[str, str, int]] = []
        taken: dict[tuple[str, str, int], list[tuple[Fraction, Fraction]]] = {}
        for letter, block, a, b in fractions:
            ch = 0
            while any(a < y and x < b for x, y in taken.get((letter, block, ch), [])):
                ch += 1
            taken.setdefault((letter, block, ch), []).append((a, b))
            self.keys.append((letter, block, ch))
        self.coords = sorted(set(self.keys))
        self._gens: dict[tuple[str, str, int], torch.Generator] = {}
        self._uniform: torch.Generator | None = None
        self._shapes: dict[tuple[str, str, int], tuple[int, ...]] = {}
        self._buf: dict[tuple[str, str, int], list[torch.Tensor]] = {}
        self._first = 0  # index of the first buffered chunk
        self._device: torch.device | None = None

    # -- the path -------------------------------------------------------------------------------
    def _generator(self, key: tuple[str, str, int], device: torch.device) -> torch.Generator:
        g = torch.Generator(device=device)
        g.manual_seed(derived_seed(self.seed, *key[:2], key[2]))
        return g

    def _index(self, time: float) -> int:
        x = (time - self.t0) / self.dt
        j = round(x)
        if abs(x - j) > 1e-6 * max(1.0, abs(x)) or j < 0:
            raise CommonNoiseError(
                f"a draw boundary at t = {time:.12g} is not on the fine grid t0 + k dt "
                f"(t0 = {self.t0:g}, dt = {self.dt:g})"
            )
        return j

    def _fine(self, key: tuple[str, str, int], a: int, b: int) -> torch.Tensor:
        """Fine normals ``[a, b)`` of one coordinate, shape ``(b - a, *shape)``."""
        buf = self._buf[key]
        # keep only the chunks of the current step window (draws never go back before it)
        step_start = (a // self.per_step) * self.per_step
        drop = step_start // self.chunk - self._first
        if drop > 0:
            for k in self.coords:
                del self._buf[k][:drop]
            self._first += drop
        while (self._first + len(buf)) * self.chunk < b:
            n = len(buf)
            for k in self.coords:
                if len(self._buf[k]) == n:  # every coordinate advances together
                    self._buf[k].append(
                        torch.randn(
                            (self.chunk, *self._shapes[k]),
                            generator=self._gens[k],
                            dtype=torch.float64,
                            device=self._device,
                        )
                    )
        c0, c1 = a // self.chunk - self._first, (b - 1) // self.chunk - self._first
        if c0 < 0:
            raise CommonNoiseError(
                "a draw went back before the current step: the run is not on the grid this "
                "common noise was built for"
            )
        block = buf[c0] if c0 == c1 else torch.cat(buf[c0 : c1 + 1])
        off = (self._first + c0) * self.chunk
        return block[a - off : b - off]

    def bind(
        self, shapes: Sequence[torch.Size], like: torch.Tensor
    ) -> list[Callable[[float, float], torch.Tensor]]:
        if len(shapes) != len(self.keys):
            raise CommonNoiseError(
                f"CommonNoise was built for a program with {len(self.keys)} draws, not "
                f"{len(shapes)}"
            )
        self._device = like.device
        for key, shape in zip(self.keys, shapes):
            shape = tuple(shape)
            if self._shapes.setdefault(key, shape) != shape:
                raise CommonNoiseError(
                    f"draws of {key[0]} on {key[1]} have different shapes {self._shapes[key]} "
                    f"and {shape}"
                )
        for key in self.coords:
            if key not in self._gens:
                self._gens[key] = self._generator(key, like.device)
                self._buf[key] = []
        dtype = like.dtype

        def draw(key: tuple[str, str, int], start: float, stop: float) -> torch.Tensor:
            a, b = self._index(start), self._index(stop)
            if b <= a:
                raise CommonNoiseError(f"empty draw interval [{start:.12g}, {stop:.12g}]")
            z = self._fine(key, a, b)
            return (z.sum(0) * (1.0 / math.sqrt(b - a))).to(dtype)

        return [partial(draw, key) for key in self.keys]

    def bind_uniform(
        self, shapes: Sequence[torch.Size], like: torch.Tensor
    ) -> list[Callable[[], torch.Tensor]]:
        """Uniforms from a separate generator (not coupled across runs)."""
        if self._uniform is None:
            self._uniform = torch.Generator(device=like.device)
            self._uniform.manual_seed(derived_seed(self.seed, "uniform"))
        out = []
        for shape in shapes:
            buf = torch.empty(shape, dtype=like.dtype, device=like.device)
            out.append(partial(torch.rand, tuple(shape), generator=self._uniform, out=buf))
        return out

    def state_dict(self) -> dict[str, Any]:
        return {
            "generators": {k: g.get_state() for k, g in self._gens.items()},
            "uniform": None if self._uniform is None else self._uniform.get_state(),
            "buffers": {k: [x.clone() for x in v] for k, v in self._buf.items()},
            "first": self._first,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for k, s in state["generators"].items():
            self._gens[k].set_state(s)
        if state["uniform"] is not None and self._uniform is not None:
            self._uniform.set_state(state["uniform"])
        self._buf = {k: [x.clone() for x in v] for k, v in state["buffers"].items()}
        self._first = int(state["first"])
