"""The word grammar: parsing, weights, slices, symmetry, presets, and every error path."""

from __future__ import annotations

import itertools
from fractions import Fraction

import pytest
from hypothesis import given

import splitsde as sd
from splitsde.compose.word import Word, WordError
from tests.strategies import LANGEVIN_LETTERS, words

ABO = ("A", "B", "O")


def weights(w: Word) -> list[tuple[str, Fraction]]:
    return [(o.letter, o.weight) for o in w]


def test_letter_count_rule_and_slices():
    w = Word("BAOAB")
    F = Fraction
    assert weights(w) == [
        ("B", F(1, 2)),
        ("A", F(1, 2)),
        ("O", F(1)),
        ("A", F(1, 2)),
        ("B", F(1, 2)),
    ]
    assert [(o.start, o.stop) for o in w if o.letter == "B"] == [(0, F(1, 2)), (F(1, 2), 1)]
    assert Word("B A O A B") == w == Word("baoab") == "BAOAB"


def test_explicit_and_multicharacter_letters():
    w = Word("B[1/4] A[1/2] B[1/4] O B[1/4] A[1/2] B[1/4]")
    assert [o.weight for o in w if o.letter == "B"] == [Fraction(1, 4)] * 4
    w2 = Word("B0 B1 A[0.25] A[1/4] O A[1/4] A[0.25] B1 B0")
    assert w2.letters == ("B0", "B1", "A", "O") and w2.counts["B1"] == 2
    assert Word("B[-1/3] A B[4/3]").occurrences[0].weight == Fraction(-1, 3)
    assert str(Word("B[1/3] A B[2/3]")) == "B[1/3] A B[2/3]"


def test_symmetry_is_exact():
    assert Word("BAOAB").is_symmetric and Word("OBABO").is_symmetric
    assert not Word("BAOA").is_symmetric and not Word("OBA").is_symmetric
    assert not Word("B[1/3] A O A B[2/3]").is_symmetric
    assert Word("A A B A A").is_symmetric  # adjacent occurrences merge
    assert Word("O{BAB}O").is_symmetric and not Word("O{BA}BO").is_symmetric


def test_presets_are_data():
    for name, p in sd.PRESETS.items():
        w = sd.word(name)
        assert w == Word(p.word) and p.weak_order in (1, 2)
    assert sd.word("VVVR") == Word("OBABO") and sd.word("langevinmiddle") == Word("BAOA")
    assert all(sd.preset(w).weak_order == 1 for w in ("ABO", "AOB", "BAO", "BOA", "OAB", "OBA"))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty word"),
        ("   ", "empty word"),
        ("BAXAB", "unknown letter 'X'.*valid letters: A, B, O"),
        ("OR", "unknown letter 'R'"),
        ("B12AOA", "unknown letter 'B12'"),
        ("B[1/4] A O A B", "some occurrences only"),
        ("B[1/4] A O A B[1/2]", "sum to 3/4, not 1"),
        ("B,A,O", "unexpected character ','"),
        ("B A O * A B", r"unexpected character '\*'"),
        ("B[1/2 A O A B[1/2]", r"unbalanced '\['"),
        ("B] A O", r"unbalanced '\]'"),
        ("{B A O", r"unbalanced '\{'"),
        ("B A } O", r"unbalanced '\}'"),
        ("{B {A} O}", "nested"),
        ("O {} A B", "empty"),
        ("BaOAB", "mixed upper and lower case"),
        ("B[0] A O A B[1]", "zero"),
        ("B[1/0] A O", "divides by zero"),
        ("B[x] A O", "not a number"),
        ("[1/2]B A O", "must follow a letter"),
        ("0B A O", "digit must follow a letter"),
    ],
)
def test_bad_words_have_clear_messages(text, message):
    with pytest.raises(WordError, match=message):
        Word(text, alphabet=ABO)


def test_error_points_at_the_character():
    with pytest.raises(WordError) as err:
        Word("BA;OAB")
    assert "^" in str(err.value) and "BA;OAB" in str(err.value)


@given(words(LANGEVIN_LETTERS, max_size=9))
def test_round_trip(text):
    w = Word(text)
    assert Word(str(w)) == w and hash(Word(str(w))) == hash(w)


@given(words(LANGEVIN_LETTERS, max_size=7, weighted=True))
def test_weighted_round_trip_and_slices(text):
    w = Word(text)
    assert Word(str(w)) == w
    for letter in w.letters:
        occ = [o for o in w if o.letter == letter]
        assert sum(o.weight for o in occ) == 1
        assert occ[0].start == 0 and occ[-1].stop == 1
        assert all(a.stop == b.start for a, b in itertools.pairwise(occ))


@given(words(LANGEVIN_LETTERS, max_size=7))
def test_default_weight_symmetry_is_palindrome(text):
    w = Word(text)
    letters = [o.letter for o in w]
    assert w.is_symmetric == (letters == letters[::-1])


def test_words_are_immutable():
    w = Word("BAOAB")
    with pytest.raises(AttributeError):
        w.occurrences = ()
