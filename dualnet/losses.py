"""Losses: Mutual Action Consistency (MAC) between the two paths, and the total objective.

MAC (paper: "entity-aware contrastive learning between paths before routing"). Ours, in detail: per entity k, the
time-pooled X_ST[:, k] and X_TS[:, k] are projected and L2-normalised; a symmetric InfoNCE takes as positive the
same clip and entity in the other path and as negatives the other clips of the batch (same entity); the loss is
the mean over entities.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def mac_loss(z_st: torch.Tensor, z_ts: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """Symmetric per-entity InfoNCE between the paths.

    Args:
        z_st, z_ts: (B, K, E) projected, time-pooled entity features of the ST and TS paths.

    Returns:
        A scalar: about log(B) for unrelated embeddings, near 0 when each clip's two paths agree and clips differ.
    """
    b, k, _ = z_st.shape
    a, c = F.normalize(z_st, dim=-1), F.normalize(z_ts, dim=-1)
    logits = torch.einsum("ike,jke->kij", a, c) / temperature  # (K, B, B): clip i in ST vs clip j in TS
    target = torch.arange(b, device=z_st.device).repeat(k)
    forward = F.cross_entropy(logits.reshape(k * b, b), target)
    backward = F.cross_entropy(logits.transpose(1, 2).reshape(k * b, b), target)
    return (forward + backward) / 2


def total_loss(logits: torch.Tensor, labels: torch.Tensor, mac: torch.Tensor | None = None, mac_lambda: float = 0.1,
               coarse_logits: torch.Tensor | None = None, coarse_labels: torch.Tensor | None = None,
               coarse_weight: float = 1.0, class_weights: torch.Tensor | None = None
               ) -> tuple[torch.Tensor, dict[str, float]]:
    """``L = CE + lambda * MAC (+ coarse_weight * CE_coarse)``; returns the total and its parts (floats)."""
    ce = F.cross_entropy(logits, labels, weight=class_weights)
    total = ce
    parts = {"ce": float(ce.detach())}
    if mac is not None:
        total = total + mac_lambda * mac
        parts["mac"] = float(mac.detach())
    if coarse_logits is not None and coarse_labels is not None:
        coarse = F.cross_entropy(coarse_logits, coarse_labels)
        total = total + coarse_weight * coarse
        parts["coarse_ce"] = float(coarse.detach())
    parts["total"] = float(total.detach())
    return total, parts
