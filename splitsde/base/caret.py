"""Point at a character of user text in an error message.

:func:`caret` renders the line of the text that holds the offending character and a ``^``
under it. The column is a *display* column, so the caret stays under the character however the
text is written: tabs are expanded, East Asian wide and full-width characters take two
columns, combining marks take none (the caret then points at the character they combine
with), and characters that a terminal would not print as themselves (control characters,
escape sequences, zero-width spaces) are shown escaped, as ``\\x1b`` or ``\\u200b``. For text of
several lines the line number is given; long lines are cut to a window around the character.
"""

from __future__ import annotations

import unicodedata

__all__ = ["caret"]

TAB = 8
WINDOW = 60  # characters kept on each side of the offending one in a long line


def _cell(c: str) -> tuple[str, int]:
    """How one character is shown and how many columns it takes."""
    if c == " " or (c.isprintable() and unicodedata.category(c) not in ("Cf", "Zl", "Zp")):
        if unicodedata.combining(c) or unicodedata.category(c) in ("Mn", "Me"):
            return c, 0
        return c, 2 if unicodedata.east_asian_width(c) in ("W", "F") else 1
    shown = f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}"
    if ord(c) > 0xFFFF:
        shown = f"\\U{ord(c):08x}"
    return shown, len(shown)


def caret(text: str, pos: int) -> str:
    """``"\\n  <line>\\n  <spaces>^"``: the line of ``text`` holding index ``pos``, and a caret
    under that character (or just past the end when ``pos == len(text)``).

    >>> print(caret("B A ; O", 4))
    <BLANKLINE>
      B A ; O
          ^
    >>> print(caret("x +\\n\\ty ^ 2", 7))
    <BLANKLINE>
      line 2:         y ^ 2
                        ^
    """
    pos = max(0, min(pos, len(text)))
    start = text.rfind("\n", 0, pos) + 1
    end = text.find("\n", pos)
    end = len(text) if end < 0 else end
    line = text[start:end]
    col = pos - start
    lo = max(0, col - WINDOW)
    hi = min(len(line), col + WINDOW)
    shown: list[str] = []
    width = 0
    at = 0  # display column of the offending character
    last_base = 0  # column of the last character that takes space, for combining marks
    for i, c in enumerate(line[lo:hi], start=lo):
        if c == "\t":
            n = TAB - width % TAB
            cell, w = " " * n, n
        else:
            cell, w = _cell(c)
        if i == col:
            at = width if w > 0 or i == lo else last_base
        if w > 0:
            last_base = width
        shown.append(cell)
        width += w
    if col >= hi:
        at = width
    head = "..." if lo > 0 else ""
    tail = "..." if hi < len(line) else ""
    label = f"line {text.count(chr(10), 0, start) + 1}: " if "\n" in text else ""
    lead = len(label) + len(head)
    return f"\n  {label}{head}{''.join(shown)}{tail}\n  {' ' * (lead + at)}^"
