"""Entity-level adaptive routing: each body part chooses its own mix of the ST and TS paths.

For entity i: ``[a_ST, a_TS] = softmax(R_i([X_ST ; X_TS]) / tau)`` and ``X_fused = a_ST * X_ST + a_TS * X_TS``
(paper). Ours: weights per sample and entity, from time-pooled features; R_i is a two-layer MLP per entity, held as
batched parameters (K small MLPs in one einsum).
"""

from __future__ import annotations

import math

import torch
from torch import nn


class EntityRouter(nn.Module):
    """K routers R_i: (2D) -> hidden -> 2, one per entity."""

    def __init__(self, num_entities: int, dim: int, hidden: int | None = None):
        super().__init__()
        hidden = hidden or dim
        self.w1 = nn.Parameter(torch.randn(num_entities, 2 * dim, hidden) / math.sqrt(2 * dim))
        self.b1 = nn.Parameter(torch.zeros(num_entities, hidden))
        self.w2 = nn.Parameter(torch.randn(num_entities, hidden, 2) / math.sqrt(hidden))
        self.b2 = nn.Parameter(torch.zeros(num_entities, 2))

    def forward(self, x_st: torch.Tensor, x_ts: torch.Tensor, tau: float = 1.0) -> torch.Tensor:
        """x_st, x_ts (B, T, K, D) -> routing weights (B, K, 2) = (a_ST, a_TS), summing to 1 per entity."""
        z = torch.cat([x_st.mean(dim=1), x_ts.mean(dim=1)], dim=-1)  # (B, K, 2D)
        h = nn.functional.gelu(torch.einsum("bki,kih->bkh", z, self.w1) + self.b1)
        logits = torch.einsum("bkh,kho->bko", h, self.w2) + self.b2  # (B, K, 2)
        return torch.softmax(logits / tau, dim=-1)


def fuse(x_st: torch.Tensor, x_ts: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """X_fused (B, T, K, D) from both paths and weights (B, K, 2)."""
    return weights[:, None, :, 0:1] * x_st + weights[:, None, :, 1:2] * x_ts
