r"""An integrator: an SDE, a word, parameter values and bound fields, lowered to torch.

>>> import splitsde as sd
>>> system = sd.langevin.underdamped(sd.potentials.Harmonic(omega=1.0), gamma=1.0, kT=1.0)
>>> integ = system.integrator("BAOAB")
>>> integ.weak_order, integ.evaluations_per_step
(2, 1)

The integrator owns the symbolic :class:`~splitsde.compose.program.Program` of one step. At
run time :meth:`Integrator.prepare` evaluates its coefficients for a time grid (float64, cast
once), generates the torch step and binds the noise source; :func:`splitsde.integrate` is the
only loop that calls it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import sympy
import torch

from splitsde.base.errors import SplitsdeError
from splitsde.compose.builder import build_program
from splitsde.compose.codegen import (
    CoefficientTable,
    LoweredStep,
    element_sum,
    hoist_program,
    indicator,
    lower,
    select_mask,
    select_walkers,
)
from splitsde.compose.presets import word as parse_word
from splitsde.compose.program import (
    Assign,
    Draw,
    Eval,
    Let,
    Metropolis,
    Program,
    Recall,
    SubstepInfo,
)
from splitsde.compose.reduce import ReducedWord, Reduction
from splitsde.compose.visitor import StatementVisitor
from splitsde.compose.word import MAX_OCCURRENCES, Word, WordError
from splitsde.runtime.noise import FixedNoise, GaussianNoise, NoiseSource
from splitsde.runtime.schedule import CHUNK, CoefficientSchedule, Window
from splitsde.runtime.timegrid import TimeGrid, time_grid
from splitsde.symbolic.field import Field
from splitsde.symbolic.sde import SDE
from splitsde.symbolic.solve import SolverStrategy
from splitsde.symbolic.spellings import check_functions, namespace
from splitsde.symbolic.spellings import lambdify as spell_lambdify
from splitsde.symbolic.symbols import Block, Parameter

__all__ = ["BoundField", "Integrator", "NonFiniteError", "PreparedRun", "StateError"]


class StateError(SplitsdeError, ValueError):
    """A state that does not fit the integrator (missing block, dtype, device, shape)."""


class NonFiniteError(SplitsdeError, FloatingPointError):
    """A non-finite value appeared; names the step, the sub-step and the block (or the field
    that returned it)."""

    def __init__(
        self,
        message: str,
        *,
        step: int | None = None,
        substep: int | None = None,
        block: str | None = None,
        field: str | None = None,
    ) -> None:
        super().__init__(message)
        self.step = step
        self.substep = substep
        self.block = block
        self.field = field


class FieldError(SplitsdeError, ValueError):
    """A bound field raised, or returned something unusable (shape, dtype, device,
    aliasing); names the field (and, from :func:`splitsde.integrate`, the step)."""

    def __init__(self, message: str, *, field: str | None = None, step: int | None = None):
        super().__init__(message)
        self.field = field
        self.step = step


@dataclass
class BoundField:
    """A field with the torch callable that evaluates it."""

    field: Field
    fn: Callable[..., Any]
    from_definition: bool = False


def _dispatch(tfn: Callable[..., Any], mfn: Callable[..., Any]) -> Callable[..., Any]:
    return lambda *a: tfn(*a) if any(isinstance(x, torch.Tensor) for x in a) else mfn(*a)


def _fold(op: Callable[..., Any]) -> Callable[..., Any]:
    """``Max``/``Min`` of any number of tensors and numbers, elementwise."""

    def fold(*a: Any) -> Any:
        like = next(x for x in a if isinstance(x, torch.Tensor))
        out = torch.as_tensor(a[0], dtype=like.dtype, device=like.device)
        for x in a[1:]:
            out = op(out, torch.as_tensor(x, dtype=like.dtype, device=like.device))
        return out

    return fold


def _heaviside(x: torch.Tensor, at_zero: Any) -> torch.Tensor:
    return torch.heaviside(x, torch.as_tensor(float(at_zero), dtype=x.dtype, device=x.device))


#: Functions for lowering symbolic field definitions, which are evaluated on tensors (a batch of
#: walkers) and on Python floats: the torch spelling on tensors, the math one on floats. Every
#: function of the table, and sympy's Max, Min and Heaviside (which the math printer writes
#: with Python's ``max``/``min`` and conditionals, one number at a time).
_ELEMENTWISE = {
    **{
        name: _dispatch(fn, namespace("math")[name])
        for name, fn in namespace("torch").items()
        if name in namespace("math")
    },
    "Max": _dispatch(_fold(torch.maximum), max),
    "Min": _dispatch(_fold(torch.minimum), min),
    "Heaviside": _dispatch(
        _heaviside, lambda x, h: float(h) if x == 0 else (1.0 if x > 0 else 0.0)
    ),
}


def _definition_callable(f: Field, params: Mapping[Parameter, Any]) -> Callable[..., Any]:
    exprs = [f.definition[o] for o in f.outputs]
    ps = sorted({s for e in exprs for s in e.free_symbols if isinstance(s, Parameter)}, key=str)
    missing = [p for p in ps if p not in params]
    if missing:
        raise ValueError(f"field {f.name}: definition needs parameter(s) {missing}")
    scalar = {p: params[p] for p in ps if not isinstance(params[p], torch.Tensor)}
    tensor_ps = [p for p in ps if p not in scalar]
    exprs = [e.xreplace({p: sympy.Float(v) for p, v in scalar.items()}) for e in exprs]
    check_functions(exprs, "torch")  # the arguments are tensors
    fns = [spell_lambdify([*f.args, *tensor_ps], e, "math", _ELEMENTWISE) for e in exprs]
    values = [params[p] for p in tensor_ps]

    def call(*args: Any) -> Any:
        like = args[0] if args and isinstance(args[0], torch.Tensor) else None
        outs = []
        for fn in fns:
            v = fn(*args, *values)
            if not isinstance(v, torch.Tensor) or (like is not None and v.shape != like.shape):
                v = torch.as_tensor(v, dtype=like.dtype, device=like.device).expand_as(like).clone()
            outs.append(v)
        return outs[0] if len(outs) == 1 else tuple(outs)

    return call


class Integrator:
    """A splitting integrator lowered to torch.

    Parameters
    ----------
    sde:
        The symbolic SDE.
    word:
        A word, a preset name, or a :class:`~splitsde.compose.reduce.ReducedWord`.
    params:
        Values of the SDE's parameters, by name or symbol: numbers (float64) or tensors that
        broadcast against the blocks (per-particle masses).
    fields:
        Torch callables for the SDE's fields, by name. A field with a symbolic definition
        needs none. Callables receive the dependency blocks (and the time as a Python float
        for time-dependent fields) and return one tensor per output.
    reduction:
        Evaluation-reuse rules (default: reuse only provably unchanged values).
    solvers:
        Solver strategies overriding the derived ones, by letter.
    allow_missing:
        Allow a word that leaves out some flows of the SDE.
    inplace:
        Update blocks in place (fast); ``False`` keeps every operation out of place (for
        autograd through the sampler).
    dtype, device:
        If given, states must have this dtype / live on this device.
    """

    def __init__(
        self,
        sde: SDE,
        word: str | Word | ReducedWord,
        params: Mapping[str | Parameter, Any] | None = None,
        fields: Mapping[str, Callable[..., Any]] | None = None,
        *,
        reduction: Reduction | None = None,
        solvers: Mapping[str, SolverStrategy] | None = None,
        allow_missing: bool = False,
        inplace: bool = True,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        if isinstance(word, ReducedWord):
            if reduction is not None:
                raise ValueError("give the reduction either in the word or as reduction=, not both")
            reduction = word.reduction
            word = word.word
        self.sde = sde.with_solvers(solvers) if solvers else sde
        self.word: Word = parse_word(word)
        if len(self.word) > MAX_OCCURRENCES:
            raise WordError(
                f"the word has {len(self.word)} letter occurrences; at most {MAX_OCCURRENCES} "
                "are supported in one step (each is compiled separately): write one step of the "
                "scheme and run more steps with a smaller h"
            )
        self.reduction = reduction or Reduction()
        self.program: Program = build_program(self.sde, self.word, self.reduction, allow_missing)
        self.params = self._bind_params(params or {})
        self._callables = dict(fields or {})
        self.fields = self._bind_fields(fields or {})
        self.inplace = inplace
        self.dtype = dtype
        self.device = torch.device(device) if device is not None else None

    # -- binding --------------------------------------------------------------------------------
    def _bind_params(self, params: Mapping[str | Parameter, Any]) -> dict[Parameter, Any]:
        by_name = {p.name: p for p in self.sde.parameters}
        needed = set(self.sde.parameters)
        for f in self.program.fields:
            for e in (f.definition or {}).values():
                for s in e.free_symbols:
                    if isinstance(s, Parameter):
                        by_name.setdefault(s.name, s)
                        needed.add(s)
        out: dict[Parameter, Any] = {}
        for key, value in params.items():
            name = key.name if isinstance(key, Parameter) else str(key)
            if name not in by_name:
                raise ValueError(
                    f"unknown parameter {name!r}; the SDE has "
                    f"{', '.join(sorted(by_name)) or 'none'}"
                )
            if isinstance(value, torch.Tensor):
                if not value.is_floating_point():
                    value = value.to(torch.float64)
                v = value.detach()
                if not torch.isfinite(v).all():
                    raise ValueError(f"parameter {name} is not finite")
                out[by_name[name]] = float(v) if v.numel() == 1 and v.ndim == 0 else v
            else:
                try:
                    fv = float(value)
                except (TypeError, ValueError) as exc:
                    raise TypeError(
                        f"parameter {name} must be a number or a tensor, got {value!r}"
                    ) from exc
                if not math.isfinite(fv):
                    raise ValueError(f"parameter {name} = {fv} is not finite")
                out[by_name[name]] = fv
        missing = sorted(p.name for p in needed if p not in out)
        if missing:
            raise ValueError(f"missing value(s) for parameter(s): {', '.join(missing)}")
        return out

    def _bind_fields(self, fns: Mapping[str, Callable[..., Any]]) -> list[BoundField]:
        names = {f.name for f in self.program.fields}
        known = set(self.sde.fields)
        unknown = set(fns) - known
        if unknown:
            raise ValueError(
                f"unknown field(s) {sorted(unknown)}; the SDE's fields: "
                f"{', '.join(sorted(known)) or 'none'}"
            )
        out = []
        for f in self.program.fields:
            fn = fns.get(f.name)
            if fn is not None:
                if not callable(fn):
                    raise TypeError(f"field {f.name} must be bound to a callable")
                out.append(BoundField(f, fn))
            elif f.definition is not None:
                out.append(BoundField(f, _definition_callable(f, self.params), True))
            else:
                raise ValueError(
                    f"field {f.name} needs a callable (fields={{'{f.name}': fn}}) or a symbolic "
                    f"definition; fields the word evaluates: {', '.join(sorted(names))}"
                )
        return out

    def field_function(self, name: str) -> Callable[..., Any]:
        """The torch callable of any field of the SDE (also those the word does not evaluate,
        such as an energy read by observers); calls through it are not counted as NFE."""
        for bf in self.fields:
            if bf.field.name == name:
                return bf.fn
        f = self.sde.fields.get(name)
        if f is None:
            known = ", ".join(sorted(self.sde.fields))
            raise ValueError(f"no field {name!r}; the SDE's fields: {known}")
        if name in self._callables:
            return self._callables[name]
        if f.definition is not None:
            return _definition_callable(f, self.params)
        raise ValueError(f"field {name} needs a callable (fields={{'{name}': fn}})")

    # -- properties -----------------------------------------------------------------------------
    @property
    def blocks(self) -> tuple[Block, ...]:
        """The state's blocks as :class:`~splitsde.symbolic.symbols.Block` symbols, in the
        SDE's order (as ``SDE.blocks`` and ``Program.blocks``); their names, the keys of a
        state mapping, are :attr:`block_names`."""
        return tuple(self.sde.blocks)

    @property
    def block_names(self) -> tuple[str, ...]:
        """Block names, in the SDE's order (the keys of a state mapping)."""
        return self.sde.block_names

    @property
    def substeps(self) -> list[SubstepInfo]:
        return self.program.substeps

    @property
    def evaluations_per_step(self) -> int | float | None:
        """Field evaluations per step (and walker) in steady state, as the program is compiled
        (expected count for randomized solvers; ``None`` when an adaptive flow map makes it
        depend on the state; the measured count is in
        :class:`~splitsde.runtime.integrate.Result`)."""
        return self.program.evaluations_per_step()

    @property
    def exact(self) -> bool:
        """Whether one step reproduces the SDE's transition law exactly (single exact flow)."""
        subs = self.program.substeps
        return (
            len(self.word.letters) == 1
            and len(self.sde.flows) == 1
            and all(s.solver.exact for s in subs)
        )

    @property
    def weak_order(self) -> int | None:
        """Declared finite-time weak order (``None`` if exact).

        Exact sub-flows: 2 for a symmetric word, 1 otherwise. Approximate sub-flow solvers cap
        it at their own order; ``per_step`` reuse of moved-state evaluations caps it at 1. A
        word of one flow occurring once (no splitting) has its solver's order.
        """
        if self.exact:
            return None
        subs = self.program.substeps
        if len(subs) == 1 and len(self.sde.flows) == 1 and not subs[0].solver.exact:
            return subs[0].solver.weak_order
        order = 2 if self.word.is_symmetric else 1
        for s in self.program.substeps:
            if not s.solver.exact:
                order = min(order, s.solver.weak_order or 1)
        if _reuses_moved_evaluations(self.program):
            order = min(order, 1)
        if self.program.groups:
            order = min(order, 1)  # Metropolized words: the GHMC preset's declared order
        return order

    @property
    def is_stochastic(self) -> bool:
        return bool(self.program.draws or self.program.uniform_draws)

    def describe(self) -> str:
        lines = [
            f"word {self.word} on {self.sde.name or 'SDE'} (reduction: {self.reduction})",
            f"  weak order: {self.weak_order if self.weak_order else 'exact'}; symmetric: "
            f"{self.word.is_symmetric}; field evaluations per step: {self.evaluations_per_step}",
        ]
        for s in self.program.substeps:
            o = s.occurrence
            order = "exact" if s.solver.exact else f"weak order {s.solver.weak_order}"
            lines.append(
                f"  {s.index}: {o.letter}[{o.weight}] over [{s.start}, {s.stop}]  "
                f"{s.solver.method} ({order})"
            )
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"Integrator({self.word}, {self.sde.name or 'SDE'}, {self.reduction})"

    # -- lowering -------------------------------------------------------------------------------
    @cached_property
    def _hoisted(self):
        return hoist_program(self.program)

    def _flow_maps(self, counts: list[int]) -> list[Callable[..., Any]]:
        """The program's flow maps, bound to callables of the real fields they use that count
        their calls in ``counts`` (the counters of one run)."""
        from splitsde.compose.expressions import lower_expressions

        index = {bf.field: i for i, bf in enumerate(self.fields)}
        out = []
        for fm in self.program.flow_maps:
            fns = {f: _counted(counts, self.fields[index[f]].fn, index[f]) for f in fm.inner_fields}
            drift = lower_expressions(fm.drift, fm.depends, self.params, fns, like=fm.changed)
            out.append(fm.bind(drift))
        return out

    @cached_property
    def coefficient_table(self) -> CoefficientTable:
        return CoefficientTable(self._hoisted, self.params)

    def check_state(self, state: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
        """Validate a state mapping and return its blocks in order.

        Every block is a floating-point tensor of shape ``(walkers, ...)`` with at least one
        walker, on a device that holds data (not ``meta``); all blocks share dtype, device and
        number of walkers, and every update of the word maps block shapes onto themselves.
        Raises :class:`StateError` naming the block otherwise.
        """
        if not isinstance(state, Mapping):
            raise StateError(
                f"a state is a mapping block name -> tensor, got a {type(state).__name__}"
            )
        names = self.block_names
        unknown = set(state) - set(names)
        if unknown:
            hint = (
                " (a state is keyed by block names, .block_names; .blocks are the Block symbols)"
                if any(isinstance(k, Block) for k in unknown)
                else ""
            )
            raise StateError(
                f"unknown block(s) {sorted(map(str, unknown))}; blocks: {', '.join(names)}{hint}"
            )
        missing = [b for b in self.block_names if b not in state]
        if missing:
            raise StateError(f"state misses block(s) {', '.join(missing)}")
        tensors = tuple(state[b] for b in self.block_names)
        first = tensors[0]
        head = self.block_names[0]
        for name, x in zip(self.block_names, tensors):
            if not isinstance(x, torch.Tensor):
                raise StateError(f"block {name} is a {type(x).__name__}, not a tensor")
            if x.device.type == "meta":
                raise StateError(
                    f"block {name} is on the meta device, which has shapes but no data; create "
                    "the state on a real device (cpu, cuda, ...)"
                )
            if not x.is_floating_point():
                raise StateError(f"block {name} has dtype {x.dtype}; states must be floating point")
            if x.dtype != first.dtype:
                raise StateError(
                    f"block {name} has dtype {x.dtype} but block {head} has {first.dtype}"
                )
            if x.device != first.device:
                raise StateError(
                    f"block {name} is on {x.device} but block {head} is on {first.device}"
                )
            if x.ndim == 0:
                raise StateError(f"block {name} is 0-dimensional; give it a batch dimension")
            if x.shape[0] == 0:
                raise StateError(
                    f"block {name} has 0 walkers (shape {tuple(x.shape)}); give at least one"
                )
            if x.shape[0] != first.shape[0]:
                raise StateError(
                    f"block {name} has {x.shape[0]} walkers (shape {tuple(x.shape)}) but block "
                    f"{head} has {first.shape[0]} (shape {tuple(first.shape)}); every block needs "
                    "the same number of walkers (first dimension)"
                )
        if self.dtype is not None and first.dtype != self.dtype:
            raise StateError(
                f"the integrator was built for {self.dtype}, the state is {first.dtype}"
            )
        if self.device is not None and first.device != self.device:
            raise StateError(
                f"the integrator was built for {self.device}, the state is on {first.device}"
            )
        for p, v in self.params.items():
            if isinstance(v, torch.Tensor):
                if v.device != first.device:
                    raise StateError(f"parameter {p} is on {v.device}, the state on {first.device}")
                for name, x in zip(self.block_names, tensors):
                    try:
                        torch.broadcast_shapes(v.shape, x.shape)
                    except RuntimeError:
                        raise StateError(
                            f"parameter {p} of shape {tuple(v.shape)} does not broadcast against "
                            f"block {name} of shape {tuple(x.shape)}"
                        ) from None
        _check_update_shapes(self.program, dict(zip(self.program.blocks, tensors)))
        return tensors

    def grid_coefficients(self, times: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
        """Float64 coefficient values (one row per distinct step) and the step -> row map of
        a grid, memoised for the last few grids: a plan runs its grid again and again, and
        the coefficient table's parameters are fixed when it is built."""
        key = times.tobytes()
        cache = self.__dict__.setdefault("_grid_cache", {})
        hit = cache.get(key)
        if hit is not None:
            return hit
        t_, h_ = times[:-1], np.diff(times)
        table = self.coefficient_table
        if table.autonomous:
            uniq, inverse = np.unique(h_, return_inverse=True)
            vals = table.evaluate(np.zeros_like(uniq), uniq)
            table.check_finite(vals, np.zeros_like(uniq), uniq)
        else:
            inverse = np.arange(len(h_))
            vals = table.evaluate(t_, h_)
            table.check_finite(vals, t_, h_)
        if len(cache) >= 8:
            cache.pop(next(iter(cache)))
        cache[key] = (vals, inverse)
        return vals, inverse

    def prepare(
        self,
        state: Sequence[torch.Tensor],
        times: Any,
        noise: NoiseSource,
        *,
        on_substep: Callable[[int, tuple[torch.Tensor, ...]], None] | None = None,
    ) -> PreparedRun:
        """The generated step bound to ``noise``, with coefficients for the grid ``times``
        (a :class:`~splitsde.runtime.timegrid.TimeGrid` or an array of times), computed chunk by
        chunk
        (:class:`~splitsde.runtime.schedule.CoefficientSchedule`): memory does not grow with
        the number of steps.

        Everything a run changes lives on the returned :class:`PreparedRun` (field-evaluation
        counters, Metropolis acceptance counts); the integrator itself is not modified, so
        one integrator can drive any number of runs, interleaved or not. ``on_substep(i,
        state)`` is called by the hooked step variant after sub-step ``i`` (and after each
        Metropolis test, numbered after the sub-steps)."""
        grid = times if isinstance(times, TimeGrid) else time_grid(grid=times)
        like = state[0]
        short = (
            not self.coefficient_table.autonomous
            and bool(self.coefficient_table.symbols)
            and grid.steps <= CHUNK
        )
        # A plan runs its short grid again and again: reuse its memoised float64 rows.
        head = self.grid_coefficients(grid.array())[0] if short else None
        memo = self.__dict__.setdefault("_row_memo", {}).setdefault((like.dtype, like.device), {})
        schedule = CoefficientSchedule(self.coefficient_table, grid, like, head=head, memo=memo)
        tensor_syms = schedule.tensor_symbols

        shapes = []
        block_index = {b: i for i, b in enumerate(self.program.blocks)}
        for d in self.program.draws:
            shapes.append(state[block_index[d.like]].shape)
        draws = noise.bind(shapes, like)
        nfe = [0] * len(self.program.fields)
        namespace: dict[str, Any] = {"_nfe": nfe}
        tests = self.program.uniforms
        accepted = [
            torch.zeros(like.shape[0], dtype=torch.int64, device=like.device) for _ in tests
        ]
        selections = self.program.uniform_draws
        if tests or selections:
            # Metropolis tests first, then the per-walker selections (one uniform per walker,
            # shaped to broadcast against its block); drawn in program order at run time
            shapes = [torch.Size([like.shape[0]])] * len(tests)
            for d in selections:
                nd = state[block_index[d.like]].ndim
                shapes.append(torch.Size([like.shape[0], *([1] * (nd - 1))]))
            uniforms = noise.bind_uniform(shapes, like)
            for m, u in zip(tests, uniforms):
                namespace[f"_udraw{m.group}"] = u
            for i, u in enumerate(uniforms[len(tests) :]):
                namespace[f"_uniform{i}"] = u
        namespace.update(
            _accepted=accepted,
            _esum=element_sum,
            _select=select_walkers,
            _select_mask=select_mask,
            _ind=indicator,
        )
        for i, bf in enumerate(self.fields):
            namespace[f"_f{i}"] = bf.fn
        for i, fm in enumerate(self._flow_maps(nfe) if self.program.flow_maps else ()):
            namespace[f"_map{i}"] = fm
        for i, d in enumerate(draws):
            namespace[f"_draw{i}"] = d
        checks = _Checks(self, state)
        namespace["_check_field"] = checks.check_field
        namespace["_check_state"] = checks.check_state
        namespace["_hook"] = on_substep if on_substep is not None else _no_substep_callback
        lowered = lower(
            self._hoisted,
            tensor_syms,
            inplace=self.inplace,
            draws_take_times=noise.takes_times,
            namespace=namespace,
        )
        return PreparedRun(self, lowered, schedule, nfe, accepted)

    # -- convenience ----------------------------------------------------------------------------
    def step(
        self,
        state: Mapping[str, torch.Tensor],
        t0: float,
        h: float,
        *,
        generator: torch.Generator | None = None,
        noise: NoiseSource | Sequence[torch.Tensor] | None = None,
    ) -> dict[str, torch.Tensor]:
        """One checked step from ``state`` (not modified) at time ``t0`` with length ``h``.

        ``noise`` may be a :class:`~splitsde.runtime.noise.NoiseSource` or a list of tensors, one
        per
        draw of the program (exact probing of the step).
        """
        tensors = tuple(x.clone() for x in self.check_state(state))
        if noise is None:
            if generator is None and self.is_stochastic:
                raise ValueError("a stochastic step needs a generator or a noise source")
            noise = GaussianNoise(generator or torch.Generator(device=tensors[0].device))
        elif not isinstance(noise, NoiseSource):
            noise = FixedNoise(noise)
        run = self.prepare(tensors, np.array([t0, t0 + h], dtype=np.float64), noise)
        with torch.no_grad():
            out, _ = run.call(0, tensors, None, checked=True)
        return dict(zip(self.block_names, out))


class _MovedReuse(StatementVisitor[bool]):
    """Whether a statement uses a field value evaluated on a block that has changed since."""

    consumer = "the moved-evaluation check"

    def __init__(self, program: Program) -> None:
        self.versions = dict.fromkeys(program.blocks, 0)
        self.taken: dict[Any, dict[Any, int]] = {}

    def visit_eval(self, s: Eval) -> bool:
        snap = {a: self.versions[a] for a in s.args if isinstance(a, Block)}
        for o in s.outs:
            self.taken[o] = snap
        return False

    def _moved(self, exprs: Any) -> bool:
        for e in exprs:
            for sym in e.free_symbols:
                snap = self.taken.get(sym)
                if snap is not None and any(self.versions[b] != v for b, v in snap.items()):
                    return True
        return False

    def visit_let(self, s: Let) -> bool:
        return self._moved((s.expr,))

    def visit_assign(self, s: Assign) -> bool:
        if self._moved(s.exprs):
            return True
        for b in s.targets:
            self.versions[b] += 1
        return False

    def _no(self, s: Any) -> bool:
        # draws, recalled past values (a multistep solver's history, not a moved-state reuse),
        # sub-step ends and Metropolis brackets use no field value on moved blocks
        return False

    visit_draw = visit_recall = visit_mark = visit_group_begin = visit_metropolis = _no


def _reuses_moved_evaluations(program: Program) -> bool:
    """Whether a field value is used after a block it was evaluated on has changed (the
    ``per_step`` reuse of a moved-state evaluation, which costs an order)."""
    check = _MovedReuse(program)
    return any(check.visit(s) for s in program.statements)


class _Shapes(StatementVisitor[None]):
    """Propagates tensor shapes through the statements and refuses an assignment whose value
    does not broadcast to its target block (see :func:`_check_update_shapes`)."""

    consumer = "the block-shape check"

    def __init__(self, program: Program, state: Mapping[Any, torch.Tensor]) -> None:
        self.program = program
        self.shape: dict[Any, tuple[int, ...]] = {b: tuple(x.shape) for b, x in state.items()}
        self.walkers = next(iter(self.shape.values()))[:1]

    def of(self, expr: Any) -> list[tuple[Any, tuple[int, ...]]]:
        return [(s, self.shape[s]) for s in expr.free_symbols if s in self.shape]

    def visit_eval(self, s: Eval) -> None:
        shape = self.shape
        likes = getattr(s.field, "like", None) or (None,) * len(s.outs)
        for o, like in zip(s.outs, likes):
            shape[o] = shape[like] if like in shape else self.walkers

    def visit_let(self, s: Let) -> None:
        parts = self.of(s.expr)
        if parts:
            try:
                self.shape[s.symbol] = tuple(torch.broadcast_shapes(*(p for _, p in parts)))
            except RuntimeError:
                self.shape[s.symbol] = parts[0][1]  # reported where it meets a block

    def visit_assign(self, s: Assign) -> None:
        program, subs = self.program, self.program.substeps
        for target, expr in zip(s.targets, s.exprs):
            want = self.shape.get(target)
            for sym, got in self.of(expr):
                try:
                    ok = tuple(torch.broadcast_shapes(want, got)) == want
                except RuntimeError:
                    ok = False
                if not ok:
                    o = subs[s.substep].occurrence if s.substep < len(subs) else None
                    where = f" in sub-step {s.substep} ({o.letter}[{o.weight}])" if o else ""
                    source = (
                        f"block {sym}"
                        if isinstance(sym, Block)
                        else "a value computed from "
                        + ", ".join(sorted(str(b) for b in _blocks_of(program, sym) if b != target))
                    )
                    raise StateError(
                        f"block {target} of shape {want} is updated from {source} of shape "
                        f"{got}{where}, which does not broadcast to {want}; give the blocks "
                        "matching shapes"
                    )

    def visit_recall(self, s: Recall) -> None:
        for o, like in zip(s.outs, s.like):
            if like in self.shape:
                self.shape[o] = self.shape[like]

    def visit_draw(self, s: Draw) -> None:
        if s.like in self.shape:
            like = self.shape[s.like]  # a uniform selection is one value per walker
            self.shape[s.symbol] = like if s.kind == "normal" else like[:1] + (1,) * (len(like) - 1)

    def visit_metropolis(self, s: Metropolis) -> None:
        # a value kept or restored by the test has the shape of the value it keeps
        for m in s.merges:
            for o, a in zip(m.outs, m.accepted):
                if a in self.shape:
                    self.shape[o] = self.shape[a]

    visit_mark = visit_group_begin = StatementVisitor.skip


def _check_update_shapes(program: Program, state: Mapping[Any, torch.Tensor]) -> None:
    """Refuse blocks whose shapes cannot meet in the word's updates (``q`` of shape (4, 2)
    updated from ``p`` of shape (4, 3)): every assignment must broadcast to its target's shape.

    Shapes are propagated through the program: field values have the shape of their ``like``
    block (one value per walker without one), draws that of their block, temporaries the
    broadcast of what they are computed from.
    """
    _Shapes(program, state).walk(program.statements)


class _Definitions(StatementVisitor[None]):
    """The symbols each temporary or field value is computed from."""

    consumer = "the dependency listing of shape errors"

    def __init__(self) -> None:
        self.defs: dict[Any, Any] = {}

    def visit_let(self, s: Let) -> None:
        self.defs[s.symbol] = s.expr.free_symbols

    def visit_eval(self, s: Eval) -> None:
        for o in s.outs:
            self.defs[o] = set().union(*(a.free_symbols for a in s.args)) if s.args else set()

    def visit_metropolis(self, s: Metropolis) -> None:
        for m in s.merges:
            for o, a, r in zip(m.outs, m.accepted, m.rejected):
                self.defs[o] = {a, r}

    # recalled values come from earlier steps; the rest defines no value
    visit_draw = visit_recall = visit_assign = StatementVisitor.skip
    visit_mark = visit_group_begin = StatementVisitor.skip


def _blocks_of(program: Program, sym: Any) -> set[Any]:
    """The blocks a temporary or field value is computed from (for error messages)."""
    v = _Definitions()
    v.walk(program.statements)
    defs = v.defs
    out, stack, seen = set(), [sym], set()
    while stack:
        x = stack.pop()
        if x in seen:
            continue
        seen.add(x)
        if isinstance(x, Block):
            out.add(x)
        stack.extend(defs.get(x, ()))
    return out


def _counted(counts: list[int], fn: Callable[..., Any], i: int) -> Callable[..., Any]:
    """``fn`` counting its calls in ``counts[i]`` (fields called from inside a flow map)."""

    def call(*args: Any) -> Any:
        counts[i] += 1
        return fn(*args)

    return call


#: The code of a counted call: a traceback through it names field ``i`` (see
#: :meth:`PreparedRun.field_at`).
_COUNTED_CALL = _counted([0], print, 0).__code__


def _no_substep_callback(substep: int, state: tuple[torch.Tensor, ...]) -> None:
    """The hooked step variant of a run prepared without ``on_substep``."""


class _Checks:
    def __init__(self, integ: Integrator, state: Sequence[torch.Tensor]) -> None:
        self.integ = integ
        self.like = {b: x for b, x in zip(integ.program.blocks, state)}

    def check_field(self, i: int, outs: tuple, inputs: tuple, substep: int = 0) -> None:
        bf = self.integ.fields[i]
        f = bf.field
        for name, out, like_block in zip(f.outputs, outs, f.like):
            like = self.like.get(like_block) if like_block is not None else None
            where = f"field {f.name}" + (f" output {name}" if len(f.outputs) > 1 else "")

            def fail(message: str, where: str = where) -> FieldError:
                return FieldError(f"{where} {message}", field=f.name)

            if not isinstance(out, torch.Tensor):
                raise fail(f"returned {type(out).__name__}, not a tensor")
            if like is not None:
                if out.shape != like.shape:
                    raise fail(
                        f"returned shape {tuple(out.shape)}, expected {tuple(like.shape)} "
                        f"(the shape of block {like_block})"
                    )
                if out.dtype != like.dtype:
                    raise fail(f"returned dtype {out.dtype}, the state is {like.dtype}")
                if out.device != like.device:
                    raise fail(f"returned a tensor on {out.device}, the state is on {like.device}")
            if not torch.isfinite(out).all():
                sizes = [float(x.abs().max()) for x in inputs if isinstance(x, torch.Tensor)]
                finite = all(math.isfinite(v) for v in sizes)
                largest = (
                    f" at finite inputs (largest |input| = {max(sizes):.3g})"
                    if sizes and finite
                    else " at non-finite inputs"
                    if sizes
                    else ""
                )
                subs = self.integ.program.substeps
                what = ""
                if substep < len(subs):
                    o = subs[substep].occurrence
                    what = f" for sub-step {substep} ({o.letter}[{o.weight}])"
                raise NonFiniteError(
                    f"{where} returned non-finite values{what}{largest}",
                    substep=substep if substep < len(subs) else None,
                    field=f.name,
                )
            if self.integ.inplace:
                for x in inputs:
                    if (
                        isinstance(x, torch.Tensor)
                        and out.untyped_storage().data_ptr() == x.untyped_storage().data_ptr()
                    ):
                        raise fail(
                            "returned a view of its input; return a new tensor (the "
                            "integrator updates blocks in place)"
                        )

    def check_state(self, substep: int, names: tuple[str, ...], tensors: tuple) -> None:
        for name, x in zip(names, tensors):
            if not torch.isfinite(x).all():
                sub = self.integ.program.substeps[substep]
                o = sub.occurrence
                raise NonFiniteError(
                    f"non-finite values in block {name} after sub-step {substep} "
                    f"({o.letter}[{o.weight}], {sub.solver.method})",
                    substep=substep,
                    block=name,
                )


class PreparedRun:
    """A lowered step with its coefficient schedule and the state of one run: what
    :func:`~splitsde.runtime.integrate.integrate` drives.

    The counters belong to the run, not to the :class:`Integrator`: two runs prepared from
    one integrator count separately.
    """

    def __init__(
        self,
        integ: Integrator,
        lowered: LoweredStep,
        schedule: CoefficientSchedule,
        nfe: list[int],
        accepted: list[torch.Tensor],
    ) -> None:
        self.integrator = integ
        self.lowered = lowered
        self.schedule = schedule
        self.grid = schedule.grid
        #: Field evaluations of this run, one counter per field of the program (in the order
        #: of :attr:`Integrator.fields`), incremented by the generated step.
        self.nfe = nfe
        #: Accepted Metropolis proposals per walker, one int64 tensor per ``{ }`` group.
        self.accepted = accepted

    @property
    def nfe_total(self) -> int:
        """All field evaluations of this run so far."""
        return sum(self.nfe)

    def nfe_by_field(self) -> dict[str, int]:
        return {bf.field.name: c for bf, c in zip(self.integrator.fields, self.nfe)}

    @property
    def source(self) -> str:
        return self.lowered.source

    def window(self, k: int) -> Window:
        """Coefficients and times of the chunk of steps holding step ``k``."""
        return self.schedule.window(k)

    def coefficients(self, k: int) -> tuple:
        return self.schedule.row(k)

    def field_at(self, tb: Any) -> str | None:
        """The name of the field whose call raised, from the traceback ``tb`` of an exception
        that left the generated step (``None`` if no field call was on the stack)."""
        lines = self.lowered.source.splitlines()
        found: str | None = None
        while tb is not None:
            code = tb.tb_frame.f_code
            if code.co_filename == "<splitsde step>" and 0 < tb.tb_lineno <= len(lines):
                m = re.search(r"\b_(f|map)(\d+)\(", lines[tb.tb_lineno - 1])
                if m and m.group(1) == "f":
                    found = self.integrator.fields[int(m.group(2))].field.name
                elif m:
                    found = self.integrator.program.flow_maps[int(m.group(2))].name
            elif code is _COUNTED_CALL and found is not None:
                i = tb.tb_frame.f_locals.get("i")
                if isinstance(i, int):
                    found = self.integrator.fields[i].field.name
            tb = tb.tb_next
        return found

    def call(
        self,
        k: int,
        state: tuple,
        carry: tuple | None,
        *,
        checked: bool = False,
        hooked: bool = False,
    ) -> tuple[tuple, tuple]:
        fn = (
            self.lowered.checked
            if checked
            else self.lowered.hooked
            if hooked
            else self.lowered.fast
        )
        w = self.schedule.window(k)
        c = w.constant if w.constant is not None else w.rows[k - w.start]
        return fn(state, c, carry, w.times[k - w.start], w.h[k - w.start])
