"""The two orders of attention over entity features X (B, T, K, D).

Spatial-T attends across the K entities of one frame; Temporal-T across the T frames of one entity (the regrouping
is an einops pattern that documents the shape). The ST path is ``Temporal-T(Spatial-T(X) + MLP_s(X))`` and the TS
path ``Spatial-T(Temporal-T(X) + MLP_t(X))`` (paper).
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import nn


class AttentionBlock(nn.Module):
    """`depth` pre-norm transformer encoder layers over sequences (N, L, D)."""

    def __init__(self, dim: int, heads: int, depth: int, mlp_ratio: float, dropout: float):
        super().__init__()
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(dim, heads, int(dim * mlp_ratio), dropout, activation="gelu",
                                       batch_first=True, norm_first=True)
            for _ in range(depth))
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return self.norm(x)


class SpatialT(nn.Module):
    """Attention across the K entities of each frame."""

    def __init__(self, block: AttentionBlock):
        super().__init__()
        self.block = block

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        y = self.block(rearrange(x, "b t k d -> (b t) k d"))
        return rearrange(y, "(b t) k d -> b t k d", b=b)


class TemporalT(nn.Module):
    """Attention across the T frames of each entity."""

    def __init__(self, block: AttentionBlock):
        super().__init__()
        self.block = block

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        y = self.block(rearrange(x, "b t k d -> (b k) t d"))
        return rearrange(y, "(b k) t d -> b t k d", b=b)


def mlp(dim: int, ratio: float, dropout: float) -> nn.Sequential:
    return nn.Sequential(nn.Linear(dim, int(dim * ratio)), nn.GELU(), nn.Dropout(dropout),
                         nn.Linear(int(dim * ratio), dim))


class STPath(nn.Module):
    """Spatial first: X_ST = Temporal-T(Spatial-T(X) + MLP_s(X))."""

    def __init__(self, dim: int, heads: int, depth: int, mlp_ratio: float, dropout: float):
        super().__init__()
        self.spatial = SpatialT(AttentionBlock(dim, heads, depth, mlp_ratio, dropout))
        self.temporal = TemporalT(AttentionBlock(dim, heads, depth, mlp_ratio, dropout))
        self.mlp_s = mlp(dim, mlp_ratio, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.temporal(self.spatial(x) + self.mlp_s(x))


class TSPath(nn.Module):
    """Temporal first: X_TS = Spatial-T(Temporal-T(X) + MLP_t(X))."""

    def __init__(self, dim: int, heads: int, depth: int, mlp_ratio: float, dropout: float):
        super().__init__()
        self.temporal = TemporalT(AttentionBlock(dim, heads, depth, mlp_ratio, dropout))
        self.spatial = SpatialT(AttentionBlock(dim, heads, depth, mlp_ratio, dropout))
        self.mlp_t = mlp(dim, mlp_ratio, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.spatial(self.temporal(x) + self.mlp_t(x))
