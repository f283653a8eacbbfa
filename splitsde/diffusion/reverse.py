r"""The reverse-time SDE family of a forward process, split into named sub-flows.

Sampling runs in reverse time :math:`\tau = T - t` from the prior at :math:`\tau = 0`. For a
forward process :math:`dz = F(t) z\,dt + G(t)\,dW`, :math:`G = \operatorname{diag}(g_b)`, and a
per-block noise scale :math:`\lambda_b \ge 0`, the family

.. math::
    d\bar z_b = \Big[-\big(F\bar z\big)_b + \tfrac{1+\lambda_b^2}{2}\,g_b^2\,s_b(\bar z, t)\Big]
    d\tau + \lambda_b\,g_b\,d\bar W_b, \qquad t = T - \tau,

has the forward marginals for every :math:`\lambda` (the extra noise
:math:`(\lambda_b^2 - 1) g_b^2/2` is compensated by the same multiple of the score, which is the
Fokker--Planck identity :math:`\tfrac12\nabla\cdot(D p) = \tfrac12 D\,p\,\nabla\log p`):
:math:`\lambda = 1` is the reverse SDE (Anderson 1982; Song et al. 2021), :math:`\lambda = 0`
the probability-flow ODE. Noise regulation (Pandey, Rudolph & Mandt 2024) scales the data block
only.

The drift of each block is the sum of named **parts**:

==============  =============================================================================
``friction``    :math:`-F_{bb}\,\bar z_b`
``coupling``    :math:`-\sum_{c \ne b} F_{bc}\,\bar z_c`
``score``       :math:`c_b\,s_b`, :math:`c_b = \tfrac{1+\lambda_b^2}{2} g_b^2`
``linear``      ``friction + coupling``
``drift``       ``friction + coupling + score``
``linear_ref``  ``linear`` :math:`- c_b\,\bar z_b / v_b` (:math:`v_b` the stationary variance)
``score_ref``   :math:`c_b\,(s_b + \bar z_b / v_b)`: the score minus the stationary score
==============  =============================================================================

and ``noise`` is :math:`\lambda_b g_b\,d\bar W_b`. A **split** assigns parts of blocks to
letters; every part is used exactly once (``linear_ref`` together with ``score_ref``), which
:class:`~splitsde.symbolic.sde.SDE` checks against the full reverse drift and noise. Named
splits:

* ``"full"`` -- one flow ``R`` (Euler--Maruyama),
* ``"sscs"`` -- ``A`` = every ``linear_ref`` and noise (an Ornstein--Uhlenbeck flow, exact),
  ``S`` = every ``score_ref`` (Dockhorn, Vahdat & Kreis, ICLR 2022),
* ``"abo-ou"`` -- the reverse of each piece of the forward process: ``A`` = the data block's
  drift and noise, ``B`` = the momentum's coupling to the data (the force kick
  :math:`\tfrac\beta2\bar x`), ``O`` = the momentum's Ornstein--Uhlenbeck part: friction, the
  score term that compensates its noise, and the noise **(reconstructed; the splitting samplers'
  default)**,
* ``"abo"`` -- ``A`` as above, ``B`` = the momentum's whole drift, ``O`` = the momentum noise
  alone,
* ``"abo-friction"`` -- as ``"abo"`` with the momentum friction moved into ``O`` (an
  Ornstein--Uhlenbeck flow without the score).

Why ``"abo-ou"`` keeps the score with the noise: the score term of block :math:`b` is the time
reversal of that block's forward noise (its coefficient :math:`\tfrac{1+\lambda_b^2}{2} g_b^2`
vanishes with :math:`g_b`), and ``O`` of ``"abo-ou"`` is the time-reversal formula applied to
the forward momentum Ornstein--Uhlenbeck flow alone (``B`` and ``A`` likewise to the rest). A
sub-flow holding the noise without its score spreads the density and leaves a later sub-flow to
contract it. In ``"abo"`` the word ``OBA`` adds the momentum noise and then applies the whole
contracting drift to it within the same step. For the momentum dynamics alone under the
stationary score this scales the stationary variance by
:math:`\tfrac{2(1-a)^2}{2-a} = 1 - \tfrac32 a + O(a^2)`, :math:`a = \tfrac12\beta\nu h`, where
Euler--Maruyama (and ``O`` of ``"abo-ou"``) gives :math:`\tfrac{1}{1 - a/2} = 1 + \tfrac12 a +
O(a^2)`: a three times larger first-order bias of the opposite sign. With the coupling, one
step of reduced ``OBA`` on ``"abo"`` keeps 47 % of the stationary data variance at
:math:`h = 0.02`; on ``"abo-ou"`` the data variance error is second order on CLD, with a small
first-order part from the data block's :math:`\Gamma` terms on PSLD
(``tests/diffusion/test_splitting.py`` computes both from the compiled steps).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from functools import cached_property
from typing import TYPE_CHECKING

import sympy

from splitsde.symbolic.field import Field
from splitsde.symbolic.flow import Flow
from splitsde.symbolic.parse import as_expression
from splitsde.symbolic.sde import SDE
from splitsde.symbolic.symbols import Block, Parameter, t

if TYPE_CHECKING:
    from splitsde.diffusion.protocols import ProcessLike

__all__ = ["PARTS", "SPLITS", "ReverseSDE", "SplitSpec"]

#: The drift parts of a block and the atoms each one covers (``ref`` counts with its sign).
PARTS: dict[str, dict[str, int]] = {
    "friction": {"friction": 1},
    "coupling": {"coupling": 1},
    "score": {"score": 1},
    "linear": {"friction": 1, "coupling": 1},
    "drift": {"friction": 1, "coupling": 1, "score": 1},
    "linear_ref": {"friction": 1, "coupling": 1, "ref": -1},
    "score_ref": {"score": 1, "ref": 1},
}

#: A split: letter -> list of (block name or "*", part); part "noise" is the block's noise.
SplitSpec = Mapping[str, Sequence[tuple[str, str]]]

SPLITS: dict[str, SplitSpec] = {
    "full": {"R": [("*", "drift"), ("*", "noise")]},
    "sscs": {"A": [("*", "linear_ref"), ("*", "noise")], "S": [("*", "score_ref")]},
    "abo-ou": {
        "A": [("x", "drift"), ("x", "noise")],
        "B": [("m", "coupling")],
        "O": [("m", "friction"), ("m", "score"), ("m", "noise")],
    },
    "abo": {
        "A": [("x", "drift"), ("x", "noise")],
        "B": [("m", "drift")],
        "O": [("m", "noise")],
    },
    "abo-friction": {
        "A": [("x", "drift"), ("x", "noise")],
        "B": [("m", "coupling"), ("m", "score")],
        "O": [("m", "friction"), ("m", "noise")],
    },
}


def _exact_number(v: float) -> sympy.Expr:
    """A float as an exact rational where it is a short decimal (0.1 -> 1/10)."""
    return sympy.Rational(repr(float(v)))


class ReverseSDE:
    r"""The reverse-time family of ``process`` with per-block noise scales ``lam``.

    Parameters
    ----------
    process:
        The forward process.
    lam:
        :math:`\lambda \ge 0`, one number for every block or a mapping ``block name -> value``
        (blocks left out get 1).

    Notes
    -----
    The score is the field ``s`` with one output per block, depending on every block and on
    time; its callable receives the loop's (reverse) time :math:`\tau` as a Python float.
    """

    def __init__(self, process: ProcessLike, lam: float | Mapping[str, float] = 1.0) -> None:
        self.process = process
        names = process.block_names
        if isinstance(lam, Mapping):
            unknown = set(lam) - set(names)
            if unknown:
                raise ValueError(f"lam names unknown block(s) {sorted(unknown)}; blocks: {names}")
            lams = {n: float(lam.get(n, 1.0)) for n in names}
        else:
            lams = dict.fromkeys(names, float(lam))
        for n, v in lams.items():
            if not (v >= 0 and math.isfinite(v)):
                raise ValueError(
                    f"noise scale lambda of block {n} must be finite and >= 0, got {v}"
                )
        self.lam = lams
        self.T = Parameter("T", positive=True)
        self._sdes: dict[str, SDE] = {}
        self.score = Field(
            "s",
            process.blocks,
            time=True,
            outputs=list(names),
            description=f"score of the {process.name} marginals, called with reverse time",
        )

    # -- the family -------------------------------------------------------------------------------
    @property
    def blocks(self) -> tuple[Block, ...]:
        return self.process.blocks

    @property
    def params(self) -> dict[str, float]:
        """Parameter values: the forward process's and the horizon ``T``."""
        return {**self.process.values, "T": self.process.T}

    def params_for(self, sde: SDE) -> dict[str, float]:
        """The parameter values an SDE built from this family needs (``T`` only when some
        coefficient depends on time)."""
        names = {p.name for p in sde.parameters}
        return {k: v for k, v in self.params.items() if k in names}

    def _at_reverse_time(self, e: sympy.Expr) -> sympy.Expr:
        return as_expression(e, "coefficient").xreplace({t: self.T - t})

    @cached_property
    def terms(self) -> dict[str, dict[str, sympy.Expr]]:
        """``block name -> {atom: expression}`` for atoms friction, coupling, score, ref, noise."""
        p = self.process
        F = p.drift.applyfunc(self._at_reverse_time)
        out: dict[str, dict[str, sympy.Expr]] = {}
        for i, b in enumerate(p.blocks):
            g = self._at_reverse_time(p.diffusion[i])
            lam = _exact_number(self.lam[b.name])
            c = (1 + lam**2) / 2 * g**2
            v = None if p.stationary_expressions is None else p.stationary_expressions[i]
            out[b.name] = {
                "friction": -F[i, i] * b,
                "coupling": -sum(
                    (F[i, j] * z for j, z in enumerate(p.blocks) if j != i), sympy.Integer(0)
                ),
                "score": c * self.score[b.name],
                "ref": sympy.Integer(0) if v is None else c * b / v,
                "noise": lam * g,
            }
        return out

    @property
    def drift(self) -> dict[Block, sympy.Expr]:
        """Total reverse drift per block."""
        return {
            b: self.terms[b.name]["friction"]
            + self.terms[b.name]["coupling"]
            + self.terms[b.name]["score"]
            for b in self.blocks
        }

    @property
    def noise(self) -> dict[Block, sympy.Expr]:
        return {b: self.terms[b.name]["noise"] for b in self.blocks}

    def part(self, block: str, part: str) -> sympy.Expr:
        """The expression of one drift part (see the module docstring) or ``"noise"``."""
        if block not in self.terms:
            raise ValueError(f"unknown block {block!r}; blocks: {', '.join(self.terms)}")
        if part == "noise":
            return self.terms[block]["noise"]
        if part not in PARTS:
            raise ValueError(f"unknown part {part!r}; parts: {', '.join([*PARTS, 'noise'])}")
        return sum((k * self.terms[block][a] for a, k in PARTS[part].items()), sympy.Integer(0))

    # -- splits -----------------------------------------------------------------------------------
    def sde(self, split: str | SplitSpec = "full") -> SDE:
        """The reverse SDE split into flows by ``split`` (a name from :data:`SPLITS` or a
        spec). Letters whose flow is identically zero (the momentum noise at ``lam = 0``) are
        left out; see :meth:`letters`."""
        if isinstance(split, str) and split in self._sdes:
            return self._sdes[split]
        spec = self._spec(split)
        drifts: dict[str, dict[Block, sympy.Expr]] = {}
        noises: dict[str, dict[Block, sympy.Expr]] = {}
        by_name = {b.name: b for b in self.blocks}
        for letter, items in spec.items():
            d, n = drifts.setdefault(letter, {}), noises.setdefault(letter, {})
            for block, part in items:
                b = by_name[block]
                if part == "noise":
                    n[b] = self.part(block, "noise")
                else:
                    d[b] = d.get(b, sympy.Integer(0)) + self.part(block, part)
        flows = {}
        for letter in spec:
            d = {b: e for b, e in drifts[letter].items() if sympy.expand(e) != 0}
            n = {b: e for b, e in noises[letter].items() if e != 0}
            if d or n:
                flows[letter] = Flow(
                    d, n, description=f"reverse {self.process.name}, part {letter}"
                )
        name = split if isinstance(split, str) else "custom"
        sde = SDE(
            self.blocks,
            flows,
            drift=self.drift,
            noise=self.noise,
            name=f"reverse {self.process.name} ({name} split, lambda = {self._lam_text()})",
        )
        if isinstance(split, str):
            self._sdes[split] = sde
        return sde

    def denoiser_sde(self) -> SDE:
        r"""The noise-free drift as one flow ``D``: the final denoising step
        :math:`\bar z \leftarrow \bar z + \varepsilon\,b(\bar z, T - \varepsilon)` is this flow
        solved by Euler over :math:`[T - \varepsilon, T]` in reverse time."""
        if "<denoise>" not in self._sdes:
            flow = Flow(
                {b: e for b, e in self.drift.items() if e != 0}, description="denoising drift"
            )
            self._sdes["<denoise>"] = SDE(
                self.blocks, {"D": flow}, name=f"denoising step of {self.process.name}"
            )
        return self._sdes["<denoise>"]

    def letters(self, split: str | SplitSpec) -> tuple[str, ...]:
        """The letters :meth:`sde` keeps for ``split``."""
        return self.sde(split).letters

    def _lam_text(self) -> str:
        vals = set(self.lam.values())
        if len(vals) == 1:
            return f"{vals.pop():g}"
        return ", ".join(f"{k}: {v:g}" for k, v in self.lam.items())

    def _spec(self, split: str | SplitSpec) -> dict[str, list[tuple[str, str]]]:
        if isinstance(split, str):
            if split not in SPLITS:
                raise ValueError(f"unknown split {split!r}; named splits: {', '.join(SPLITS)}")
            raw = SPLITS[split]
        else:
            raw = split
        names = self.process.block_names
        spec: dict[str, list[tuple[str, str]]] = {}
        for letter, items in raw.items():
            out = []
            for item in items:
                if not (isinstance(item, tuple | list) and len(item) == 2):
                    raise ValueError(
                        f"split letter {letter}: items are (block, part) pairs, got {item!r}"
                    )
                block, part = item
                if part != "noise" and part not in PARTS:
                    raise ValueError(
                        f"split letter {letter}: unknown part {part!r}; parts: "
                        f"{', '.join([*PARTS, 'noise'])}"
                    )
                targets = names if block == "*" else (block,)
                for b in targets:
                    if b not in names:
                        raise ValueError(
                            f"split letter {letter} uses block {b!r}, but process "
                            f"{self.process.name} has blocks {', '.join(names)}"
                        )
                    out.append((b, part))
            spec[letter] = out
        self._check_cover(spec)
        return spec

    def _check_cover(self, spec: Mapping[str, Sequence[tuple[str, str]]]) -> None:
        for b in self.process.block_names:
            count = {"friction": 0, "coupling": 0, "score": 0, "ref": 0, "noise": 0}
            for items in spec.values():
                for block, part in items:
                    if block != b:
                        continue
                    if part == "noise":
                        count["noise"] += 1
                    else:
                        for atom, k in PARTS[part].items():
                            count[atom] += 1 if atom != "ref" else k
            bad = [a for a in ("friction", "coupling", "score", "noise") if count[a] != 1]
            if bad or count["ref"] != 0:
                what = ", ".join(f"{a} used {count[a]} times" for a in bad) or (
                    "linear_ref without score_ref (or the reverse)"
                )
                raise ValueError(
                    f"split does not cover block {b} exactly once: {what}; every drift part "
                    "and the noise of every block must appear in exactly one letter"
                )

    def __repr__(self) -> str:
        return f"ReverseSDE({self.process.name}, lambda = {self._lam_text()})"
