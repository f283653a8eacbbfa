r"""Reduction rules: how a compiled word reuses field evaluations.

A naive word evaluates a field (force, score) wherever a sub-flow's solver needs it. Three
generic rules turn it into a *reduced* variant without touching the SDE or the solvers:

``reuse``
    ``"none"``: evaluate afresh at every use (no reuse at all);
    ``"exact"`` (default): reuse a value only when the field's inputs are provably unchanged
    (same block versions, same time label) -- within a step and across steps
    (first-same-as-last), so BAOAB, ABOBA and OBABO cost one force evaluation per step;
    ``"per_step"``: evaluate each field at most once per step and let every sub-flow of the
    step reuse it, although the state moved in between (the score reuse of reduced splitting
    samplers, Pandey, Rudolph & Mandt 2024).
``eval_at``
    Where the single ``per_step`` evaluation stands: ``"first"`` (where first needed),
    ``"start"`` (on the state at the start of the step) or an integer ``k`` (after the first
    ``k`` sub-steps).
``time_label``
    The time passed to a time-dependent field: ``None`` keeps the solver's choice (the start of
    the slice being solved); a fraction ``theta`` in ``[0, 1]`` of the step, or ``"start"``,
    ``"mid"``, ``"end"``, passes :math:`t + \theta h` instead.
``fields``
    Restrict the ``per_step`` rule and the time label to these field names (default: all).
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Literal

from splitsde.compose.presets import word as _word
from splitsde.compose.word import Word, WordError

__all__ = ["ReducedWord", "Reduction", "reduce"]

_LABELS = {"start": Fraction(0), "mid": Fraction(1, 2), "end": Fraction(1)}


@dataclass(frozen=True)
class Reduction:
    """Evaluation-reuse rules applied when a word is compiled (see module docstring)."""

    reuse: Literal["none", "exact", "per_step"] = "exact"
    eval_at: Literal["first", "start"] | int = "first"
    time_label: Fraction | None = None
    fields: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.reuse not in ("none", "exact", "per_step"):
            raise ValueError(f"reuse must be 'none', 'exact' or 'per_step', got {self.reuse!r}")
        if isinstance(self.eval_at, bool) or not (
            self.eval_at in ("first", "start") or isinstance(self.eval_at, int)
        ):
            raise ValueError(
                f"eval_at must be 'first', 'start' or an integer, got {self.eval_at!r}"
            )
        if self.eval_at != "first" and self.reuse != "per_step":
            raise ValueError("eval_at only applies to reuse='per_step'")
        label = self.time_label
        if isinstance(label, str):
            if label not in _LABELS:
                raise ValueError(
                    f"time_label must be 'start', 'mid', 'end' or a fraction, got {label!r}"
                )
            object.__setattr__(self, "time_label", _LABELS[label])
        elif label is not None:
            frac = (
                Fraction(label).limit_denominator(10**9)
                if isinstance(label, float)
                else Fraction(label)
            )
            if not 0 <= frac <= 1:
                raise ValueError(f"time_label must lie in [0, 1], got {label}")
            object.__setattr__(self, "time_label", frac)
        if self.fields is not None:
            object.__setattr__(self, "fields", tuple(self.fields))

    def applies_to(self, field_name: str) -> bool:
        return self.fields is None or field_name in self.fields

    def __str__(self) -> str:
        parts = [f"reuse={self.reuse}"]
        if self.eval_at != "first":
            parts.append(f"eval_at={self.eval_at}")
        if self.time_label is not None:
            parts.append(f"time_label={self.time_label}")
        if self.fields is not None:
            parts.append(f"fields={','.join(self.fields)}")
        return " ".join(parts)


@dataclass(frozen=True)
class ReducedWord:
    """A word together with the reduction rules it is compiled with."""

    word: Word
    reduction: Reduction

    def __str__(self) -> str:
        return f"{self.word} ({self.reduction})"


def reduce(
    word: str | Word,
    reuse: Literal["none", "exact", "per_step"] = "exact",
    eval_at: Literal["first", "start"] | int = "first",
    time_label: Fraction | float | str | None = None,
    fields: tuple[str, ...] | None = None,
) -> ReducedWord:
    """``word`` with the reduction rules it is compiled with.

    The defaults are those of :class:`Reduction` (``reuse="exact"``: what compiling the bare
    word does), so ``reduce(w)`` compiles like ``w``; name the rule that changes something,
    e.g. ``reduce("OBA", reuse="per_step", eval_at="start")``.
    """
    w = _word(word)
    if isinstance(eval_at, int) and not isinstance(eval_at, bool) and not 0 <= eval_at <= len(w):
        raise WordError(f"eval_at={eval_at} is outside the {len(w)} sub-steps of {w}")
    return ReducedWord(w, Reduction(reuse, eval_at, time_label, fields))
