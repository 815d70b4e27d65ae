"""Losses: Mutual Action Consistency (MAC) between the two paths, and the total objective.

MAC (paper: "entity-aware contrastive learning between paths before routing"). Ours, in detail: per entity k, the
time-pooled X_ST[:, k] and X_TS[:, k] are projected and L2-normalised; a symmetric InfoNCE takes as positive the
same clip and entity in the other path and as negatives the other clips of the batch (same entity), except clips of
the same class when the labels are given (they are not negatives of each other); the loss is the mean over
entities. Under DistributedDataParallel in training the negatives are the clips of every process's batch (the
projections are gathered across ranks with their gradients), so N processes train as one process with N times the
batch would.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F


def mac_loss(z_st: torch.Tensor, z_ts: torch.Tensor, temperature: float = 0.1,
             labels: torch.Tensor | None = None, present: torch.Tensor | None = None,
             gather: bool = False) -> torch.Tensor:
    """Symmetric per-entity InfoNCE between the paths.

    Args:
        z_st, z_ts: (B, K, E) projected, time-pooled entity features of the ST and TS paths.
        labels: (B,) class labels: another clip of the same class is left out of the negatives.
        present: (B, K) bool, the entity was seen in the clip: an unseen entity is neither an anchor nor a negative.
        gather: Under torch.distributed (world size > 1; every rank must call it), the negatives are the clips of
            every rank's batch (gathered with their gradients; batches may differ in size), and the loss is scaled
            so that DistributedDataParallel's gradient average equals the gradient of one process's loss over the
            whole global batch.

    Returns:
        A scalar: about log(B) for unrelated embeddings, near 0 when each clip's two paths agree and clips differ.
    """
    b, k, _ = z_st.shape
    a, c = F.normalize(z_st, dim=-1), F.normalize(z_ts, dim=-1)
    present = torch.ones(b, k, dtype=torch.bool, device=z_st.device) if present is None else present
    keys_st, keys_ts, key_labels, key_present, offset, world = a, c, labels, present, 0, 1
    if gather and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        keys_st, keys_ts, key_labels, key_present, offset = _gather_rows(a, c, labels, present)
        world = dist.get_world_size()
    n = keys_st.shape[0]
    positive = torch.arange(b, device=z_st.device) + offset  # (B,): each clip's own row among the keys
    is_positive = torch.zeros(b, n, dtype=torch.bool, device=z_st.device)
    is_positive[torch.arange(b), positive] = True
    excluded = ~(present.T[:, :, None] & key_present.T[:, None, :]) & ~is_positive  # (K, B, N)
    if labels is not None:
        excluded = excluded | ((labels[:, None] == key_labels[None, :]) & ~is_positive)  # same class: not negatives
    rows = 0
    for anchors, keys in ((a, keys_ts), (c, keys_st)):  # ST anchors against TS keys, and TS against ST
        logits = torch.einsum("ike,jke->kij", anchors, keys) / temperature  # (K, B, N)
        logits = logits.masked_fill(excluded, float("-inf"))
        rows = rows + F.cross_entropy(logits.reshape(k * b, n), positive.repeat(k), reduction="none") / 2
    weight = present.T.reshape(k * b).to(rows.dtype)  # (K * B,): entity k of clip i, an anchor where seen
    seen = key_present.sum().to(rows.dtype) / world  # the global anchors' count over the ranks' average
    return (rows * weight).sum() / seen.clamp_min(1.0 / world)


class _GatherWithGrad(torch.autograd.Function):
    """Every rank's (B, ...) tensor stacked in rank order (W * B, ...); the backward pass sums each rank's gradient
    for every row and hands each rank its own rows' sum."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous()
        dist.all_reduce(grad)
        return grad.chunk(dist.get_world_size())[dist.get_rank()]


def _gather_rows(a: torch.Tensor, c: torch.Tensor, labels: torch.Tensor | None,
                 present: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor, int]:
    """Every rank's rows, in rank order: a and c (B_r, K, E) with gradients, labels (B_r,), present (B_r, K); and
    where this rank's rows start."""
    world, rank = dist.get_world_size(), dist.get_rank()
    sizes = [torch.zeros(1, dtype=torch.long, device=a.device) for _ in range(world)]
    dist.all_gather(sizes, torch.tensor([a.shape[0]], device=a.device))
    sizes = [int(x) for x in sizes]
    most = max(sizes)

    def padded(x: torch.Tensor, fill) -> torch.Tensor:
        return torch.cat([x, x.new_full((most - x.shape[0], *x.shape[1:]), fill)]) if x.shape[0] < most else x

    def joined(parts) -> torch.Tensor:
        return torch.cat([part[:size] for part, size in zip(parts, sizes, strict=True)])

    keys_st = joined(_GatherWithGrad.apply(padded(a, 0.0)).chunk(world))
    keys_ts = joined(_GatherWithGrad.apply(padded(c, 0.0)).chunk(world))
    flags = [torch.zeros((most, present.shape[1]), dtype=torch.bool, device=a.device) for _ in range(world)]
    dist.all_gather(flags, padded(present, False))
    key_labels = None
    if labels is not None:
        parts = [torch.zeros(most, dtype=labels.dtype, device=a.device) for _ in range(world)]
        dist.all_gather(parts, padded(labels, -1))
        key_labels = joined(parts)
    return keys_st, keys_ts, key_labels, joined(flags), sum(sizes[:rank])


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
