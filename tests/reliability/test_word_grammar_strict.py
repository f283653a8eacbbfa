"""The word grammar accepts ASCII only, points at the offending column, and bounds the length.

Letters are ``A``-``Z`` and digits ``0``-``9`` as documented: look-alike characters from other
scripts are refused, never transliterated (``"ß".upper()`` is ``"SS"``, ``"²".isdigit()`` is
true in Python). The caret under a message is placed by display column, so it stays under the
offending character after tabs, in multi-line text and for wide or combining characters.
"""

from __future__ import annotations

import pytest

import splitsde as sd
from splitsde.compose.word import MAX_LENGTH, MAX_OCCURRENCES, Word, WordError


def _pointer(err: WordError) -> tuple[str, int]:
    """The shown line (without its two-space indent) and the caret's column in it."""
    shown, pointer = str(err).split("\n")[-2:]
    return shown[2:], pointer.index("^") - 2


@pytest.mark.parametrize(
    ("text", "char", "name"),
    [
        ("BAOAß", "ß", "LATIN SMALL LETTER SHARP S"),  # "ß".upper() == "SS"
        ("baoaß", "ß", "LATIN SMALL LETTER SHARP S"),
        ("B² A O A B²", "²", "SUPERSCRIPT TWO"),  # "²".isdigit() is True
        ("B٣ A O", "٣", "ARABIC-INDIC DIGIT THREE"),
        ("B[١/٢] A O A B[١/٢]", "١", "ARABIC-INDIC DIGIT ONE"),
        ("ＢＡＯＡＢ", "Ｂ", "FULLWIDTH LATIN CAPITAL LETTER B"),
        ("BAΟAB", "Ο", "GREEK CAPITAL LETTER OMICRON"),  # looks like O
        ("B\u00a0A O", "\u00a0", "NO-BREAK SPACE"),
        ("B A\u200bO", "\u200b", "ZERO WIDTH SPACE"),
    ],
)
def test_non_ascii_is_refused_not_transliterated(text, char, name):
    with pytest.raises(WordError, match=f"U\\+{ord(char):04X} {name}") as err:
        Word(text)
    assert "ASCII" in str(err.value)
    with pytest.raises(WordError):
        sd.word(text)  # the preset lookup path refuses it too


@pytest.mark.parametrize(
    ("text", "shown", "column"),
    [
        # the caret column is the display column of the offending character in the shown line
        ("B A ; O", "B A ; O", 4),
        ("B\tA ; O", "B       A ; O", 10),  # the tab is shown expanded to column 8
        ("B A\nO ; B", "line 2: O ; B", 10),  # the line is labelled, the caret follows
        ("B A\r\nO ; B", "line 2: O ; B", 10),
        ("ＢA", "ＢA", 0),  # a wide character is the error itself: its first column
        ("BＡO", "BＡO", 1),
        ("BAOA\u0301B", "BAOA\u0301B", 3),  # a combining accent: under the letter it marks
        ("B\x1b[2JA", "B\\x1b[2JA", 1),  # an escape sequence is shown escaped, not run
        ("B A O A B }", "B A O A B }", 10),
        ("{B A O", "{B A O", 0),  # the unclosed brace is named where it opens
        ("B[1/2", "B[1/2", 1),
    ],
)
def test_caret_points_at_the_display_column(text, shown, column):
    with pytest.raises(WordError) as err:
        Word(text)
    assert _pointer(err.value) == (shown, column)


def test_only_plain_ascii_whitespace_separates_letters():
    assert Word("B A\tO\nA\r\nB") == Word("BAOAB")
    for ws in ("\x0b", "\x0c", "\x1c", "\x85", "\u2003", "\u3000"):
        with pytest.raises(WordError):
            Word(f"B{ws}AOAB")


def test_lower_case_rule_looks_at_ascii_letters_only():
    assert Word("baoab") == Word("BAOAB")
    with pytest.raises(WordError, match="mixed upper and lower case") as err:
        Word("BAoAB")
    assert _pointer(err.value) == ("BAoAB", 2)


def test_weights_are_ascii_numbers():
    assert Word("B[1/2] A O A B[0.5]") == Word("BAOAB")
    for bad in ("B[½] A O A B[½]", "B[1⁄2] A O A B[1⁄2]", "B[0,5] A O A B[0,5]"):
        with pytest.raises(WordError):
            Word(bad)


def test_long_words_are_refused_before_any_compilation():
    """Compiling a word costs sympy work per occurrence, so a 1e5-letter word used to take
    minutes and gigabytes; it is refused at once with the reason and the remedy (a text beyond
    MAX_LENGTH characters before tokenising, else by its number of occurrences)."""
    n = MAX_OCCURRENCES
    assert len(Word("B" * n)) == n
    system = sd.langevin.underdamped(sd.potentials.Harmonic(1.0))
    with pytest.raises(WordError, match=f"at most {MAX_OCCURRENCES}") as err:
        system.integrator("BAOAB" * 3_000)
    assert "15000 letter occurrences" in str(err.value)
    assert "more steps" in str(err.value)
    with pytest.raises(WordError, match=f"at most {MAX_LENGTH} characters"):
        Word("B" + " " * MAX_LENGTH + "A")


@pytest.mark.parametrize("value", [None, 3, 2.5, b"BAOAB", ["B", "A"]])
def test_word_of_a_non_string_is_a_word_error(value):
    for fn in (sd.word, sd.Word, sd.preset):
        with pytest.raises(WordError, match=f"got {type(value).__name__}"):
            fn(value)
