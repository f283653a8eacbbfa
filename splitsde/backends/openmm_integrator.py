r"""A splitting word as an :class:`openmm.CustomIntegrator` that behaves like OpenMM's own
thermostated integrators.

The computations come from :func:`splitsde.backends.openmm_program.compile_openmm`. This module
adds what OpenMM and its ecosystem expect of an integrator object: ``getTemperature`` /
``setTemperature`` / ``getFriction`` / ``setFriction`` (so openmmtools' ``ThermodynamicState``,
MCMC moves and ``multistate`` samplers recognise it as thermostated), ``copy.deepcopy`` and
pickling that keep the word and the step program, checks of the system it runs on, and
warnings for words that cannot sample the canonical distribution.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

from splitsde.backends.openmm_program import OpenMMProgram, compile_openmm
from splitsde.backends.openmm_system import (
    BOLTZMANN,
    OpenMMError,
    check_force_groups,
    value_in,
)
from splitsde.base.optional import require
from splitsde.compose.reduce import ReducedWord, Reduction
from splitsde.compose.word import Word, WordError

openmm = require("openmm", extra="md", feature="the OpenMM backend")
unit = require("openmm.unit", extra="md", feature="the OpenMM backend")

__all__ = ["LangevinSplittingIntegrator", "SplittingWarning", "make_context"]

# forces outside the kicked groups are reported when their RMS exceeds this fraction of the
# total force's at the first step (rounding of separately evaluated groups is ~1e-7)
_UNKICKED_RMS = 1e-4


class SplittingWarning(UserWarning):
    """A word or system that runs but probably not as intended (no thermostat, atoms that
    never move, forces that no letter kicks)."""


def _reduction(reduction: Reduction | str | None) -> Reduction | None:
    if reduction is None or isinstance(reduction, Reduction):
        return reduction
    if isinstance(reduction, str):
        if reduction not in ("exact", "none", "per_step"):
            raise WordError(
                f"reduction must be 'exact', 'none' (both expressible in OpenMM) or a Reduction, "
                f"got {reduction!r}"
            )
        return Reduction(reuse=reduction)  # type: ignore[arg-type]
    raise WordError(f"reduction must be a string or a Reduction, got {type(reduction).__name__}")


def _temperature(temperature: Any) -> float:
    T = value_in(temperature, unit.kelvin, "temperature")
    if not T > 0:
        raise OpenMMError(f"temperature must be positive, got {temperature}")
    return T


def _friction(friction: Any) -> float:
    gamma = value_in(friction, unit.picoseconds**-1, "friction")
    if not gamma >= 0:
        raise OpenMMError(f"friction must be non-negative, got {friction}")
    return gamma


_ADD = {
    "global": "addComputeGlobal",
    "perdof": "addComputePerDof",
    "sum": "addComputeSum",
}


def _populate(integ: openmm.CustomIntegrator, compiled: OpenMMProgram) -> dict[int, str]:
    """Add the variables and computations of ``compiled`` to ``integ``; return the notes by
    computation index (for :meth:`LangevinSplittingIntegrator.listing`)."""
    for name, value in compiled.globals_.items():
        integ.addGlobalVariable(name, value)
    for name in compiled.perdof:
        integ.addPerDofVariable(name, 0.0)
    integ.setKineticEnergyExpression(compiled.kinetic)
    notes: dict[int, str] = {}
    for op in compiled.ops:
        if op.note:
            notes[integ.getNumComputations()] = op.note
        if op.kind in _ADD:
            getattr(integ, _ADD[op.kind])(op.var, op.expr)
        elif op.kind == "constrain_x":
            integ.addConstrainPositions()
        elif op.kind == "constrain_v":
            integ.addConstrainVelocities()
        elif op.kind == "update":
            integ.addUpdateContextState()
        elif op.kind == "if":
            integ.beginIfBlock(op.expr)
        elif op.kind == "end":
            integ.endBlock()
        else:  # pragma: no cover - internal
            raise AssertionError(op.kind)
    return notes


def _computations(integ: openmm.CustomIntegrator) -> list[tuple[int, str, str]]:
    return [tuple(integ.getComputationStep(i)) for i in range(integ.getNumComputations())]


class LangevinSplittingIntegrator(openmm.CustomIntegrator):
    r"""A splitting word compiled to an :class:`openmm.CustomIntegrator`.

    Parameters
    ----------
    word:
        A word or preset over the letters A, B (or B0, B1, ... for force groups) and O, with
        optional ``{ }`` Metropolized groups: ``"BAOAB"``, ``"GHMC"``,
        ``"B1 B0 A O A B0 B0 A O A B0 B1"``. Weights follow the letter-count rule of the grammar.
    timestep, temperature, friction:
        Step :math:`h` (ps), heat-bath temperature (K) and friction :math:`\gamma` (1/ps);
        floats or :mod:`openmm.unit` quantities.
    reduction:
        Evaluation-reuse rules: ``"exact"`` (default: reuse a force only at unchanged
        positions) or ``"none"`` (no reuse), or a :class:`~splitsde.compose.reduce.Reduction`.
        OpenMM evaluates forces at the current positions, so ``"per_step"`` is refused.
    measure_heat, measure_shadow_work:
        Accumulate the heat (kinetic-energy change of the O sub-steps) and the shadow work
        (total energy change minus heat) in the globals ``heat`` and ``shadow_work`` (kJ/mol).
    constraint_tolerance:
        Relative tolerance of OpenMM's constraint algorithms (default: OpenMM's).

    Notes
    -----
    Like OpenMM's thermostated integrators it has ``getTemperature``, ``setTemperature``,
    ``getFriction``, ``setFriction`` and ``getStepSize``; a word without ``O`` is not coupled
    to a heat bath and, like :class:`openmm.VerletIntegrator`, has no temperature (those
    methods raise :class:`AttributeError`, which is how openmmtools tells the two apart).
    ``copy.deepcopy`` and pickling keep the word and the step program. Declared weak order and
    invariant-measure behaviour are those of the word (:mod:`splitsde.compose.presets`); the
    program is the torch backend's.

    Warns (:class:`SplittingWarning`) for a word without ``O`` (temperature and friction are
    ignored: NVE) and a word without ``A`` (atoms never move).
    """

    def __init__(
        self,
        word: str | Word | ReducedWord = "BAOAB",
        timestep: Any = 0.001,
        temperature: Any = 298.0,
        friction: Any = 1.0,
        *,
        reduction: Reduction | str | None = None,
        measure_heat: bool = False,
        measure_shadow_work: bool = False,
        constraint_tolerance: float | None = None,
    ) -> None:
        dt = value_in(timestep, unit.picoseconds, "timestep")
        if not dt > 0:
            raise OpenMMError(f"timestep must be positive, got {timestep}")
        T, gamma = _temperature(temperature), _friction(friction)
        reduction = _reduction(reduction)
        if isinstance(word, ReducedWord):
            if reduction is not None:
                raise WordError("give the reduction either in the word or as reduction=, not both")
            word, reduction = word.word, word.reduction
        config = {
            "word": word if isinstance(word, str) else str(word),
            "reduction": reduction,
            "measure_heat": bool(measure_heat),
            "measure_shadow_work": bool(measure_shadow_work),
        }
        compiled = compile_openmm(
            word,
            reduction,
            kT=BOLTZMANN * T,
            gamma=gamma,
            measure_heat=config["measure_heat"],
            measure_shadow_work=config["measure_shadow_work"],
        )
        super().__init__(dt)
        if constraint_tolerance is not None:
            self.setConstraintTolerance(float(constraint_tolerance))
        self._setup(compiled, config, _populate(self, compiled))
        counts = self.word.counts
        if "O" not in counts:
            what = (
                "temperature enters only the Metropolis test and momenta are never refreshed"
                if self.program.groups
                else "temperature and friction are ignored (NVE: energy is conserved up to the "
                "splitting error)"
            )
            warnings.warn(
                f"word {self.word} has no O letter: it is not coupled to a heat bath; {what}",
                SplittingWarning,
                stacklevel=2,
            )
        if "A" not in counts:
            warnings.warn(
                f"word {self.word} has no A letter: the atoms never move",
                SplittingWarning,
                stacklevel=2,
            )

    def _setup(self, compiled: OpenMMProgram, config: dict[str, Any], notes: dict) -> None:
        self.program = compiled.program
        self.word = self.program.word
        self.reduction = self.program.reduction
        self.kick_groups = list(compiled.kick_groups)
        self.measure_heat = config["measure_heat"]
        self.measure_shadow_work = config["measure_shadow_work"]
        self._config = config
        self._notes = notes
        self._groups_pending = bool(compiled.kick_groups)

    # -- running -----------------------------------------------------------------------------
    def step(self, steps: int) -> None:
        """Advance ``steps`` steps (``openmm.CustomIntegrator.step``). After the first step of
        a word with force-group kicks in a context not made by :func:`make_context`, warn if
        a kicked group held no forces or forces outside the kicked groups were ignored."""
        super().step(steps)
        if self._groups_pending:
            self._report_groups()

    def _report_groups(self) -> None:
        get = self.getGlobalVariableByName
        if get("groups_checked") != 1.0:
            return
        self._groups_pending = False
        problems = []
        empty = [
            k
            for k in self.kick_groups
            if get(f"group_energy_{k}") == 0.0 and get(f"group_force_{k}") == 0.0
        ]
        if empty:
            problems.append(
                f"it kicks force group(s) {empty}, which had no energy and no forces at the "
                "first step (no forces in them?)"
            )
        total, unkicked = get("total_force"), get("unkicked_force")
        if total > 0 and unkicked > _UNKICKED_RMS**2 * total:
            problems.append(
                f"forces outside its kicked groups {self.kick_groups} are ignored (their RMS is "
                f"{math.sqrt(unkicked / total):.2g} of the total force at the first step)"
            )
        if problems:
            warnings.warn(
                f"word {self.word}: " + "; ".join(problems) + ". Check force.setForceGroup(...) "
                "and NonbondedForce.setReciprocalSpaceForceGroup(...); "
                "integrator.check_system(system) names the groups",
                SplittingWarning,
                stacklevel=3,
            )

    # -- OpenMM's thermostated-integrator interface -----------------------------------------
    @property
    def thermostated(self) -> bool:
        """Whether the word couples to a heat bath (has an O letter)."""
        return "O" in self.word.counts

    def _heat_bath(self, what: str) -> None:
        if not self.thermostated:
            raise AttributeError(
                f"{what}: word {self.word} has no O letter, so it is not coupled to a heat bath "
                "(like openmm.VerletIntegrator); its kT, used by Metropolis tests, is the "
                "global variable 'kT'"
            )

    def getTemperature(self) -> unit.Quantity:
        """Heat-bath temperature (K)."""
        self._heat_bath("getTemperature")
        return self.getGlobalVariableByName("kT") / BOLTZMANN * unit.kelvin

    def setTemperature(self, temperature: Any) -> None:
        """Set the heat-bath temperature (K, or a quantity); the kT-dependent coefficients are
        recomputed on the next step."""
        self._heat_bath("setTemperature")
        self.setGlobalVariableByName("kT", BOLTZMANN * _temperature(temperature))

    def getFriction(self) -> unit.Quantity:
        r"""Friction :math:`\gamma` (1/ps)."""
        self._heat_bath("getFriction")
        return self.getGlobalVariableByName("gamma") / unit.picosecond

    def setFriction(self, friction: Any) -> None:
        r"""Set the friction :math:`\gamma` (1/ps, or a quantity)."""
        self._heat_bath("setFriction")
        self.setGlobalVariableByName("gamma", _friction(friction))

    def refresh_constants(self) -> None:
        """Force the coefficients to be recomputed on the next step (after changing masses)."""
        self.setGlobalVariableByName("kT_used", -1.0)

    @property
    def kT(self) -> float:
        """Thermal energy in kJ/mol."""
        return self.getGlobalVariableByName("kT")

    # -- measurements -----------------------------------------------------------------------
    def _measured(self, name: str, flag: bool, dimensionless: bool) -> float:
        if not flag:
            raise RuntimeError(f"construct the integrator with measure_{name}=True to read {name}")
        v = self.getGlobalVariableByName(name)
        return v / self.kT if dimensionless else v

    def get_heat(self, dimensionless: bool = False) -> float:
        """Accumulated heat in kJ/mol (or in units of kT)."""
        return self._measured("heat", self.measure_heat or self.measure_shadow_work, dimensionless)

    def get_shadow_work(self, dimensionless: bool = False) -> float:
        """Accumulated shadow work in kJ/mol (or in units of kT)."""
        return self._measured("shadow_work", self.measure_shadow_work, dimensionless)

    @property
    def acceptance_rate(self) -> float | None:
        """Accepted / attempted Metropolis proposals over all ``{ }`` groups."""
        if not self.program.groups:
            return None
        acc = sum(self.getGlobalVariableByName(f"naccept{g.index}") for g in self.program.groups)
        tri = sum(self.getGlobalVariableByName(f"ntrials{g.index}") for g in self.program.groups)
        return acc / tri if tri else float("nan")

    def reset_statistics(self) -> None:
        """Zero the heat, shadow work and acceptance counters."""
        names = {self.getGlobalVariableName(i) for i in range(self.getNumGlobalVariables())}
        for n in ("heat", "shadow_work"):
            if n in names:
                self.setGlobalVariableByName(n, 0.0)
        for g in self.program.groups:
            self.setGlobalVariableByName(f"naccept{g.index}", 0.0)
            self.setGlobalVariableByName(f"ntrials{g.index}", 0.0)

    # -- systems ----------------------------------------------------------------------------
    def check_system(self, system: openmm.System) -> None:
        """Refuse a system the word does not integrate correctly: force groups left out or
        kicks of empty groups (reciprocal-space groups of PME count), a second thermostat.
        Raises :class:`~splitsde.backends.openmm_system.OpenMMError`."""
        check_force_groups(system, self.word, self.kick_groups, self.thermostated)

    # -- copies -----------------------------------------------------------------------------
    def __copy__(self) -> LangevinSplittingIntegrator:
        dup = openmm.XmlSerializer.clone(self)
        dup.__class__ = type(self)
        # the word, program and notes are immutable: share them
        dup.__dict__.update({k: v for k, v in self.__dict__.items() if k != "this"})
        if self.kick_groups:  # a copy may run on another system: check it again
            dup.setGlobalVariableByName("groups_checked", 0.0)
            dup._groups_pending = True
        return dup

    def __deepcopy__(self, memo: dict) -> LangevinSplittingIntegrator:
        return self.__copy__()

    def __getstate__(self) -> dict[str, Any]:
        return {"xml": openmm.XmlSerializer.serialize(self), "config": self._config}

    def __setstate__(self, state: dict[str, Any]) -> None:
        restored = openmm.XmlSerializer.deserialize(state["xml"])
        self.this = restored.this
        config = state["config"]
        compiled = compile_openmm(
            config["word"],
            config["reduction"],
            kT=1.0,
            gamma=1.0,
            measure_heat=config["measure_heat"],
            measure_shadow_work=config["measure_shadow_work"],
        )
        fresh = openmm.CustomIntegrator(1.0)
        notes = _populate(fresh, compiled)
        if _computations(fresh) != _computations(self):
            raise OpenMMError(
                f"the pickled integrator for word {config['word']} runs a different OpenMM "
                "program than this version of splitsde compiles; rebuild it from the word"
            )
        self._setup(compiled, config, notes)

    # -- display ----------------------------------------------------------------------------
    def listing(self) -> str:
        """The generated OpenMM program, annotated with the sub-steps it implements."""
        kinds = {
            self.ComputeGlobal: "global ",
            self.ComputePerDof: "per-DOF",
            self.ComputeSum: "sum    ",
        }
        lines = [f"OpenMM CustomIntegrator for word {self.word}"]
        depth = 0
        for i in range(self.getNumComputations()):
            kind, var, expr = self.getComputationStep(i)
            if i in self._notes:
                lines.append(f"  -- {self._notes[i]}")
            pad = "  " * depth
            if kind in kinds:
                lines.append(f"  {i:3d} {pad}{kinds[kind]}  {var} = {expr}")
            elif kind == self.ConstrainPositions:
                lines.append(f"  {i:3d} {pad}constrain positions")
            elif kind == self.ConstrainVelocities:
                lines.append(f"  {i:3d} {pad}constrain velocities")
            elif kind == self.UpdateContextState:
                lines.append(f"  {i:3d} {pad}update context state")
            elif kind == self.IfBlockStart:
                lines.append(f"  {i:3d} {pad}if ({expr}) {{")
                depth += 1
            elif kind == self.BlockEnd:
                depth -= 1
                lines.append(f"  {i:3d} {'  ' * depth}}}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"LangevinSplittingIntegrator({str(self.word)!r}, dt={self.getStepSize()})"


def make_context(
    system: openmm.System,
    integrator: LangevinSplittingIntegrator,
    positions: Any,
    *,
    platform: str = "CPU",
    threads: int | None = 1,
    seed: int | None = None,
    velocities: Any = None,
) -> openmm.Context:
    """An :class:`openmm.Context` for ``integrator`` after :meth:`~LangevinSplittingIntegrator.
    check_system`, on ``platform`` with a fixed thread count (CPU) and random seed."""
    integrator.check_system(system)
    plat = openmm.Platform.getPlatformByName(platform)
    props = {}
    if platform == "CPU" and threads is not None:
        props["Threads"] = str(int(threads))
    if seed is not None:
        integrator.setRandomNumberSeed(int(seed))
    ctx = openmm.Context(system, integrator, plat, props)
    if integrator.kick_groups:  # checked exactly above: skip the first-step measurement
        integrator.setGlobalVariableByName("groups_checked", 1.0)
        integrator._groups_pending = False
    ctx.setPositions(positions)
    if velocities is not None:
        ctx.setVelocities(velocities)
    return ctx
