r"""Splitting words: a small grammar, parsed (never evaluated), with exact weights.

Grammar (whitespace between items is optional)::

    word    := item+
    item    := letter weight? | "{" (letter weight?)+ "}"
    letter  := [A-Z][0-9]*            e.g.  A  B  O  B0  B12
    weight  := "[" number "]"          e.g.  [1/4]  [0.5]  [-1/3]

A letter occurring :math:`k` times without explicit weights gets weight :math:`1/k` per
occurrence (the letter-count rule: ``BAOAB`` is :math:`B_{1/2} A_{1/2} O_1 A_{1/2} B_{1/2}`).
Explicit weights are exact fractions; a letter either has weights on all its occurrences or
on none, and they sum to one. Braces ``{ ... }`` mark a Metropolized group (GHMC).

Each occurrence integrates its own slice of the step (architecture rule 4): with weights
:math:`f_1, f_2, \dots` for a letter, its :math:`k`-th occurrence covers
:math:`[t + h(f_1 + \dots + f_{k-1}),\; t + h(f_1 + \dots + f_k)]`.

Words in all lower case are accepted (``baoab``): letters are upper case and digits, so the
reading is unambiguous. Mixed case is refused because the intent is unclear.

Only ASCII is accepted: letters ``A``-``Z`` (or ``a``-``z``), digits ``0``-``9``, the brackets,
braces, ``/ . -`` inside weights, and plain space, tab and line breaks between items. A
look-alike from another script (``ß``, ``²``, Arabic-Indic digits, full-width letters, a
no-break space) is refused with its Unicode name, never transliterated. A word has at most
:data:`MAX_OCCURRENCES` letter occurrences and :data:`MAX_LENGTH` characters: compiling costs
sympy work for every occurrence, and ``k`` repetitions of a word under the letter-count rule are
``k`` steps of that word with step ``h/k``.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction

from splitsde.caret import caret
from splitsde.errors import SplitsdeError
from splitsde.symbolic.symbols import LETTER

__all__ = ["LETTER", "MAX_LENGTH", "MAX_OCCURRENCES", "Occurrence", "Word", "WordError"]

#: Most letter occurrences in one word (compiling costs about a millisecond per occurrence).
MAX_OCCURRENCES = 1000
#: Longest accepted text of a word, in characters.
MAX_LENGTH = 20_000

_SPACE = " \t\r\n"
_DIGITS = "0123456789"


class WordError(SplitsdeError, ValueError):
    """A word that does not parse or does not fit the SDE; the message says where and why."""


_caret = caret


def _parse_weight(raw: str, text: str, pos: int) -> Fraction:
    s = raw.strip(_SPACE)
    if not re.fullmatch(r"-?([0-9]+(/[0-9]+)?|[0-9]*\.[0-9]+|[0-9]+\.[0-9]*)", s):
        raise WordError(f"weight [{raw}] is not a number like 1/4 or 0.25" + _caret(text, pos))
    try:
        w = Fraction(s)
    except ZeroDivisionError as exc:
        raise WordError(f"weight [{raw}] divides by zero" + _caret(text, pos)) from exc
    if w == 0:
        raise WordError(f"weight [{raw}] is zero; drop the letter instead" + _caret(text, pos))
    return w


@dataclass(frozen=True)
class Occurrence:
    """One occurrence of a letter: its weight and its slice ``[offset, offset + weight]``
    (in units of the step) for that letter's clock."""

    letter: str
    weight: Fraction
    index: int
    offset: Fraction
    group: int | None = None

    @property
    def start(self) -> Fraction:
        return self.offset

    @property
    def stop(self) -> Fraction:
        return self.offset + self.weight


@dataclass(frozen=True)
class _Token:
    letter: str
    weight: Fraction | None
    group: int | None
    pos: int


def _check_ascii(text: str) -> None:
    """Refuse the first character outside the grammar's ASCII alphabet, by its Unicode name."""
    for i, c in enumerate(text):
        if c.isascii():
            continue
        if c.isspace() or unicodedata.category(c) == "Cf":
            hint = "separate letters with plain spaces"
        elif c.isdigit() or unicodedata.category(c) == "No":
            hint = "force-group digits and weights use 0-9"
        else:
            hint = "letters are A-Z"
        name = unicodedata.name(c, "unnamed character")
        raise WordError(
            f"character {c!r} (U+{ord(c):04X} {name}) is not allowed: words are ASCII only; "
            f"{hint}" + _caret(text, i)
        )


def _tokenize(text: str) -> list[_Token]:
    if not isinstance(text, str):
        raise WordError(f"a word must be a string, got {type(text).__name__}")
    if len(text) > MAX_LENGTH:
        raise WordError(
            f"the word is {len(text)} characters long; at most {MAX_LENGTH} characters are "
            "accepted (one step of a scheme, not many steps written out)"
        )
    if not text.strip(_SPACE):
        raise WordError("empty word: give at least one letter, e.g. 'BAOAB'")
    _check_ascii(text)
    alpha = [c for c in re.sub(r"\[[^\]]*\]?", "", text) if c.isalpha()]
    lower = bool(alpha) and all(c.islower() for c in alpha)
    if not lower and any(c.islower() for c in alpha):
        i = next(i for i, c in enumerate(text) if c.islower())
        raise WordError(
            "mixed upper and lower case is ambiguous; write letters in upper case" + _caret(text, i)
        )
    src = text.upper() if lower else text
    tokens: list[_Token] = []
    group: int | None = None
    n_groups = 0
    group_open = -1
    can_weight = False
    i = 0
    while i < len(src):
        c = src[i]
        if c in _SPACE:
            i += 1
        elif "A" <= c <= "Z":
            j = i + 1
            while j < len(src) and src[j] in _DIGITS:
                j += 1
            if len(tokens) == MAX_OCCURRENCES:
                n = len(tokens) + sum(1 for ch in src[j:] if "A" <= ch <= "Z") + 1
                raise WordError(
                    f"word has {n} letter occurrences; at most {MAX_OCCURRENCES} are allowed "
                    "(compiling costs about a millisecond per occurrence and the generated step "
                    "grows with the word). A word repeated k times is k steps of the shorter "
                    "word with step h/k: use the shorter word and more steps."
                )
            tokens.append(_Token(src[i:j], None, group, i))
            can_weight = True
            i = j
        elif c == "[":
            if not can_weight:
                raise WordError("a weight must follow a letter" + _caret(text, i))
            can_weight = False
            end = src.find("]", i)
            nxt = src.find("[", i + 1)
            if end < 0 or (0 <= nxt < end):
                raise WordError("unbalanced '[': missing ']'" + _caret(text, i))
            w = _parse_weight(src[i + 1 : end], text, i)
            last = tokens[-1]
            tokens[-1] = _Token(last.letter, w, last.group, last.pos)
            i = end + 1
        elif c == "]":
            raise WordError("unbalanced ']': no matching '['" + _caret(text, i))
        elif c == "{":
            if group is not None:
                raise WordError("nested '{' is not allowed" + _caret(text, i))
            group, group_open = n_groups, i
            n_groups += 1
            can_weight = False
            i += 1
        elif c == "}":
            if group is None:
                raise WordError("unbalanced '}': no matching '{'" + _caret(text, i))
            if not tokens or tokens[-1].group != group:
                raise WordError("empty '{ }' group" + _caret(text, i))
            group = None
            can_weight = False
            i += 1
        elif c in _DIGITS:
            raise WordError("a digit must follow a letter (force groups: B0, B1)" + _caret(text, i))
        else:
            raise WordError(f"unexpected character {c!r}" + _caret(text, i))
    if group is not None:
        raise WordError("unbalanced '{': missing '}'" + _caret(text, group_open))
    if not tokens:
        raise WordError("empty word: give at least one letter, e.g. 'BAOAB'")
    return tokens


class Word:
    """An immutable, validated splitting word.

    >>> w = Word("BAOAB")
    >>> " ".join(f"{o.letter}{o.weight}" for o in w)
    'B1/2 A1/2 O1 A1/2 B1/2'
    >>> w.is_symmetric
    True
    >>> Word(str(w)) == w
    True
    """

    __slots__ = ("_hash", "occurrences")

    def __init__(self, text: str | Word, alphabet: Iterable[str] | None = None) -> None:
        if isinstance(text, Word):
            occ = text.occurrences
        else:
            occ = self._build(_tokenize(text), text)
        object.__setattr__(self, "occurrences", occ)
        object.__setattr__(self, "_hash", hash(tuple((o.letter, o.weight, o.group) for o in occ)))
        if alphabet is not None:
            self.check_alphabet(alphabet, text if isinstance(text, str) else str(text))

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("Word is immutable")

    @staticmethod
    def _build(tokens: list[_Token], text: str) -> tuple[Occurrence, ...]:
        counts = Counter(tok.letter for tok in tokens)
        explicit: dict[str, list[bool]] = {}
        for tok in tokens:
            explicit.setdefault(tok.letter, []).append(tok.weight is not None)
        for letter, flags in explicit.items():
            if any(flags) and not all(flags):
                raise WordError(
                    f"letter {letter} has explicit weights on some occurrences only; "
                    "give a weight to every occurrence or to none"
                )
        totals: dict[str, Fraction] = {}
        for tok in tokens:
            if tok.weight is not None:
                totals[tok.letter] = totals.get(tok.letter, Fraction(0)) + tok.weight
        for letter, total in totals.items():
            if total != 1:
                raise WordError(
                    f"weights of letter {letter} sum to {total}, not 1; each letter must cover "
                    "the whole step exactly once"
                )
        seen: Counter[str] = Counter()
        offsets: dict[str, Fraction] = {}
        out = []
        for tok in tokens:
            w = tok.weight if tok.weight is not None else Fraction(1, counts[tok.letter])
            off = offsets.get(tok.letter, Fraction(0))
            out.append(Occurrence(tok.letter, w, seen[tok.letter], off, tok.group))
            offsets[tok.letter] = off + w
            seen[tok.letter] += 1
        return tuple(out)

    # -- validation against an SDE --------------------------------------------------------------
    def check_alphabet(self, alphabet: Iterable[str], text: str | None = None) -> None:
        valid = sorted(set(alphabet))
        for o in self.occurrences:
            if o.letter not in valid:
                shown = text if text is not None else str(self)
                raise WordError(
                    f"unknown letter {o.letter!r} in word {shown!r}; valid letters: "
                    f"{', '.join(valid)}"
                )

    # -- structure ------------------------------------------------------------------------------
    @property
    def letters(self) -> tuple[str, ...]:
        """Distinct letters in order of first appearance."""
        return tuple(dict.fromkeys(o.letter for o in self.occurrences))

    @property
    def counts(self) -> dict[str, int]:
        return dict(Counter(o.letter for o in self.occurrences))

    @property
    def groups(self) -> tuple[tuple[int, ...], ...]:
        """Indices of the occurrences inside each ``{ }`` group."""
        out: dict[int, list[int]] = {}
        for i, o in enumerate(self.occurrences):
            if o.group is not None:
                out.setdefault(o.group, []).append(i)
        return tuple(tuple(v) for v in out.values())

    def _merged(self) -> list[tuple]:
        """Token stream with adjacent occurrences of a letter merged (same group)."""
        items: list[tuple] = []
        prev_group: int | None = None
        for o in self.occurrences:
            if o.group != prev_group:
                if prev_group is not None:
                    items.append(("}",))
                if o.group is not None:
                    items.append(("{",))
            prev_group = o.group
            if items and items[-1][0] == o.letter:
                items[-1] = (o.letter, items[-1][1] + o.weight)
            else:
                items.append((o.letter, o.weight))
        if prev_group is not None:
            items.append(("}",))
        return items

    @property
    def is_symmetric(self) -> bool:
        """Exact palindrome test on letters and weights (adjacent equal letters merged)."""
        items = self._merged()
        mirror = {("{",): ("}",), ("}",): ("{",)}
        rev = [mirror.get(it, it) for it in reversed(items)]
        return items == rev

    def __iter__(self) -> Iterator[Occurrence]:
        return iter(self.occurrences)

    def __len__(self) -> int:
        return len(self.occurrences)

    def __getitem__(self, i: int) -> Occurrence:
        return self.occurrences[i]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, str):
            try:
                other = Word(other)
            except WordError:
                return False
        if not isinstance(other, Word):
            return NotImplemented
        key = lambda w: tuple((o.letter, o.weight, o.group) for o in w.occurrences)  # noqa: E731
        return key(self) == key(other)

    def __hash__(self) -> int:
        return self._hash

    def __str__(self) -> str:
        counts = self.counts
        default = {
            letter: all(o.weight == Fraction(1, counts[letter]) for o in self if o.letter == letter)
            for letter in counts
        }
        compact = all(len(letter) == 1 for letter in counts) and all(default.values())
        sep = "" if compact else " "
        parts: list[str] = []
        prev_group: int | None = None
        for o in self.occurrences:
            if o.group != prev_group:
                if prev_group is not None:
                    parts.append("}")
                if o.group is not None:
                    parts.append("{")
            prev_group = o.group
            parts.append(o.letter if default[o.letter] else f"{o.letter}[{o.weight}]")
        if prev_group is not None:
            parts.append("}")
        return sep.join(parts)

    def __repr__(self) -> str:
        return f"Word({str(self)!r})"
