"""Repeated groups in the word grammar: ``(w)^n`` is ``w`` written out ``n`` times with its
explicit weights divided by ``n``; the letter-count rule applies to the written-out word.

References are the words written out by hand (strings built independently of the parser), the
hand-composed harmonic step matrices of ``tests/md/md_helpers.py`` and the exact symbolic step
of the written-out word.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
import scipy.linalg
import sympy
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import splitsde as sd
from splitsde.analysis import affine_step, symbolic_step
from splitsde.compose.word import MAX_DEPTH, MAX_OCCURRENCES, Word, WordError
from tests.md.md_helpers import harmonic_step

F = Fraction


def _pointer(err: WordError) -> tuple[str, int]:
    """The shown line (without its two-space indent) and the caret's column in it."""
    shown, pointer = str(err).split("\n")[-2:]
    return shown[2:], pointer.index("^") - 2


def test_mts_word_is_the_written_out_word():
    w = Word("B1 (B0 A O A B0)^2 B1")
    assert [(o.letter, o.weight) for o in w] == [
        ("B1", F(1, 2)),
        ("B0", F(1, 4)),
        ("A", F(1, 4)),
        ("O", F(1, 2)),
        ("A", F(1, 4)),
        ("B0", F(1, 4)),
        ("B0", F(1, 4)),
        ("A", F(1, 4)),
        ("O", F(1, 2)),
        ("A", F(1, 4)),
        ("B0", F(1, 4)),
        ("B1", F(1, 2)),
    ]
    # each occurrence covers its own slice of the step (architecture rule 4)
    assert [(o.start, o.stop) for o in w if o.letter == "O"] == [(0, F(1, 2)), (F(1, 2), 1)]
    assert [o.start for o in w if o.letter == "B0"] == [0, F(1, 4), F(1, 2), F(3, 4)]
    assert w == Word("B1 B0 A O A B0 B0 A O A B0 B1") == "B1 (B0 A O A B0)^2 B1"
    assert hash(w) == hash(Word("B1 B0 A O A B0 B0 A O A B0 B1"))
    assert str(w) == "B1 (B0 A O A B0)^2 B1" and repr(w) == "Word('B1 (B0 A O A B0)^2 B1')"
    assert w.is_symmetric and len(w) == 12 and w.counts == {"B1": 2, "B0": 4, "A": 4, "O": 2}


@pytest.mark.parametrize(
    ("grouped", "written", "text"),
    [
        ("(BAOAB)^1", "BAOAB", "(B A O A B)^1"),
        ("(baoab)^3", "BAOAB BAOAB BAOAB", "(B A O A B)^3"),
        ("B (A)^2 O (A)^2 B", "B A A O A A B", "B (A)^2 O (A)^2 B"),
        # nested counts multiply: B gets 1/12 per occurrence
        ("((B A B)^2 O)^3", "B A B B A B O " * 3, "((B A B)^2 O)^3"),
        # explicit weights inside a group are the letter's share over all passes
        ("(B[1/2] A B[1/2])^2", "B[1/4] A B[1/4] B[1/4] A B[1/4]", "(B A B)^2"),
        (
            "B[1/3] (A B[1/3] A)^2 B[1/3]",
            "B[1/3] A B[1/6] A A B[1/6] A B[1/3]",
            "B[1/3] (A B[1/3] A)^2 B[1/3]",
        ),
        ("(B A[-1/2] B)^2 A[3/2]", "B A[-1/4] B B A[-1/4] B A[3/2]", "(B A[-1/2] B)^2 A[3/2]"),
        # braces: every copy inside a repetition is its own Metropolized group ...
        ("(O {B A B} O)^2", "O {B A B} O O {B A B} O", "(O { B A B } O)^2"),
        # ... and a repetition inside braces is one Metropolized block (HMC with 3 leapfrogs)
        ("O {(B A B)^3} O", "O {B A B B A B B A B} O", "O { (B A B)^3 } O"),
        ("( B A B ) ^ 2", "BABBAB", "(B A B)^2"),
        ("(B A B)^002", "BABBAB", "(B A B)^2"),
    ],
)
def test_repetition_equals_the_written_out_word(grouped, written, text):
    w = Word(grouped)
    assert w == Word(written) and hash(w) == hash(Word(written))
    assert w.groups == Word(written).groups
    assert str(w) == text and Word(str(w)) == w


def test_metropolized_groups_in_repetitions():
    assert Word("(O {B A B} O)^2").groups == ((1, 2, 3), (6, 7, 8))
    assert Word("O {(B A B)^3} O").groups == (tuple(range(1, 10)),)
    assert Word("O {(B A B)^3} O").is_symmetric


@pytest.mark.parametrize(
    ("text", "message", "column"),
    [
        ("B (A O A)^0 B", r"repeat count 0: a group runs at least once \(\^1 or more\)", 10),
        ("B (A O A)^000 B", "repeat count 000: a group runs at least once", 10),
        ("B (A O A)^ B", r"'\^' must be followed by a whole number of repetitions", 9),
        ("B (A O A)^", r"'\^' must be followed by a whole number of repetitions", 9),
        ("B (A O A)^-1 B", r"'\^' must be followed by a whole number of repetitions", 9),
        ("B (A O A)^2.5 B", "repeat count 2.5 is not a whole number", 10),
        ("B (A O A)^3/2 B", "repeat count 3/2 is not a whole number", 10),
        ("B (A O A) B", r"a group '\( ... \)' needs a repeat count: write it as \(...\)\^n", 8),
        ("B (A O A B", r"unbalanced '\(': missing '\)'", 2),
        ("(B (A O A)^2 B", r"unbalanced '\(': missing '\)'", 0),
        ("B A O A) B", r"unbalanced '\)': no matching '\('", 7),
        ("(B A O A B)^2)", r"unbalanced '\)': no matching '\('", 13),
        ("{B (A } O)^2", r"unbalanced '\(': missing '\)'", 3),
        ("(B {A) O}", r"unbalanced '\{': missing '\}'", 3),
        ("B ( ) ^2 A O", r"empty '\( \)' group", 4),
        ("B^2 A O", r"'\^' repeats a parenthesised group and must follow '\)'", 1),
        ("{B A B}^2 O", r"'\^' repeats a parenthesised group and must follow '\)'", 7),
        ("(B)^2[1/2] A O", "a weight must follow a letter", 5),
        ("(B A B)^2 3 O", "a digit must follow a letter", 10),
        ("{(O {B A B} O)^2}", "nested '{' is not allowed", 4),
    ],
)
def test_bad_repetitions_point_at_the_right_column(text, message, column):
    with pytest.raises(WordError, match=message) as err:
        Word(text)
    assert _pointer(err.value) == (text, column)


def test_repeat_counts_are_bounded_after_expansion():
    """The occurrence limit applies to the written-out word, checked before expanding, with the
    exact total and the caret under the count that crosses it."""
    ok = "(B A O A B)^200"
    assert len(Word(ok)) == MAX_OCCURRENCES
    for text, total, column in (
        ("(B A O A B)^201", 1005, 12),
        ("O ((B A B)^10)^34 O", 1021, 15),
        ("B A (O)^999 B A", 1001, 8),
    ):
        msg = f"repeated \\d+ times, {total} letter occurrences;"
        with pytest.raises(WordError, match=msg) as err:
            Word(text)
        assert f"at most {MAX_OCCURRENCES}" in str(err.value)
        assert _pointer(err.value) == (text, column)
    huge = "(BAOAB)^" + "9" * 5000  # no int() of a 5000-digit number, no expansion
    with pytest.raises(WordError, match="more than 10\\^12 letter occurrences") as err:
        Word(huge)
    system = sd.langevin.underdamped(sd.potentials.Harmonic(1.0))
    with pytest.raises(WordError, match=f"at most {MAX_OCCURRENCES}"):
        system.integrator("B A (O A B A)^300 O")


def test_nesting_depth_is_bounded():
    deep = "(" * MAX_DEPTH + "B" + ")^1" * MAX_DEPTH + " A O"
    assert Word(deep) == Word("B A O")
    too_deep = "(" * (MAX_DEPTH + 1) + "B" + ")^1" * (MAX_DEPTH + 1)
    with pytest.raises(WordError, match=f"nest more than {MAX_DEPTH} levels") as err:
        Word(too_deep)
    assert _pointer(err.value) == (too_deep, MAX_DEPTH)


def test_words_pickle_through_their_text():
    import pickle

    w = Word("B1 (B0 A O A B0)^2 B1")
    back = pickle.loads(pickle.dumps(w))
    assert back == w and str(back) == str(w)


# -- property: repetition is writing out ------------------------------------------------------
@st.composite
def _trees(draw, depth=0, in_braces=False):
    """A random word tree: ``["L", letter, weight]``, ``["R", count, items]`` (repeated group)
    and ``["M", items]`` (braces, not nested)."""
    items = []
    for _ in range(draw(st.integers(1, 3))):
        kinds = ["L", "L", "L"] + (["R"] if depth < 3 else [])
        kinds += ["M"] if not in_braces and depth < 3 else []
        kind = draw(st.sampled_from(kinds))
        if kind == "L":
            items.append(["L", draw(st.sampled_from(["A", "B", "O", "B0", "B1"])), None])
        elif kind == "R":
            items.append(["R", draw(st.integers(1, 3)), draw(_trees(depth + 1, in_braces))])
        else:
            items.append(["M", draw(_trees(depth + 1, True))])
    return items


def _leaves(tree) -> list[list]:
    out = []
    for node in tree:
        out += [node] if node[0] == "L" else _leaves(node[-1])
    return out


def _grouped(tree) -> str:
    """The text with groups, each leaf with its written weight (if any)."""
    parts = []
    for node in tree:
        if node[0] == "L":
            parts.append(node[1] if node[2] is None else f"{node[1]}[{node[2]}]")
        elif node[0] == "R":
            parts.append(f"({_grouped(node[2])})^{node[1]}")
        else:
            parts.append("{" + _grouped(node[1]) + "}")
    return " ".join(parts)


def _written_out(tree, scale: int = 1) -> str:
    """The same word written out by hand: each repeated group copied ``count`` times and its
    written weights divided by the product of the enclosing counts."""
    parts = []
    for node in tree:
        if node[0] == "L":
            parts.append(node[1] if node[2] is None else f"{node[1]}[{node[2] / scale}]")
        elif node[0] == "R":
            parts += [_written_out(node[2], scale * node[1])] * node[1]
        else:
            parts.append("{ " + _written_out(node[1], scale) + " }")
    return " ".join(parts)


@settings(max_examples=150, deadline=None)
@given(_trees(), st.booleans(), st.data())
def test_repetition_is_writing_out(tree, weighted, data):
    leaves = _leaves(tree)
    if weighted:
        # written weights: per letter, positive integers normalised to sum to one over the
        # letter's written (not expanded) occurrences
        raw = [data.draw(st.integers(1, 5)) for _ in leaves]
        total: dict[str, int] = {}
        for r, leaf in zip(raw, leaves):
            total[leaf[1]] = total.get(leaf[1], 0) + r
        for r, leaf in zip(raw, leaves):
            leaf[2] = F(r, total[leaf[1]])
    grouped, written = _grouped(tree), _written_out(tree)
    w = Word(grouped)
    assert w == Word(written) and w.groups == Word(written).groups
    assert [o.letter for o in w] == written.replace("{", "").replace("}", "").split() or weighted
    assert Word(str(w)) == w and hash(Word(str(w))) == hash(w)
    for letter in w.letters:
        assert sum(o.weight for o in w if o.letter == letter) == 1


# -- consumers: program, exact analysis, torch ---------------------------------------------
K_SLOW, K_FAST, H = 0.25, 4.0, 0.9
MTS, WRITTEN = "B1 (B0 A O A B0)^2 B1", "B1 B0 A O A B0 B0 A O A B0 B1"


def _two_groups():
    pots = [sd.potentials.Harmonic(math.sqrt(K_FAST)), sd.potentials.Harmonic(math.sqrt(K_SLOW))]
    return sd.langevin.underdamped(pots, gamma=1.0, kT=1.0, mass=1.0, force_groups=True)


def test_exact_one_step_map_of_the_grouped_word():
    """The symbolic one-step map of the grouped word (the program's own statements run with
    sympy) equals that of the written-out word exactly, and both equal the hand-composed
    letter matrices at a numeric step."""
    system = _two_groups()
    grouped, written = symbolic_step(system, MTS), symbolic_step(system, WRITTEN)
    assert grouped.word == MTS
    for a, b in ((grouped.Phi, written.Phi), (grouped.cov, written.cov), (grouped.c, written.c)):
        assert (a - b).applyfunc(sympy.simplify) == sympy.zeros(*a.shape)
    num = grouped.numeric({"gamma": 1.0, "M": 1.0, "kT": 1.0}, H)
    Phi, Q = harmonic_step(WRITTEN, H, k={"B0": K_FAST, "B1": K_SLOW}, m=1.0, gamma=1.0)
    np.testing.assert_allclose(num.Phi, Phi, rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(num.noise @ num.noise.T, Q, rtol=1e-13, atol=1e-14)
    # the probed compiled torch step is the same affine map
    probed = affine_step(system.integrator(MTS), 0.0, H)
    np.testing.assert_allclose(probed.Phi, Phi, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(probed.noise @ probed.noise.T, Q, rtol=1e-12, atol=1e-13)


def test_grouped_word_runs_draw_for_draw_like_the_written_out_word():
    system = _two_groups()
    y0 = system.initial_state(32, dim=2, generator=torch.Generator().manual_seed(0))
    a = sd.integrate(system.integrator(MTS), y0, h=H, steps=20, seed=3)
    b = sd.integrate(system.integrator(WRITTEN), y0, h=H, steps=20, seed=3)
    assert torch.equal(a.final["q"], b.final["q"]) and torch.equal(a.final["p"], b.final["p"])
    assert a.nfe_by_field == b.nfe_by_field


@pytest.mark.parametrize(
    ("n", "var_q", "var_p"),
    [
        (1, 0.061538, 0.17734),
        (2, 0.062191, 0.78633),
        (4, 0.062210, 0.93864),
        (8, 0.062214, 0.97672),
    ],
)
def test_multi_rate_table_of_the_docs(n, var_q, var_p):
    """docs/words.md, 'A multi-rate example': stationary variances of the probed compiled step
    of ``B1 (B0 A O A B0)^n B1`` equal those of the step matrices composed by hand from the word
    written out as a string."""
    stiff, soft = sd.potentials.Harmonic(4.0), sd.potentials.Harmonic(0.5)
    system = sd.langevin.underdamped([stiff, soft], gamma=1.0, kT=1.0, force_groups=True)
    integ = system.integrator(f"B1 (B0 A O A B0)^{n} B1")
    _, cov = sd.analysis.stationary(affine_step(integ, 0.0, 0.45))
    written = " ".join(["B1", *["B0 A O A B0"] * n, "B1"])
    Phi, Q = harmonic_step(written, 0.45, k={"B0": 16.0, "B1": 0.25}, m=1.0, gamma=1.0)
    ref = scipy.linalg.solve_discrete_lyapunov(Phi, Q)
    np.testing.assert_allclose(cov, ref, rtol=1e-10, atol=1e-14)
    assert ref[0, 0] == pytest.approx(var_q, abs=5e-7)
    assert ref[1, 1] == pytest.approx(var_p, abs=5e-6)
