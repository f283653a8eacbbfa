r"""The flat layout of a state: named blocks flattened and concatenated.

A state is a mapping from block names to arrays of shape ``(batch, *event)`` (or more leading
axes). Code that needs one vector per walker -- torchsde's ``f(t, y)``, a matrix
:math:`\Phi` acting on :math:`y \in \mathbb R^D`, a probe of a compiled step -- flattens each
block's event row-major to :math:`\prod(\text{event})` columns and concatenates the blocks along
the last axis in a fixed block order:

.. math:: y = (\mathrm{vec}\, x_{b_1}, \mathrm{vec}\, x_{b_2}, \dots) \in \mathbb R^D,
    \qquad D = \sum_b \prod(\text{event}_b).

:class:`StateLayout` is that convention, written once; it converts torch tensors and numpy
arrays both ways (the type in is the type out).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

__all__ = ["StateLayout"]


@dataclass(frozen=True)
class StateLayout:
    """Blocks flattened (row-major) and concatenated along the last axis, in ``block_names`` order.

    >>> lay = StateLayout(("q", "p"), ((2,), ()))
    >>> lay.dim, lay.offsets
    (3, {'q': (0, 2), 'p': (2, 3)})
    >>> y = lay.flatten({"q": np.array([[1.0, 2.0]]), "p": np.array([3.0])})
    >>> y.tolist(), lay.unflatten(y)["q"].tolist()
    ([[1.0, 2.0, 3.0]], [[1.0, 2.0]])
    """

    block_names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]

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
        return tuple(math.prod(s) for s in self.shapes)

    @property
    def offsets(self) -> dict[str, tuple[int, int]]:
        """Column range ``[start, stop)`` of each block."""
        out, a = {}, 0
        for b, n in zip(self.block_names, self.sizes):
            out[b] = (a, a + n)
            a += n
        return out

    def index(self, block: str) -> slice:
        """The columns of ``block`` in the flat vector."""
        if block not in self.block_names:
            raise KeyError(f"no block {block!r}; blocks: {', '.join(self.block_names)}")
        return slice(*self.offsets[block])

    @property
    def dim(self) -> int:
        return sum(self.sizes)

    def flatten(self, state: Mapping[str, Any]) -> Any:
        """``(batch, D)`` from a state mapping of tensors (or of numpy arrays)."""
        parts = []
        for b, shape in zip(self.block_names, self.shapes):
            x = state[b]
            if tuple(x.shape[1:]) != shape:
                raise ValueError(
                    f"block {b} has event shape {tuple(x.shape[1:])}, the layout says {shape}"
                )
            parts.append(x.reshape(x.shape[0], -1))
        if all(isinstance(x, torch.Tensor) for x in parts):
            return torch.cat(parts, dim=-1)
        return np.concatenate([np.asarray(x) for x in parts], axis=-1)

    def unflatten(self, y: Any) -> dict[str, Any]:
        """A state mapping from ``(..., D)`` (leading axes kept: ``(T, batch, D)`` works)."""
        if y.shape[-1] != self.dim:
            raise ValueError(f"the flat state has {y.shape[-1]} columns, the layout {self.dim}")
        out = {}
        for b, shape in zip(self.block_names, self.shapes):
            a, c = self.offsets[b]
            out[b] = y[..., a:c].reshape(*y.shape[:-1], *shape)
        return out
