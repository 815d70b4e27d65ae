"""The reference the pose stream is measured against: a plain 1D temporal CNN over centred, scale-normalised joints
and their velocities (the kind of model DD-Net and the skeleton literature start from). Not part of the toolkit: it
lives here so that `bench_pose.py` measures it in the same run as Micro-DualNet's pose stream.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def normalise(keypoints: np.ndarray, frames: int) -> np.ndarray:
    """(T, V, 3) -> (frames, V * 4): joints resampled to `frames`, centred on the clip's mean joint position and
    divided by the clip's extent, with their frame-to-frame velocities; missing joints are zeros."""
    xy = keypoints[..., :2].astype(np.float64)
    ok = np.isfinite(xy).all(-1) & (np.nan_to_num(keypoints[..., 2]) > 0)
    idx = np.linspace(0, len(xy) - 1, frames).round().astype(int)
    xy, ok = xy[idx], ok[idx]
    valid = xy[ok] if ok.any() else np.zeros((1, 2))
    centre = valid.mean(0)
    extent = max(float(np.ptp(valid, axis=0).max()), 1e-6)
    xy = np.where(ok[..., None], (xy - centre) / extent, 0.0)
    velocity = np.zeros_like(xy)
    velocity[1:] = xy[1:] - xy[:-1]
    return np.concatenate([xy, velocity], -1).reshape(frames, -1).astype(np.float32)


class TemporalCNN(nn.Module):
    """Three 1D convolutions over time, global average pooling, a linear classifier."""

    def __init__(self, channels: int, num_classes: int, width: int = 128):
        super().__init__()
        layers, c = [], channels
        for _ in range(3):
            layers += [nn.Conv1d(c, width, 3, padding=1), nn.BatchNorm1d(width), nn.ReLU(), nn.Dropout(0.1)]
            c = width
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x (B, T, C)
        return self.head(self.body(x.transpose(1, 2)).mean(-1))


def train_and_test(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray,
                   num_classes: int, epochs: int = 60, seed: int = 0) -> float:
    """Last-epoch test Top-1 of the CNN (AdamW 1e-3, cosine, batch 32, Gaussian input noise)."""
    torch.manual_seed(seed)
    model = TemporalCNN(train_x.shape[-1], num_classes)
    optimiser = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-2)
    steps = epochs * int(np.ceil(len(train_x) / 32))
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, steps)
    x, y = torch.from_numpy(train_x), torch.from_numpy(train_y).long()
    g = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        model.train()
        for batch in torch.randperm(len(x), generator=g).split(32):
            noisy = x[batch] + 0.01 * torch.randn(x[batch].shape, generator=g)
            loss = nn.functional.cross_entropy(model(noisy), y[batch])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
    model.eval()
    with torch.no_grad():
        predicted = model(torch.from_numpy(test_x)).argmax(-1).numpy()
    return float((predicted == test_y).mean())
