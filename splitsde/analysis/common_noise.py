r"""Common random numbers across step sizes: one Brownian path, coarsened.

Monte Carlo estimates of a weak error at several steps :math:`h` are differences of averages
that are close to each other; with independent noise at every :math:`h` each average carries
its full variance and a small bias drowns in it. :class:`CommonNoise` drives every run of a
ladder with **the same Brownian path**, defined on a hierarchy of grids with spacings
:math:`\Delta_0 > \Delta_1 > \dots > \Delta_K = \delta` (each an integer multiple
:math:`m_\ell` of the next): the increments over the coarsest intervals are drawn first,
:math:`\Delta W = \sqrt{\Delta_0}\,z`, and every level splits each increment :math:`S` into
:math:`m` sub-increments with the right conditional law (the Brownian bridge, Lévy's
construction):

.. math:: \Delta W_j = \frac{S}{m} + \sqrt{\Delta_\ell}\,(H w)_j, \qquad
          w \sim \mathcal N(0, I_{m-1}),

with :math:`H` an orthonormal basis of the vectors of :math:`\mathbb R^m` summing to zero (a
Helmert basis). A draw of the step program standing for the increment over :math:`[a, b]` is

.. math:: \xi = \frac{1}{\sqrt{b-a}} \sum_{[a, b]} \Delta W_j ,

so a coarse increment is exactly the sum of the fine ones. Each draw is a standard normal and
draws over disjoint intervals are independent, so every run has exactly the law of a run with
independent noise; only runs at different :math:`h` become correlated, which is what makes
their differences precise. A run whose draws lie on level :math:`k` generates levels
:math:`0..k` only, so for a nested ladder (every step a multiple of the next) the coarse runs
cost about as many normals as with independent noise. The estimator measures the gain
(:attr:`~splitsde.analysis.montecarlo.WeakOrderResult.variance_reduction`).

Brownian coordinates are keyed by (letter, block, channel): every flow gets its own Brownian
motion per block (two flows with noise on the same block are independent), and a second draw
of the same flow and block over an overlapping interval of the same step (a solver that draws
two normals for one slice) gets a further channel. Each coordinate has its own generator,
seeded from ``(seed, letter, block, channel, level)``, so two words on the same SDE share the
path of every coordinate they both use. Runs that should share the path must use the same
``seed``, ``levels`` and ``t0``. Uniform draws (Metropolis tests, random selections) come from
a separate generator and are not coupled across runs.

Reference: common random numbers for weak-error estimation, Glasserman, *Monte Carlo Methods
in Financial Engineering* (Springer 2004), sec. 3.1 (Brownian bridge construction), 4.1 and
7.1 (differences of estimators under a common Brownian path); Giles, Oper. Res. 56 (2008) 607
(coarse increments as sums of fine ones).
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

from splitsde.base.errors import SplitsdeError
from splitsde.compose.program import Draw
from splitsde.compose.visitor import draws_by_substep
from splitsde.runtime.noise import NoiseSource
from splitsde.symbolic.symbols import h as H
from splitsde.symbolic.symbols import t as T

__all__ = [
    "CommonNoise",
    "CommonNoiseError",
    "brownian_levels",
    "derived_seed",
    "draw_fractions",
    "fine_step",
]


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
    return [
        (s, program.substeps[k].occurrence.letter)
        for s, k in draws_by_substep(program.statements)
        if s.kind == "normal"
    ]


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


def _ratio(a: float, b: float) -> int | None:
    """``a / b`` when it is an integer (to round-off), else ``None``."""
    r = a / b
    n = round(r)
    return n if n >= 1 and abs(r - n) <= 1e-9 * r else None


def brownian_levels(spacings: Sequence[float]) -> tuple[float, ...] | None:
    """The distinct ``spacings`` from coarse to fine if each is an integer multiple of the next
    (a hierarchy :class:`CommonNoise` can refine level by level), else ``None``."""
    out: list[float] = []
    for x in sorted(spacings, reverse=True):
        if out and _ratio(out[-1], x) == 1:
            continue
        if out and _ratio(out[-1], x) is None:
            return None
        out.append(float(x))
    return tuple(out)


def _helmert(m: int) -> np.ndarray:
    """An ``(m, m-1)`` orthonormal basis of the vectors summing to zero."""
    H = np.zeros((m, m - 1))
    for j in range(1, m):
        H[:j, j - 1] = 1.0 / math.sqrt(j * (j + 1))
        H[j, j - 1] = -j / math.sqrt(j * (j + 1))
    return H


class CommonNoise(NoiseSource):
    r"""Standard normals built from one Brownian path on a hierarchy of grids (see the module
    docstring).

    Parameters
    ----------
    integrator:
        The integrator whose program will be run (its draws are mapped to coordinates).
    seed:
        Seed of the path (every coordinate's and level's generator is derived from it).
    dt:
        The finest spacing :math:`\delta`; the run's step ``h`` and every draw boundary
        ``t0 + k h + f h`` must be multiples of it.
    h:
        The step of the run this source feeds (uniform grid).
    t0:
        Start time of the path (the run's start).
    levels:
        Spacings of the hierarchy, coarse to fine, each an integer multiple of the next and
        ending at ``dt``; the coarsest must be a multiple of ``h``. Default: ``(chunk * dt,
        dt)``.
    chunk:
        Only for the default ``levels``: fine intervals per coarsest interval.
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
        levels: Sequence[float] | None = None,
        chunk: int = 1,
    ) -> None:
        if not (dt > 0 and math.isfinite(dt)):
            raise CommonNoiseError(f"the fine interval must be positive, got {dt}")
        if _ratio(h, dt) is None:
            raise CommonNoiseError(
                f"the step h = {h:g} is not an integer multiple of the fine interval {dt:g} of "
                "the common Brownian path"
            )
        if int(chunk) != chunk or chunk < 1:
            raise CommonNoiseError(f"chunk must be a positive integer, got {chunk}")
        if levels is None:
            m = _ratio(h, dt)
            assert m is not None
            levels = (math.lcm(int(chunk), m) * dt, dt)
        chain = brownian_levels(levels)
        if chain is None or len(chain) != len(set(levels)):
            raise CommonNoiseError(
                f"levels {tuple(levels)} are not a chain of integer multiples, coarse to fine"
            )
        if _ratio(chain[-1], dt) != 1:
            raise CommonNoiseError(f"the finest level {chain[-1]:g} must be dt = {dt:g}")
        if _ratio(chain[0], h) is None:
            raise CommonNoiseError(
                f"the coarsest level {chain[0]:g} must be a multiple of the step h = {h:g}"
            )
        self.seed = int(seed)
        self.dt, self.h, self.t0 = float(dt), float(h), float(t0)
        self.levels = chain
        fractions = draw_fractions(integrator)
        per_step = _ratio(h, dt)
        assert per_step is not None
        for letter, block, a, b in fractions:
            for f in (a, b):
                if (f * per_step).denominator != 1:
                    raise CommonNoiseError(
                        f"the draw of {letter} on {block} starts or stops at {f} of the step, "
                        f"which is not on the fine grid (h = {h:g} is {per_step} fine "
                        f"intervals); use a fine interval that divides {f} h"
                    )
        # the coarsest level on which every draw boundary of this run lies
        self.level = len(chain) - 1
        for k, sp in enumerate(chain):
            n = _ratio(h, sp)
            if n is not None and all(
                (f * n).denominator == 1 for _, _, a, b in fractions for f in (a, b)
            ):
                self.level = k
                break
        self.spacing = chain[self.level]
        self.per_top = round(chain[0] / self.spacing)
        self._splits = [
            (
                round(chain[i - 1] / chain[i]),
                torch.from_numpy(_helmert(round(chain[i - 1] / chain[i]))),
            )
            for i in range(1, self.level + 1)
        ]
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
        self._gens: dict[tuple[str, str, int], list[torch.Generator]] = {}
        self._uniform: torch.Generator | None = None
        self._shapes: dict[tuple[str, str, int], tuple[int, ...]] = {}
        self._block = -1  # index of the coarsest interval held in _incr
        self._incr: dict[tuple[str, str, int], torch.Tensor] = {}  # its increments, level k
        self._device: torch.device | None = None

    # -- the path -------------------------------------------------------------------------------
    def _index(self, time: float) -> int:
        x = (time - self.t0) / self.spacing
        j = round(x)
        if abs(x - j) > 1e-6 * max(1.0, abs(x)) or j < 0:
            raise CommonNoiseError(
                f"a draw boundary at t = {time:.12g} is not on the grid t0 + k * {self.spacing:g} "
                f"(t0 = {self.t0:g})"
            )
        return j

    def _advance(self) -> None:
        """Generate the next coarsest interval's increments, refined down to this run's
        level: one call per level and coordinate, of a fixed size, so every run that uses a
        level consumes its generator identically."""
        self._block += 1
        for key in self.coords:
            gens, shape = self._gens[key], self._shapes[key]
            z = torch.randn(
                (1, *shape), generator=gens[0], dtype=torch.float64, device=self._device
            )
            W = z * math.sqrt(self.levels[0])
            for lvl, (m, basis) in enumerate(self._splits, start=1):
                n = W.shape[0]
                w = torch.randn(
                    (n, m - 1, *shape),
                    generator=gens[lvl],
                    dtype=torch.float64,
                    device=self._device,
                )
                bridge = torch.tensordot(basis.to(w.device), w, dims=([1], [1])).movedim(0, 1)
                W = (W.unsqueeze(1) / m + math.sqrt(self.levels[lvl]) * bridge).reshape(
                    n * m, *shape
                )
            self._incr[key] = W

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
                self._gens[key] = []
                for lvl in range(self.level + 1):
                    g = torch.Generator(device=like.device)
                    g.manual_seed(derived_seed(self.seed, *key[:2], key[2], lvl))
                    self._gens[key].append(g)
        dtype = like.dtype

        def draw(key: tuple[str, str, int], start: float, stop: float) -> torch.Tensor:
            a, b = self._index(start), self._index(stop)
            if b <= a:
                raise CommonNoiseError(f"empty draw interval [{start:.12g}, {stop:.12g}]")
            j = a // self.per_top
            if j < self._block or (b - 1) // self.per_top != j:
                raise CommonNoiseError(
                    "a draw went back before the current interval, or across two: the run is "
                    "not on the grid this common noise was built for"
                )
            while self._block < j:
                self._advance()
            off = j * self.per_top
            W = self._incr[key][a - off : b - off]
            return (W.sum(0) * (1.0 / math.sqrt((b - a) * self.spacing))).to(dtype)

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
            "generators": {k: [g.get_state() for g in v] for k, v in self._gens.items()},
            "uniform": None if self._uniform is None else self._uniform.get_state(),
            "increments": {k: v.clone() for k, v in self._incr.items()},
            "block": self._block,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for k, states in state["generators"].items():
            for g, st in zip(self._gens[k], states):
                g.set_state(st)
        if state["uniform"] is not None and self._uniform is not None:
            self._uniform.set_state(state["uniform"])
        self._incr = {k: v.clone() for k, v in state["increments"].items()}
        self._block = int(state["block"])
