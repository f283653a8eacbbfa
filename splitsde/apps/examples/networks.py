r"""Small networks of the digits example: an ε-prediction MLP with a time embedding and a digit
classifier whose penultimate layer is the feature space of the Fréchet distance.

The score network follows the usual recipe of diffusion models on vectors: a sinusoidal
embedding of the diffusion time :math:`t \in [0, T]` (Vaswani et al., NeurIPS 2017; Ho, Jain &
Abbeel, NeurIPS 2020), residual pre-norm MLP blocks with SiLU activations to which the embedded
time is added, and a zero-initialised output layer (the untrained network predicts
:math:`\varepsilon = 0`).
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["DigitClassifier", "ScoreMLP", "TimeEmbedding"]


class TimeEmbedding(nn.Module):
    r"""Sinusoidal features of the time followed by a two-layer MLP:
    :math:`(\sin(\omega_k s t), \cos(\omega_k s t))_k`, :math:`\omega_k = 10^{-4k/K}`,
    ``scale`` :math:`s` maps :math:`t \in [0, 1]` to the range the frequencies resolve."""

    def __init__(self, width: int, features: int = 64, scale: float = 1000.0) -> None:
        super().__init__()
        if features % 2:
            raise ValueError(f"the number of sinusoidal features must be even, got {features}")
        half = features // 2
        freqs = torch.exp(-math.log(1e4) * torch.arange(half, dtype=torch.float32) / half)
        self.register_buffer("freqs", freqs * scale, persistent=False)
        self.mlp = nn.Sequential(nn.Linear(features, width), nn.SiLU(), nn.Linear(width, width))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        arg = t.to(self.freqs.dtype)[:, None] * self.freqs[None]
        return self.mlp(torch.cat([arg.sin(), arg.cos()], dim=1))


class _Residual(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.lin1 = nn.Linear(width, width)
        self.lin2 = nn.Linear(width, width)

    def forward(self, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        u = self.lin1(nn.functional.silu(self.norm(h) + emb))
        return h + self.lin2(nn.functional.silu(u))


class ScoreMLP(nn.Module):
    """ε-prediction network ``net(z, t)`` on flat states ``z`` of shape ``(batch, dim)`` (for
    an augmented process, the blocks concatenated: ``dim = 2 * 64`` for PSLD on 8x8 digits).

    Parameters
    ----------
    dim:
        Input and output width.
    width:
        Hidden width.
    depth:
        Number of residual blocks.
    """

    def __init__(self, dim: int, width: int = 256, depth: int = 3) -> None:
        super().__init__()
        if dim < 1 or width < 1 or depth < 1:
            raise ValueError(f"dim, width and depth must be positive, got {dim}, {width}, {depth}")
        self.dim = dim
        self.embed = TimeEmbedding(width)
        self.inp = nn.Linear(dim, width)
        self.blocks = nn.ModuleList(_Residual(width) for _ in range(depth))
        self.norm = nn.LayerNorm(width)
        self.out = nn.Linear(width, dim)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if z.ndim != 2 or z.shape[1] != self.dim:
            raise ValueError(
                f"ScoreMLP expects inputs of shape (batch, {self.dim}), got {tuple(z.shape)}"
            )
        emb = self.embed(t)
        h = self.inp(z)
        for block in self.blocks:
            h = block(h, emb)
        return self.out(nn.functional.silu(self.norm(h)))


class DigitClassifier(nn.Module):
    """An MLP classifier of flattened 8x8 digits; :meth:`features` is its penultimate layer
    (the feature space of the Fréchet distance)."""

    def __init__(self, dim: int = 64, width: int = 256, features: int = 64, classes: int = 10):
        super().__init__()
        self.body = nn.Sequential(
            nn.Linear(dim, width),
            nn.SiLU(),
            nn.Dropout(0.1),
            nn.Linear(width, features),
            nn.SiLU(),
        )
        self.head = nn.Linear(features, classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))
