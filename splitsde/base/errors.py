"""The library's error types share one base class.

Every error that splitsde raises for bad input, an unusable file or a run that cannot go on
derives from :class:`SplitsdeError`, so applications (and the ``splitsde`` command line) can
tell a user error, reported in one line, from a genuine bug. Each concrete error also keeps the
built-in type it has always had (mostly :class:`ValueError`), so ``except ValueError`` still
catches it.
"""

from __future__ import annotations

__all__ = ["SplitsdeError"]


class SplitsdeError(Exception):
    """Base class of every error splitsde raises on purpose (bad input, unusable state)."""
