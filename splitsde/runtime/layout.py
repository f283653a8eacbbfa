r"""The flat layout of a state: named blocks flattened and concatenated.

A state is a mapping from block names to arrays of shape ``(batch, *event)`` (or more leading
axes). Code that needs one vector per walker -- torchsde's ``f(t, y)``, a matrix
:math:`\Phi` acting on :math:`y \in \mathbb R^D`, a probe of a compiled step -- flattens each
block's event row-major to :math:`\prod(\text{event})` columns and concatenates the blocks along
the last axis in a fixed block order:

.. math:: y = (\mathrm{vec}\, x_{b_1}, \mathrm{vec}\, x_{b_2}, \dots) \in \mathbb R^D,
    \qquad D = \sum_b \prod(\text{event}_b).

:class:`StateLayout` is that convention, written once; it converts torch tensors and numpy
arrays both ways (the type in is the type out). Iterating over it yields one
:class:`BlockLayout` per block -- where that block lives in :math:`y`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import torch

__all__ = ["BlockLayout", "StateLayout"]


@dataclass(frozen=True)
class BlockLayout:
    """Where one block lives in the flat state vector: its columns ``slice`` and its per-walker
    (event) ``shape``; one entry of a :class:`StateLayout`."""

    block: str
    slice: slice
    shape: tuple[int, ...]

    @property
    def size(self) -> int:
        r"""Number of columns, :math:`\prod(\text{shape})`."""
        return self.slice.stop - self.slice.start


@dataclass(frozen=True)
class StateLayout:
    """Blocks flattened (row-major) and concatenated along the last axis, in ``block_names`` order.

    >>> lay = StateLayout(("q", "p"), ((2,), ()))
    >>> lay.dim, lay.offsets
    (3, {'q': (0, 2), 'p': (2, 3)})
    >>> [(e.block, e.slice, e.shape) for e in lay]
    [('q', slice(0, 2, None), (2,)), ('p', slice(2, 3, None), ())]
    >>> y = lay.flatten({"q": np.array([[1.0, 2.0]]), "p": np.array([3.0])})
    >>> y.tolist(), lay.unflatten(y)["q"].tolist()
    ([[1.0, 2.0, 3.0]], [[1.0, 2.0]])
    """

    block_names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]

    def __post_init__(self) -> None:
        names = tuple(self.block_names)
        shapes = tuple(tuple(int(n) for n in s) for s in self.shapes)
        if len(names) != len(shapes):
            raise ValueError(f"{len(names)} block names but {len(shapes)} shapes")
        if len(set(names)) != len(names):
            raise ValueError(f"block names repeat: {names}")
        if any(n < 0 for s in shapes for n in s):
            raise ValueError(f"shapes must have non-negative sizes, got {shapes}")
        object.__setattr__(self, "block_names", names)
        object.__setattr__(self, "shapes", shapes)

    @cached_property
    def _entries(self) -> tuple[BlockLayout, ...]:
        out, a = [], 0
        for b, shape in zip(self.block_names, self.shapes):
            n = math.prod(shape)
            out.append(BlockLayout(b, slice(a, a + n), shape))
            a += n
        return tuple(out)

    def entries(self) -> tuple[BlockLayout, ...]:
        """One :class:`BlockLayout` per block, in block order (also what iteration yields)."""
        return self._entries

    def __iter__(self) -> Iterator[BlockLayout]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self.block_names)

    def entry(self, block: str) -> BlockLayout:
        """The :class:`BlockLayout` of ``block``."""
        for e in self._entries:
            if e.block == block:
                return e
        raise KeyError(f"no block {block!r}; blocks: {', '.join(self.block_names)}")

    @classmethod
    def of(cls, blocks: Sequence[Any], like: Mapping[str, Any]) -> StateLayout:
        """The layout of states shaped like ``like`` (block name -> tensor ``(batch, ...)`` or
        an event shape tuple); ``blocks`` are names or :class:`~splitsde.symbolic.symbols.Block`
        symbols (their names are used)."""
        names = tuple(str(b) for b in blocks)
        missing = [b for b in names if b not in like]
        if missing:
            raise ValueError(f"no shape for block(s) {', '.join(missing)}")
        unknown = set(like) - set(names)
        if unknown:
            raise ValueError(f"unknown block(s) {sorted(unknown)}; blocks: {', '.join(names)}")
        shapes = []
        for b in names:
            v = like[b]
            if isinstance(v, torch.Tensor | np.ndarray):
                if v.ndim == 0:
                    raise ValueError(f"block {b} is 0-dimensional; give it a batch dimension")
                shapes.append(tuple(v.shape[1:]))
            else:
                shapes.append(tuple(int(n) for n in v))
        return cls(names, tuple(shapes))

    @property
    def sizes(self) -> tuple[int, ...]:
        return tuple(e.size for e in self._entries)

    @property
    def offsets(self) -> dict[str, tuple[int, int]]:
        """Column range ``[start, stop)`` of each block."""
        return {e.block: (e.slice.start, e.slice.stop) for e in self._entries}

    def index(self, block: str) -> slice:
        """The columns of ``block`` in the flat vector."""
        return self.entry(block).slice

    @property
    def dim(self) -> int:
        return sum(self.sizes)

    def flatten(self, state: Mapping[str, Any]) -> Any:
        """``(..., D)`` from a state mapping of tensors (or of numpy arrays) shaped
        ``(..., *event)``; every block has the same leading axes (``(batch,)`` for a state,
        none for one walker)."""
        parts: list[Any] = []
        lead0: tuple[int, ...] | None = None
        first = None
        for e in self._entries:
            x = state[e.block]
            k = x.ndim - len(e.shape)
            if k < 0 or tuple(x.shape[k:]) != e.shape:
                # the event is what follows the leading axes (one batch axis if none seen yet)
                got = tuple(x.shape[1 if lead0 is None else len(lead0) :])
                raise ValueError(
                    f"block {e.block} has event shape {got} (shape {tuple(x.shape)}), "
                    f"the layout says {e.shape}"
                )
            lead = tuple(x.shape[:k])
            if lead0 is None:
                lead0, first = lead, e
            elif lead != lead0:
                raise ValueError(
                    f"the blocks have different leading (batch) axes: {first.block} "
                    f"{lead0} before its event shape {first.shape}, {e.block} {lead} before "
                    f"{e.shape}"
                )
            parts.append(x.reshape(*lead, e.size))
        if all(isinstance(x, torch.Tensor) for x in parts):
            return torch.cat(parts, dim=-1)
        return np.concatenate([np.asarray(x) for x in parts], axis=-1)

    def unflatten(self, y: Any) -> dict[str, Any]:
        """A state mapping from ``(..., D)`` (leading axes kept: ``(T, batch, D)`` works)."""
        if y.shape[-1] != self.dim:
            raise ValueError(f"the flat state has {y.shape[-1]} columns, the layout {self.dim}")
        return {e.block: y[..., e.slice].reshape(*y.shape[:-1], *e.shape) for e in self._entries}
