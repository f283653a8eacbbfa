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
