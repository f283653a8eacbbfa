"""Hypothesis strategies shared by the test suite."""

from __future__ import annotations

from fractions import Fraction

from hypothesis import strategies as st

LANGEVIN_LETTERS = ("A", "B", "O")


@st.composite
def words(draw, letters=LANGEVIN_LETTERS, min_size=1, max_size=7, weighted=False):
    """Words over ``letters``; every letter appears at least once."""
    seq = draw(
        st.lists(st.sampled_from(letters), min_size=max(min_size, len(letters)), max_size=max_size)
    )
    missing = [x for x in letters if x not in seq]
    seq = seq + missing
    order = draw(st.permutations(seq))
    if not weighted:
        return " ".join(order)
    parts = []
    counts = {x: order.count(x) for x in letters}
    weights = {}
    for x in letters:
        n = counts[x]
        cuts = sorted(
            draw(st.lists(st.integers(1, 11), min_size=n - 1, max_size=n - 1, unique=True))
        )
        bounds = [0, *cuts, 12]
        weights[x] = [Fraction(bounds[i + 1] - bounds[i], 12) for i in range(n)]
    used = dict.fromkeys(letters, 0)
    for x in order:
        parts.append(f"{x}[{weights[x][used[x]]}]")
        used[x] += 1
    return " ".join(parts)


@st.composite
def palindromes(draw, letters=LANGEVIN_LETTERS, weighted=False):
    """Symmetric words over ``letters`` (every letter appears). With ``weighted`` every letter
    carries an explicit weight, mirrored about the centre: each occurrence gets a random
    positive integer, divided by the letter's total (the half counted twice); one letter is
    repeated in the half, so that (unless its integers are equal) its weights are not the
    default equal split."""
    half = draw(st.lists(st.sampled_from(letters), max_size=2 if weighted else 3))
    center = draw(st.sampled_from(letters))
    half += [x for x in letters if x not in half and x != center]
    if not weighted:
        return " ".join([*half, center, *reversed(half)])
    half.insert(draw(st.integers(0, len(half))), draw(st.sampled_from(letters)))
    n = len(half) + 1
    raw = draw(st.lists(st.integers(1, 5), min_size=n, max_size=n))
    total = dict.fromkeys(letters, 0)
    for x, r in zip(half, raw):
        total[x] += 2 * r
    total[center] += raw[-1]
    left = [f"{x}[{Fraction(r, total[x])}]" for x, r in zip(half, raw)]
    middle = f"{center}[{Fraction(raw[-1], total[center])}]"
    return " ".join([*left, middle, *reversed(left)])


def lie_words(letters=LANGEVIN_LETTERS):
    """Every letter once, in any order (Lie--Trotter splittings)."""
    return st.permutations(letters).map(" ".join)
