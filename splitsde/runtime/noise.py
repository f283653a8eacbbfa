"""Noise sources: where the standard normals of a step come from (architecture rule 3).

Sub-steps never touch a global RNG. :func:`~splitsde.runtime.integrate.integrate` binds a noise
source
to the program's draws in program order, so a seed reproduces a run bit for bit on the same
device and dtype.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import torch

__all__ = ["FixedNoise", "GaussianNoise", "NoiseSource", "ZeroNoise"]


class NoiseSource:
    """Base class. ``bind`` returns one callable per draw of the program, in program order.

    If ``takes_times`` is true the callables receive the start and end time of the Brownian
    increment each draw stands for (sources driven by a Brownian path need them).
    """

    takes_times: bool = False

    def bind(
        self, shapes: Sequence[torch.Size], like: torch.Tensor
    ) -> list[Callable[..., torch.Tensor]]:
        raise NotImplementedError

    def bind_uniform(
        self, shapes: Sequence[torch.Size], like: torch.Tensor
    ) -> list[Callable[[], torch.Tensor]]:
        """One callable per uniform draw of the program (Metropolis tests, then the random
        selections of randomized solvers), in program order; each returns a tensor of uniforms
        on ``[0, 1)`` with the given shape."""
        raise NotImplementedError(
            f"the noise source {type(self).__name__} provides no uniform draws, which the "
            "Metropolized groups { } or the randomized solvers of this word need"
        )

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


class GaussianNoise(NoiseSource):
    """Independent standard normals from one seeded :class:`torch.Generator`.

    Each draw writes into its own preallocated buffer (``torch.randn(..., out=buf)``): the
    buffer is consumed by the sub-step that drew it before the next step overwrites it.
    """

    def __init__(self, generator: torch.Generator) -> None:
        self.generator = generator

    def bind(
        self, shapes: Sequence[torch.Size], like: torch.Tensor
    ) -> list[Callable[[], torch.Tensor]]:
        if self.generator.device.type != like.device.type:
            raise ValueError(
                f"the generator is on {self.generator.device} but the state is on {like.device}"
            )
        out = []
        for shape in shapes:
            buf = torch.empty(shape, dtype=like.dtype, device=like.device)
            out.append(partial(torch.randn, tuple(shape), generator=self.generator, out=buf))
        return out

    def bind_uniform(
        self, shapes: Sequence[torch.Size], like: torch.Tensor
    ) -> list[Callable[[], torch.Tensor]]:
        """Uniforms from the same generator, so normals and uniforms interleave in program
        order and a seed still reproduces the run bit for bit."""
        out = []
        for shape in shapes:
            buf = torch.empty(shape, dtype=like.dtype, device=like.device)
            out.append(partial(torch.rand, tuple(shape), generator=self.generator, out=buf))
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])


class ZeroNoise(NoiseSource):
    """All noises zero: the deterministic skeleton of a scheme (for analysis and tests)."""

    def bind(
        self, shapes: Sequence[torch.Size], like: torch.Tensor
    ) -> list[Callable[[], torch.Tensor]]:
        return [
            partial(torch.zeros, tuple(s), dtype=like.dtype, device=like.device) for s in shapes
        ]

    def bind_uniform(
        self, shapes: Sequence[torch.Size], like: torch.Tensor
    ) -> list[Callable[[], torch.Tensor]]:
        """Uniforms equal to zero: every Metropolis proposal with finite energy is accepted."""
        return self.bind(shapes, like)


class FixedNoise(NoiseSource):
    """Given tensors, one per draw of one step (used to probe a compiled step exactly);
    ``uniforms`` likewise, one per Metropolis test."""

    def __init__(
        self, values: Sequence[torch.Tensor], uniforms: Sequence[torch.Tensor] = ()
    ) -> None:
        self.values = list(values)
        self.uniforms = list(uniforms)

    def bind(
        self, shapes: Sequence[torch.Size], like: torch.Tensor
    ) -> list[Callable[[], torch.Tensor]]:
        if len(self.values) != len(shapes):
            raise ValueError(f"FixedNoise has {len(self.values)} tensors for {len(shapes)} draws")
        out = []
        for v, s in zip(self.values, shapes):
            v = torch.as_tensor(v, dtype=like.dtype, device=like.device).expand(s).clone()
            out.append(lambda v=v: v)
        return out

    def bind_uniform(
        self, shapes: Sequence[torch.Size], like: torch.Tensor
    ) -> list[Callable[[], torch.Tensor]]:
        if len(self.uniforms) != len(shapes):
            raise ValueError(
                f"FixedNoise has {len(self.uniforms)} uniforms for {len(shapes)} uniform draws "
                "(Metropolis tests and random selections)"
            )
        out = []
        for v, s in zip(self.uniforms, shapes):
            v = torch.as_tensor(v, dtype=like.dtype, device=like.device).expand(s).clone()
            out.append(lambda v=v: v)
        return out
