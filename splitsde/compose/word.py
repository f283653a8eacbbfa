r"""Splitting words: a small grammar, parsed (never evaluated), with exact weights.

Grammar (whitespace between items is optional)::

    word    := item+
    item    := letter weight? | "{" item+ "}" | "(" item+ ")" "^" count
    letter  := [A-Z][0-9]*            e.g.  A  B  O  B0  B12
    weight  := "[" number "]"          e.g.  [1/4]  [0.5]  [-1/3]
    count   := [0-9]+                  a whole number >= 1

A letter occurring :math:`k` times without explicit weights gets weight :math:`1/k` per
occurrence (the letter-count rule: ``BAOAB`` is :math:`B_{1/2} A_{1/2} O_1 A_{1/2} B_{1/2}`).
Explicit weights are exact fractions; a letter either has weights on all its occurrences or
on none, and they sum to one. Braces ``{ ... }`` mark a Metropolized group (GHMC); they do
not nest.

A repeated group ``(w)^n`` is the sub-word ``w`` written out ``n`` times in a row, with every
explicit weight inside divided by ``n`` (nested counts multiply): ``B1 (B0 A O A B0)^2 B1`` is
``B1 B0 A O A B0 B0 A O A B0 B1``, and ``(B[1/2] A B[1/2])^2`` is
``B[1/4] A B[1/4] B[1/4] A B[1/4]``. The letter-count rule then applies to the written-out
word, so a sub-word whose letters occur only inside the group is ``n`` steps of that sub-word
with step :math:`h/n` (multiple time-stepping: the letters outside are kicked once per outer
step). Weights inside a group are the letter's share over all ``n`` passes, so every letter
still covers the step exactly once. Each copy of a ``{ }`` group inside a repeated group is
Metropolized on its own; a repeated group inside braces is one Metropolized block.

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
``k`` steps of that word with step ``h/k``; the limit applies after expansion of repeated groups,
which nest at most :data:`MAX_DEPTH` levels.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from splitsde.base.caret import caret
from splitsde.base.errors import SplitsdeError
from splitsde.symbolic.symbols import LETTER

__all__ = [
    "LETTER",
    "MAX_DEPTH",
    "MAX_LENGTH",
    "MAX_OCCURRENCES",
    "Occurrence",
    "Word",
    "WordError",
]

#: Most letter occurrences in one word (compiling costs about a millisecond per occurrence).
MAX_OCCURRENCES = 1000
#: Longest accepted text of a word, in characters.
MAX_LENGTH = 20_000
#: Deepest nesting of brackets ``( )`` and ``{ }`` in a word.
MAX_DEPTH = 16

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
    """One letter occurrence after expansion: its explicit weight (already divided by the
    repeat counts around it), its Metropolized group and its column in the text."""

    letter: str
    weight: Fraction | None
    group: int | None
    pos: int


@dataclass(frozen=True)
class _Letter:
    letter: str
    weight: Fraction | None  # as written, before division by enclosing repeat counts
    pos: int


@dataclass(frozen=True)
class _Metropolis:
    items: tuple[_Node, ...]


@dataclass(frozen=True)
class _Repeat:
    items: tuple[_Node, ...]
    count: int


_Node = _Letter | _Metropolis | _Repeat


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


def _too_many(n: int | str, what: str, text: str | None = None, pos: int = 0) -> WordError:
    msg = (
        f"word {what} {n} letter occurrences; at most {MAX_OCCURRENCES} are allowed "
        "(compiling costs about a millisecond per occurrence and the generated step "
        "grows with the word). A word repeated k times is k steps of the shorter "
        "word with step h/k: use the shorter word and more steps."
    )
    return WordError(msg + (_caret(text, pos) if text is not None else ""))


@dataclass
class _Open:
    """An open bracket while parsing: its kind, column and the items read inside it."""

    kind: str  # "(" or "{" ; "" for the whole word
    pos: int
    items: list[_Node]
    size: int = 0  # letter occurrences inside, after expansion


def _parse(text: str) -> tuple[_Node, ...]:
    """Parse ``text`` into a tree of letters, Metropolized groups and repeated groups."""
    return _Parser(text).parse()


def _source(text: Any) -> str:
    """The text to parse, after the checks on the whole word: a string of bounded length,
    not empty, ASCII, one case (an all-lower-case word reads as upper case)."""
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
    return text.upper() if lower else text


class _Parser:
    """One left-to-right pass over a word with a stack of open brackets; each method reads
    one construct at the current column and returns the column after it. Errors carry a
    caret under the offending column of the text as written."""

    def __init__(self, text: str) -> None:
        self.src = _source(text)
        self.text = text
        self.stack = [_Open("", 0, [])]
        self.can_weight = False

    def error(self, message: str, pos: int) -> WordError:
        return WordError(message + _caret(self.text, pos))

    def total(self) -> int:
        """Letter occurrences read so far, after expansion of closed repeated groups."""
        return sum(o.size for o in self.stack)

    def parse(self) -> tuple[_Node, ...]:
        src, i = self.src, 0
        while i < len(src):
            c = src[i]
            if c in _SPACE:
                i += 1
            elif "A" <= c <= "Z":
                i = self.letter(i)
            elif c == "[":
                i = self.weight(i)
            elif c == "]":
                raise self.error("unbalanced ']': no matching '['", i)
            elif c in "({":
                i = self.open(i)
            elif c in ")}":
                i = self.close(i)
            elif c == "^":
                raise self.error(
                    "'^' repeats a parenthesised group and must follow ')', e.g. (B A B)^2", i
                )
            elif c in _DIGITS:
                raise self.error("a digit must follow a letter (force groups: B0, B1)", i)
            else:
                raise self.error(f"unexpected character {c!r}", i)
        if len(self.stack) > 1:
            top = self.stack[-1]
            shut = ")" if top.kind == "(" else "}"
            raise self.error(f"unbalanced '{top.kind}': missing '{shut}'", top.pos)
        if not self.stack[0].items:
            raise WordError("empty word: give at least one letter, e.g. 'BAOAB'")
        return tuple(self.stack[0].items)

    def letter(self, i: int) -> int:
        """A letter and its force-group digits (``B0``)."""
        src, top = self.src, self.stack[-1]
        j = i + 1
        while j < len(src) and src[j] in _DIGITS:
            j += 1
        if self.total() == MAX_OCCURRENCES:
            n = self.total() + sum(1 for ch in src[j:] if "A" <= ch <= "Z") + 1
            raise _too_many(n, "has")
        top.items.append(_Letter(src[i:j], None, i))
        top.size += 1
        self.can_weight = True
        return j

    def weight(self, i: int) -> int:
        """A weight ``[w]`` after a letter."""
        src, top = self.src, self.stack[-1]
        if not self.can_weight:
            raise self.error("a weight must follow a letter", i)
        self.can_weight = False
        end = src.find("]", i)
        nxt = src.find("[", i + 1)
        if end < 0 or (0 <= nxt < end):
            raise self.error("unbalanced '[': missing ']'", i)
        w = _parse_weight(src[i + 1 : end], self.text, i)
        last = top.items[-1]
        assert isinstance(last, _Letter)
        top.items[-1] = _Letter(last.letter, w, last.pos)
        return end + 1

    def open(self, i: int) -> int:
        """An opening ``(`` (repeated group) or ``{`` (Metropolized group)."""
        c = self.src[i]
        if c == "{" and any(o.kind == "{" for o in self.stack):
            raise self.error("nested '{' is not allowed", i)
        if len(self.stack) > MAX_DEPTH:
            raise self.error(f"groups nest more than {MAX_DEPTH} levels deep", i)
        self.stack.append(_Open(c, i, []))
        self.can_weight = False
        return i + 1

    def close(self, i: int) -> int:
        """A closing ``}`` or ``)`` (the latter with its repeat count ``^n``)."""
        c, top = self.src[i], self.stack[-1]
        want = "(" if c == ")" else "{"
        if top.kind != want:
            if top.kind:  # the innermost open bracket is of the other kind
                shut = ")" if top.kind == "(" else "}"
                raise self.error(f"unbalanced '{top.kind}': missing '{shut}'", top.pos)
            raise self.error(f"unbalanced '{c}': no matching '{want}'", i)
        if not top.items:
            raise self.error(f"empty '{want} {c}' group", i)
        self.stack.pop()
        self.can_weight = False
        if c == "}":
            self.stack[-1].items.append(_Metropolis(tuple(top.items)))
            self.stack[-1].size += top.size
            return i + 1
        count, digits, j, k = self.repeat_count(i + 1)
        rest = self.total()  # occurrences outside this group (it was popped)
        if count is None or rest + top.size * count > MAX_OCCURRENCES:
            n = "more than 10^12" if count is None else str(rest + top.size * count)
            raise _too_many(n, f"reaches, with this group repeated {digits} times,", self.text, j)
        self.stack[-1].items.append(_Repeat(tuple(top.items), count))
        self.stack[-1].size += top.size * count
        return k

    def repeat_count(self, i: int) -> tuple[int | None, str, int, int]:
        """The ``^n`` after a closed ``)`` at column ``i``: the count (``None`` when it has
        more than 12 digits), its digits, and the columns where it starts and ends."""
        src = self.src
        j = i
        while j < len(src) and src[j] in _SPACE:
            j += 1
        if j == len(src) or src[j] != "^":
            raise self.error(
                "a group '( ... )' needs a repeat count: write it as (...)^n, e.g. "
                "(B A B)^2, or drop the parentheses",
                i - 1,
            )
        hat = j
        j += 1
        while j < len(src) and src[j] in _SPACE:
            j += 1
        k = j
        while k < len(src) and src[k] in _DIGITS:
            k += 1
        if k == j:
            raise self.error(
                "'^' must be followed by a whole number of repetitions, e.g. (B A B)^2", hat
            )
        if k < len(src) and src[k] in "./":
            while k < len(src) and src[k] in _DIGITS + "./":
                k += 1
            raise self.error(
                f"repeat count {src[j:k]} is not a whole number; a group runs a whole "
                "number of times",
                j,
            )
        digits = src[j:k].lstrip("0")
        if not digits:
            raise self.error(f"repeat count {src[j:k]}: a group runs at least once (^1 or more)", j)
        count = None if len(digits) > 12 else int(digits)
        return count, digits, j, k


def _expand(tree: tuple[_Node, ...]) -> list[_Token]:
    """Letter occurrences in order: a repeated group written out ``n`` times with its explicit
    weights divided by ``n`` (nested counts multiply); each copy of a ``{ }`` group is its own
    Metropolized group."""
    out: list[_Token] = []
    n_groups = 0

    def walk(items: tuple[_Node, ...], scale: int, group: int | None) -> None:
        nonlocal n_groups
        for node in items:
            if isinstance(node, _Letter):
                w = None if node.weight is None else node.weight / scale
                out.append(_Token(node.letter, w, group, node.pos))
            elif isinstance(node, _Metropolis):
                g = n_groups
                n_groups += 1
                walk(node.items, scale, g)
            else:
                for _ in range(node.count):
                    walk(node.items, scale * node.count, group)

    walk(tree, 1, None)
    return out


class Word:
    """An immutable, validated splitting word.

    >>> w = Word("BAOAB")
    >>> " ".join(f"{o.letter}{o.weight}" for o in w)
    'B1/2 A1/2 O1 A1/2 B1/2'
    >>> w.is_symmetric
    True
    >>> Word(str(w)) == w
    True

    A repeated group is written out, with its weights divided by the count:

    >>> mts = Word("B1 (B0 A O A B0)^2 B1")
    >>> " ".join(f"{o.letter}{o.weight}" for o in mts)
    'B11/2 B01/4 A1/4 O1/2 A1/4 B01/4 B01/4 A1/4 O1/2 A1/4 B01/4 B11/2'
    >>> mts == Word("B1 B0 A O A B0 B0 A O A B0 B1"), str(mts)
    (True, 'B1 (B0 A O A B0)^2 B1')
    """

    __slots__ = ("_hash", "_tree", "occurrences")

    def __init__(self, text: str | Word, alphabet: Iterable[str] | None = None) -> None:
        if isinstance(text, Word):
            occ, tree = text.occurrences, text._tree
        else:
            tree = _parse(text)
            occ = self._build(_expand(tree), text)
        object.__setattr__(self, "occurrences", occ)
        object.__setattr__(self, "_tree", tree)
        object.__setattr__(self, "_hash", hash(tuple((o.letter, o.weight, o.group) for o in occ)))
        if alphabet is not None:
            self.check_alphabet(alphabet, text if isinstance(text, str) else str(text))

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("Word is immutable")

    def __reduce__(self) -> tuple[type[Word], tuple[str]]:
        return (Word, (str(self),))

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
        """Canonical text: default weights left out, explicit ones as written (inside a
        repeated group, the letter's share over all its passes), repeated groups kept as
        ``(...)^n``."""
        counts = self.counts
        default = {
            letter: all(o.weight == Fraction(1, counts[letter]) for o in self if o.letter == letter)
            for letter in counts
        }
        pos = 0
        repeated = False

        def render(items: tuple[_Node, ...], scale: int, sep: str) -> str:
            nonlocal pos, repeated
            parts: list[str] = []
            for node in items:
                if isinstance(node, _Letter):
                    o = self.occurrences[pos]
                    pos += 1
                    w = o.weight * scale
                    parts.append(o.letter if default[o.letter] else f"{o.letter}[{w}]")
                elif isinstance(node, _Metropolis):
                    parts.append("{" + sep + render(node.items, scale, sep) + sep + "}")
                else:
                    repeated = True
                    first = pos
                    body = render(node.items, scale * node.count, sep)
                    pos = first + (pos - first) * node.count  # skip the written-out copies
                    parts.append(f"({body})^{node.count}")
            return sep.join(parts)

        text = render(self._tree, 1, "")
        if repeated or any(len(x) > 1 for x in counts) or not all(default.values()):
            pos = 0
            text = render(self._tree, 1, " ")
        return text

    def __repr__(self) -> str:
        return f"Word({str(self)!r})"
