"""The program builder's passes: block versions, unique value names, one program per builder."""

from __future__ import annotations

import pytest
import sympy

import splitsde as sd
from splitsde.compose.builder import ProgramBuilder, build_program
from splitsde.compose.presets import word as parse_word
from splitsde.compose.program import Eval, Metropolis, Recall
from splitsde.symbolic.expint import ExponentialMultistep
from splitsde.symbolic.poisson import PoissonMidpoint


def _langevin() -> sd.SDE:
    return sd.langevin.underdamped(sd.potentials.Harmonic(1.0)).sde


@pytest.mark.parametrize(
    ("word", "assigned"),
    # A assigns q, B and O assign p; a Metropolis test may restore q and p: one more version
    [("BAOAB", {"q": 2, "p": 3}), ("OBABO", {"q": 1, "p": 4}), ("O{BAB}O", {"q": 2, "p": 5})],
)
def test_block_versions_count_the_assignments(word, assigned):
    builder = ProgramBuilder(_langevin(), parse_word(word))
    builder.build()
    assert {b.name: v for b, v in builder.versions.items()} == assigned


def test_a_builder_builds_one_program():
    builder = ProgramBuilder(_langevin(), parse_word("BAOAB"))
    builder.build()
    with pytest.raises(RuntimeError, match="one program"):
        builder.build()


def _value_names(program) -> list[str]:
    names = []
    for s in program.statements:
        if isinstance(s, (Eval, Recall)):
            names += [o.name for o in s.outs]
        elif isinstance(s, Metropolis):
            names += [o.name for m in s.merges for o in m.outs]
    return names


def test_value_names_are_unique_across_passes():
    """Evaluations, masked evaluations, merges and recalls share one numbering."""
    x = sd.Block("x")
    kT = sd.Parameter("kT", positive=True)
    F = sd.Field("F", [x])
    sde = sd.SDE([x], {"L": sd.Flow({x: F()}, {x: sympy.sqrt(2 * kT)})})
    programs = [
        build_program(_langevin(), parse_word("O{BAB}O {BAB} O")),
        build_program(sde.with_solvers({"L": PoissonMidpoint(4, 1)}), parse_word("L L")),
        build_program(
            sd.SDE([x], {"N": sd.Flow({x: -x + F()})}).with_solvers(
                {"N": ExponentialMultistep(2, "t")}
            ),
            parse_word("N N"),
        ),
    ]
    kinds = ["_m", "_sel", "_lag"]
    for program, kind in zip(programs, kinds):
        names = _value_names(program)
        assert any(kind in n for n in names), (kind, names)
        assert len(names) == len(set(names)), names
