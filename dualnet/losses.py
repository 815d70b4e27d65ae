"""Losses: Mutual Action Consistency (MAC) between the two paths, and the total objective.

MAC (paper: "entity-aware contrastive learning between paths before routing"). Ours, in detail: per entity k, the
time-pooled X_ST[:, k] and X_TS[:, k] are projected and L2-normalised; a symmetric InfoNCE takes as positive the
same clip and entity in the other path and as negatives the other clips of the batch (same entity), except clips of
the same class when the labels are given (they are not negatives of each other); the loss is the mean over
entities. Under DistributedDataParallel the negatives are the clips of the process's own batch.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def mac_loss(z_st: torch.Tensor, z_ts: torch.Tensor, temperature: float = 0.1,
             labels: torch.Tensor | None = None, present: torch.Tensor | None = None) -> torch.Tensor:
    """Symmetric per-entity InfoNCE between the paths.

    Args:
        z_st, z_ts: (B, K, E) projected, time-pooled entity features of the ST and TS paths.
        labels: (B,) class labels: another clip of the same class is left out of the negatives.
        present: (B, K) bool, the entity was seen in the clip: an unseen entity is neither an anchor nor a negative.

    Returns:
        A scalar: about log(B) for unrelated embeddings, near 0 when each clip's two paths agree and clips differ.
    """
    b, k, _ = z_st.shape
    a, c = F.normalize(z_st, dim=-1), F.normalize(z_ts, dim=-1)
    logits = torch.einsum("ike,jke->kij", a, c) / temperature  # (K, B, B): clip i in ST vs clip j in TS
    if labels is not None:
        same = labels[:, None] == labels[None, :]  # (B, B)
        same.fill_diagonal_(False)  # the positive stays
        logits = logits.masked_fill(same, float("-inf"))
    if present is not None:
        seen = present.T  # (K, B)
        pair = seen[:, :, None] & seen[:, None, :]  # (K, B, B): both clips show entity k
        logits = logits.masked_fill(~pair & ~torch.eye(b, dtype=torch.bool, device=z_st.device), float("-inf"))
    target = torch.arange(b, device=z_st.device).repeat(k)
    forward = F.cross_entropy(logits.reshape(k * b, b), target, reduction="none")
    backward = F.cross_entropy(logits.transpose(1, 2).reshape(k * b, b), target, reduction="none")
    rows = (forward + backward) / 2  # (K * B,): entity k of clip i
    if present is None:
        return rows.mean()
    weight = present.T.reshape(k * b).to(rows.dtype)
    return (rows * weight).sum() / weight.sum().clamp_min(1.0)


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


def class_weights(counts: np.ndarray, kind: str = "inverse", beta: float = 0.999) -> np.ndarray:
    """Cross-entropy weights for long-tailed classes from per-class clip counts (C,).

    kind: ``inverse`` (1 / n), ``sqrt`` (1 / sqrt(n)) or ``effective`` ((1 - beta) / (1 - beta^n), Cui et al.,
    CVPR 2019). Scaled so that the clips' mean weight is 1 (sum_c n_c w_c = N); classes without clips get 0.
    """
    counts = np.asarray(counts, dtype=np.float64)
    present = counts > 0
    n = np.maximum(counts, 1)
    raw = {"inverse": lambda: 1 / n, "sqrt": lambda: 1 / np.sqrt(n),
           "effective": lambda: (1 - beta) / (1 - beta ** n)}
    if kind not in raw:
        raise ValueError(f"class weights {kind!r} are not inverse, sqrt or effective")
    weights = np.where(present, raw[kind](), 0.0)
    return weights * counts.sum() / max(float((weights * counts).sum()), 1e-12)
