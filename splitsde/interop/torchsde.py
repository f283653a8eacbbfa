r"""torchsde interop: any splitsde SDE as a torchsde SDE, and one Brownian path for both.

**The SDE view.** :func:`as_torchsde` turns an SDE with bound parameters and fields into a
``torch.nn.Module`` with ``f(t, y)``, ``g(t, y)``, ``noise_type = "diagonal"`` and
``sde_type = "ito"``, usable by :func:`torchsde.sdeint`:

.. math::
    f_b(z, t) = \sum_\ell f^{(\ell)}_b(z, t), \qquad
    g_b(z, t) = \Big(\sum_\ell \big(g^{(\ell)}_b(z, t)\big)^2\Big)^{1/2},

the sum of the flows' drifts and the square root of the summed noise variances, per element
of each block (a block that receives noise from a single flow keeps that flow's coefficient
:math:`g^{(\ell)}_b` itself, so the sign convention of the flow is kept path-wise). Both are
lowered from the symbolic expressions by :func:`splitsde.compose.expressions.lower_expressions`
and every field call goes through the view's counter (:attr:`TorchSDEView.nfe`).

**State layout.** torchsde works on a flat state ``y`` of shape ``(batch, D)``. Each block of
shape ``(batch, *event)`` is flattened to ``(batch, prod(event))`` (row-major) and the blocks are
concatenated along the last axis in the SDE's block order; :class:`StateLayout` converts both
ways (:class:`splitsde.runtime.layout.StateLayout`, the library's one flat-state layout).

**One Brownian path.** :class:`BrownianNoise` is a :class:`~splitsde.runtime.noise.NoiseSource`
backed
by a torchsde Brownian motion (``BrownianInterval``). A draw of the step program standing for
the noise of block :math:`b` in flow :math:`\ell` over :math:`[t_0, t_1]` returns

.. math:: \xi = \frac{W_{\ell, b}(t_1) - W_{\ell, b}(t_0)}{\sqrt{t_1 - t_0}},

where the Brownian coordinates are assigned as follows: **one coordinate per block element and
per flow**. For every block, the *first* flow (in the SDE's flow order) that puts noise on it
uses the block's own columns of the state layout -- the same columns the torchsde view's
diagonal noise uses -- so whenever a block receives noise from a single flow, splitsde and
torchsde see the same :math:`W_b`. Every further flow with noise on the same block gets fresh
coordinates from a second Brownian motion ``extra`` of shape ``(batch, E)`` (blocks in the
SDE's order within each flow, flows in the SDE's order); the torchsde view, whose diagonal
noise :math:`\sqrt{\sum_\ell (g^{(\ell)})^2}\,dW_b` merges them, then agrees in law only.

**Which solvers are path-wise consistent with W.** A draw is path-wise consistent when the
sub-step's update is affine in its standard normal with coefficient
:math:`\sqrt{s}\,g^{(\ell)}_b(z, t_0)` (``s`` the slice length), i.e. it adds
:math:`g\,\Delta W` -- Euler--Maruyama (additive or multiplicative noise) and shears whose
noise coefficient is constant over the slice. The exact Ornstein--Uhlenbeck/linear solvers add
:math:`\int_{t_0}^{t_1} \Phi(t_1, \tau) G\,dW(\tau)`, which depends on the whole path inside the
slice, not on its increment alone; shears with a time-dependent noise add
:math:`(\int g^2)^{1/2}\xi`, exact in law only. :func:`pathwise_report` checks every draw of a
program symbolically; :class:`BrownianNoise` refuses a program with a draw that is not
path-wise consistent unless ``pathwise=False``, in which case the step still has the right law
(the normalised increments are independent standard normals) but no path-wise relation to W.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sympy
import torch

from splitsde.compose.expressions import lower_expressions
from splitsde.compose.program import Draw, Program
from splitsde.compose.visitor import draws_by_substep
from splitsde.runtime.integrator import Integrator, _definition_callable
from splitsde.runtime.layout import StateLayout
from splitsde.runtime.noise import NoiseSource
from splitsde.runtime.system import System
from splitsde.symbolic.field import Field, field_applications, field_of
from splitsde.symbolic.sde import SDE
from splitsde.symbolic.symbols import Block, Parameter, h

__all__ = [
    "BrownianNoise",
    "PathwiseDraw",
    "StateLayout",
    "TorchSDEView",
    "as_torchsde",
    "pathwise_report",
    "pathwise_strong_order",
]


# ---------------------------------------------------------------------------------------------
# The torchsde view
# ---------------------------------------------------------------------------------------------
def _bind_params(sde: SDE, params: Mapping[Any, Any]) -> dict[Parameter, Any]:
    by_name = {p.name: p for p in sde.parameters}
    out: dict[Parameter, Any] = {}
    for key, value in params.items():
        name = key.name if isinstance(key, Parameter) else str(key)
        if name not in by_name:
            raise ValueError(
                f"unknown parameter {name!r}; the SDE has {', '.join(sorted(by_name)) or 'none'}"
            )
        if isinstance(value, torch.Tensor):
            v = value.detach()
            out[by_name[name]] = float(v) if v.ndim == 0 else v
        else:
            out[by_name[name]] = float(value)
    missing = sorted(p.name for p in sde.parameters if p not in out)
    if missing:
        raise ValueError(f"missing value(s) for parameter(s): {', '.join(missing)}")
    return out


def _view_noise(sde: SDE) -> dict[Block, sympy.Expr]:
    """Per block: the single flow's coefficient, or the root of the summed variances."""
    out = {}
    for b in sde.blocks:
        gs = [f.noise[b] for f in sde.flows.values() if b in f.noise]
        if not gs:
            out[b] = sympy.Integer(0)
        elif len(gs) == 1:
            out[b] = gs[0]
        else:
            out[b] = sympy.sqrt(sympy.Add(*[g**2 for g in gs]))
    return out


class TorchSDEView(torch.nn.Module):
    """A splitsde SDE seen as a torchsde SDE on the flat state of :class:`StateLayout`.

    Attributes
    ----------
    layout:
        How blocks map to columns of ``y``.
    nfe, nfe_by_field:
        Field evaluations made through the view (reset with :meth:`reset_nfe`).
    """

    noise_type = "diagonal"
    sde_type = "ito"

    def __init__(
        self,
        sde: SDE,
        params: Mapping[Parameter, Any],
        fields: Mapping[str, Callable[..., Any]],
        layout: StateLayout,
    ) -> None:
        super().__init__()
        self.sde = sde
        self.layout = layout
        if layout.block_names != tuple(b.name for b in sde.blocks):
            raise ValueError("the layout's blocks differ from the SDE's")
        drift = [sde.drift[b] for b in sde.blocks]
        noise_map = _view_noise(sde)
        noise = [noise_map[b] for b in sde.blocks]
        used: list[Field] = []
        for e in (*drift, *noise):
            for app in sorted(field_applications(e), key=str):
                f = field_of(app)[0]
                if f not in used:
                    used.append(f)
        self.fields = tuple(used)
        self._counts = [0] * len(used)
        fns = {}
        for i, f in enumerate(used):
            fn = fields.get(f.name)
            if fn is None:
                if f.definition is None:
                    raise ValueError(
                        f"field {f.name} needs a callable (fields={{'{f.name}': fn}}) or a "
                        "symbolic definition"
                    )
                fn = _definition_callable(f, params)
            fns[f] = self._counted(i, fn)
        blocks = sde.blocks
        self._f = lower_expressions(drift, blocks, params, fns, like=blocks)
        self._g = lower_expressions(noise, blocks, params, fns, like=blocks)
        self._fg = lower_expressions([*drift, *noise], blocks, params, fns, like=blocks * 2)

    def _counted(self, i: int, fn: Callable[..., Any]) -> Callable[..., Any]:
        counts = self._counts

        def call(*args: Any) -> Any:
            counts[i] += 1
            return fn(*args)

        return call

    @property
    def nfe(self) -> int:
        return sum(self._counts)

    @property
    def nfe_by_field(self) -> dict[str, int]:
        return {f.name: c for f, c in zip(self.fields, self._counts)}

    def reset_nfe(self) -> None:
        self._counts[:] = [0] * len(self._counts)

    def _blocks(self, y: torch.Tensor) -> list[torch.Tensor]:
        m = self.layout.unflatten(y)
        return [m[b] for b in self.layout.block_names]

    def _flat(self, values: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat([v.reshape(v.shape[0], -1) for v in values], dim=-1)

    def f(self, t: Any, y: torch.Tensor) -> torch.Tensor:
        """Drift :math:`\\sum_\\ell f^{(\\ell)}` on the flat state."""
        return self._flat(self._f(self._blocks(y), float(t)))

    def g(self, t: Any, y: torch.Tensor) -> torch.Tensor:
        """Diagonal diffusion (one coefficient per element of the flat state)."""
        return self._flat(self._g(self._blocks(y), float(t)))

    def f_and_g(self, t: Any, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Drift and diffusion sharing one evaluation of each field."""
        vals = self._fg(self._blocks(y), float(t))
        n = len(self.layout.block_names)
        return self._flat(vals[:n]), self._flat(vals[n:])

    def extra_repr(self) -> str:
        return f"{self.sde.name or 'SDE'}; blocks {self.layout.block_names}; D = {self.layout.dim}"


def as_torchsde(
    source: System | Integrator | SDE | tuple,
    params: Mapping[Any, Any] | None = None,
    fields: Mapping[str, Callable[..., Any]] | None = None,
    *,
    like: Mapping[str, Any],
) -> TorchSDEView:
    """View an SDE with bound parameters and fields as a torchsde SDE.

    Parameters
    ----------
    source:
        A :class:`~splitsde.runtime.system.System`, an
        :class:`~splitsde.runtime.integrator.Integrator`
        (its SDE, parameters and fields), an :class:`~splitsde.symbolic.sde.SDE` with
        ``params`` and ``fields``, or a tuple ``(sde, params, fields)``.
    like:
        A state (block name -> tensor ``(batch, ...)``) or block name -> event shape; fixes the
        :class:`StateLayout`.
    """
    if isinstance(source, tuple):
        if params is not None or fields is not None or len(source) != 3:
            raise ValueError("give (sde, params, fields) either as a tuple or as arguments")
        source, params, fields = source
    if isinstance(source, Integrator):
        sde = source.sde
        bound = dict(source.params)
        fns = dict(source._callables)
    elif isinstance(source, System):
        sde = source.sde
        bound = _bind_params(sde, {**source.params, **(params or {})})
        fns = {**source.fields, **(fields or {})}
    elif isinstance(source, SDE):
        sde = source
        bound = _bind_params(sde, params or {})
        fns = dict(fields or {})
    else:
        raise TypeError(
            f"as_torchsde takes a System, an Integrator, an SDE or (sde, params, fields), "
            f"not {type(source).__name__}"
        )
    unknown = set(fns) - set(sde.fields)
    if unknown:
        raise ValueError(f"unknown field(s) {sorted(unknown)}; the SDE's: {sorted(sde.fields)}")
    return TorchSDEView(sde, bound, fns, StateLayout.of(sde.blocks, like))


# ---------------------------------------------------------------------------------------------
# Path-wise consistency of a program's draws
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PathwiseDraw:
    """One draw of a step program: which Brownian coordinate it reads and whether the sub-step
    uses it path-wise (adds :math:`g\\,\\Delta W`)."""

    index: int
    substep: int
    letter: str
    block: str
    consistent: bool
    reason: str


def _draws_by_substep(program: Program) -> list[tuple[Draw, int]]:
    return draws_by_substep(program.statements)


def pathwise_report(integrator: Integrator) -> list[PathwiseDraw]:
    """For every draw of the integrator's program: its flow, block and path-wise consistency.

    The check is symbolic: the sub-step's update must be affine in the draw's standard normal
    :math:`\\xi`, only in the drawn block's update, with coefficient
    :math:`\\sqrt{s}\\,g^{(\\ell)}_b` (the flow's noise at the start of the slice), and the
    draw must cover the whole slice.
    """
    program = integrator.program
    sde = integrator.sde
    out = []
    per_sub: dict[int, int] = {}
    for i, (_, k) in enumerate(_draws_by_substep(program)):
        sub = program.substeps[k]
        upd = sub.solver.update
        j = per_sub.get(k, 0)
        per_sub[k] = j + 1
        xi, spec = upd.noises[j]
        b = spec.like
        flow = sde.flows[sub.letter]
        ok, why = True, "adds g*dW over the slice (the Euler-Maruyama increment)"
        g = flow.noise.get(b)
        if g is None:
            ok, why = False, f"flow {sub.letter} declares no noise on {b}; the solver draws its own"
        elif (spec.start, spec.stop) != (0, 1):
            ok, why = False, "the solver splits the slice's noise into parts"
        else:
            exprs = {tgt: upd.closed_form(e) for tgt, e in zip(upd.targets, upd.exprs)}
            others = [tgt for tgt, e in exprs.items() if tgt != b and xi in e.free_symbols]
            if others or any(xi in e.free_symbols for _, e in upd.lets) or b not in exprs:
                ok, why = False, "the noise is shared between blocks (correlated increments)"
            else:
                e = exprs[b]
                coef = sympy.diff(e, xi)
                want = sympy.sqrt(h) * g
                if xi in coef.free_symbols:
                    ok, why = False, "the update is not affine in the noise"
                elif sympy.simplify(coef - want) != 0:
                    ok = False
                    why = (
                        f"{sub.solver.method} adds {sympy.sstr(coef)}*xi, not sqrt(h)*g*xi = "
                        f"g*dW: exact in law over the slice, but a function of the whole path "
                        "inside it rather than of its increment"
                    )
        out.append(PathwiseDraw(i, k, sub.letter, b.name, ok, why))
    return out


def pathwise_strong_order(integrator: Integrator) -> float | None:
    r"""The strong (mean-square) order the integrator has when driven by :class:`BrownianNoise`.

    ``None`` when some draw is not path-wise consistent (no claim is made). Otherwise: the
    declared order of a deterministic word; for a stochastic word, ``0.5`` if a stochastic
    flow's noise depends on the state (Euler--Maruyama, Kloeden & Platen 1992, thm. 10.2.2) and
    ``min(1, solver strong orders)`` for additive noise (Euler--Maruyama with additive noise,
    Kloeden & Platen sec. 10.2; Lie--Trotter and Strang splittings with additive noise,
    Buckwar, Samson, Tamborrino & Tubikanec, Appl. Numer. Math. 179 (2022) 191).
    """
    report = pathwise_report(integrator)
    if not all(r.consistent for r in report):
        return None
    if not report:
        wo = integrator.weak_order
        return None if wo is None else float(wo)
    sde = integrator.sde
    order = 1.0
    for sub in integrator.program.substeps:
        flow = sde.flows[sub.letter]
        if any(isinstance(s, Block) for g in flow.noise.values() for s in g.free_symbols) or any(
            field_applications(g) for g in flow.noise.values()
        ):
            order = min(order, 0.5)
        if not sub.solver.exact:
            so = sub.solver.strong_order
            if so is None:
                return None
            order = min(order, so)
    return order


# ---------------------------------------------------------------------------------------------
# The noise source
# ---------------------------------------------------------------------------------------------
class BrownianNoise(NoiseSource):
    """Draws from a torchsde Brownian motion: normalised increments over each draw's interval.

    Parameters
    ----------
    integrator:
        The integrator whose program will be run (its draws are mapped to coordinates).
    bm:
        A torchsde Brownian motion (``BrownianInterval``) of shape ``(batch, D)`` in the
        :class:`StateLayout` of ``like`` -- the Brownian motion a torchsde solver uses for the
        :class:`TorchSDEView` of the same SDE.
    like:
        A state (or block name -> event shape) fixing the layout.
    extra:
        A second Brownian motion ``(batch, E)`` for the flows beyond the first that put noise on
        a block (see the module docstring); required exactly when the program draws such noise.
    pathwise:
        Refuse programs with draws that are not path-wise consistent (default). ``False`` runs
        them anyway: each step has the right law, but is not a discretisation of this path.
    """

    takes_times = True

    def __init__(
        self,
        integrator: Integrator,
        bm: Any,
        *,
        like: Mapping[str, Any],
        extra: Any = None,
        pathwise: bool = True,
    ) -> None:
        self.integrator = integrator
        self.layout = StateLayout.of(integrator.sde.blocks, like)
        self.bm = bm
        self.extra = extra
        self.report = pathwise_report(integrator)
        if pathwise:
            bad = [r for r in self.report if not r.consistent]
            if bad:
                r = bad[0]
                raise ValueError(
                    f"sub-step {r.substep} ({r.letter} on {r.block}) is not path-wise consistent "
                    f"with the Brownian path: {r.reason}. Use Euler-Maruyama for that flow "
                    "(solvers={...: EulerMaruyama()}) or pass pathwise=False to accept a scheme "
                    "that is right in law but not tied to this path"
                )
        self._columns = self._assign_columns(integrator.sde)
        self._check_bm(bm, self.layout.dim, "bm")
        n_extra = sum(c[2] for c in self._columns.values() if c[0] == "extra")
        if n_extra:
            if extra is None:
                pairs = [f"{k[0]}:{k[1]}" for k, c in self._columns.items() if c[0] == "extra"]
                raise ValueError(
                    f"the program draws noise from a second flow on a block ({', '.join(pairs)});"
                    f" give extra= a Brownian motion of shape (batch, {n_extra})"
                )
            self._check_bm(extra, n_extra, "extra")
        elif extra is not None:
            raise ValueError("extra= is only needed when a block receives noise from two flows")

    @staticmethod
    def _check_bm(bm: Any, dim: int, name: str) -> None:
        shape = tuple(getattr(bm, "shape", ()))
        if len(shape) != 2 or shape[1] != dim:
            raise ValueError(f"{name} must have shape (batch, {dim}), got {shape}")

    def _assign_columns(self, sde: SDE) -> dict[tuple[str, str], tuple[str, int, int]]:
        """(flow, block) -> (which motion, first column, number of columns)."""
        offsets = self.layout.offsets
        sizes = dict(zip(self.layout.block_names, self.layout.sizes))
        cols: dict[tuple[str, str], tuple[str, int, int]] = {}
        taken: set[str] = set()
        nxt = 0
        for letter, flow in sde.flows.items():
            for b in sde.blocks:
                if b not in flow.noise:
                    continue
                if b.name not in taken:
                    taken.add(b.name)
                    a, c = offsets[b.name]
                    cols[(letter, b.name)] = ("bm", a, c - a)
                else:
                    cols[(letter, b.name)] = ("extra", nxt, sizes[b.name])
                    nxt += sizes[b.name]
        return cols

    def _range_check(self, motion: Any, a: float, b: float) -> None:
        lo, hi = getattr(motion, "_start", None), getattr(motion, "_end", None)
        if lo is not None and hi is not None and (a < lo or b > hi):
            raise ValueError(
                f"a draw needs the Brownian path over [{a:.6g}, {b:.6g}], outside the motion's "
                f"interval [{lo:.6g}, {hi:.6g}]"
            )

    def bind(
        self, shapes: Sequence[torch.Size], like: torch.Tensor
    ) -> list[Callable[[float, float], torch.Tensor]]:
        if len(shapes) != len(self.report):
            raise ValueError(
                f"BrownianNoise was built for a program with {len(self.report)} draws, "
                f"not {len(shapes)}"
            )
        for motion in (self.bm, self.extra):
            dtype = getattr(motion, "dtype", like.dtype)
            if motion is not None and dtype != like.dtype:
                raise ValueError(f"the Brownian motion is {dtype}, the state {like.dtype}")
        out = []
        for r, shape in zip(self.report, shapes):
            key = (r.letter, r.block)
            if key not in self._columns:
                # a solver drawing noise its flow does not declare (law-only, pathwise=False)
                raise ValueError(
                    f"flow {r.letter} draws noise on {r.block} but declares none; no Brownian "
                    "coordinate is assigned to it"
                )
            which, a, n = self._columns[key]
            motion = self.bm if which == "bm" else self.extra
            if shape[0] != motion.shape[0]:
                raise ValueError(
                    f"the Brownian motion has batch {motion.shape[0]}, the state {shape[0]}"
                )
            out.append(self._draw(motion, a, n, tuple(shape)))
        return out

    def _draw(
        self, motion: Any, a: int, n: int, shape: tuple[int, ...]
    ) -> Callable[[float, float], torch.Tensor]:
        def draw(t0: float, t1: float) -> torch.Tensor:
            self._range_check(motion, t0, t1)
            dw = motion(t0, t1)[:, a : a + n]
            return (dw / math.sqrt(t1 - t0)).reshape(shape)

        return draw
