"""ROIAlign in plain torch (no torchvision): the paper's Spatial Entity Module pools each entity box out of the
backbone's feature map of the global frame.

The arithmetic is Mask R-CNN's ROIAlign as torchvision computes it with ``aligned=True``: a box is shifted by half
a pixel, split into ``size`` x ``size`` bins, each bin averaged over ``sampling_ratio`` x ``sampling_ratio``
bilinear samples; a sample more than one pixel outside the map counts as zero, one within a pixel of the edge
takes the edge's value. Sampling is one `grid_sample` over all boxes, so it runs on any device and differentiates
with respect to the feature map.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def roi_align(features: torch.Tensor, boxes: torch.Tensor, size: int, spatial_scale: float,
              sampling_ratio: int = 2) -> torch.Tensor:
    """Pool every box of every image out of its feature map.

    Args:
        features: (N, C, H, W) feature maps.
        boxes: (N, K, 4) x1, y1, x2, y2 per image, in input-image pixels (K boxes per map).
        size: Output side R (R x R bins).
        spatial_scale: Feature-map pixels per input pixel (e.g. 7 / 224).
        sampling_ratio: Bilinear samples per bin side.

    Returns:
        (N, K, C, R, R) pooled features.
    """
    n, c, h, w = features.shape
    k = boxes.shape[1]
    s = size * sampling_ratio
    scaled = boxes.to(features.dtype) * spatial_scale - 0.5  # (N, K, 4) in map pixels, pixel centres at integers
    x1, y1, x2, y2 = scaled.unbind(-1)  # each (N, K)
    steps = (torch.arange(s, device=features.device, dtype=features.dtype) + 0.5) / s  # (S,) bin-sample offsets
    xs = x1[..., None] + steps * (x2 - x1)[..., None]  # (N, K, S)
    ys = y1[..., None] + steps * (y2 - y1)[..., None]  # (N, K, S)
    inside = ((xs >= -1) & (xs <= w))[:, :, None, :] & ((ys >= -1) & (ys <= h))[:, :, :, None]  # (N, K, S, S)
    gx = _normalise(xs.clamp(0, w - 1), w)  # clamping within a pixel of the edge = torchvision's edge rule
    gy = _normalise(ys.clamp(0, h - 1), h)
    grid = torch.stack(torch.broadcast_tensors(gx[:, :, None, :], gy[:, :, :, None]), dim=-1)  # (N, K, S, S, 2)
    sampled = F.grid_sample(features, grid.reshape(n, k * s, s, 2), mode="bilinear", padding_mode="border",
                            align_corners=True)  # (N, C, K*S, S)
    sampled = sampled.reshape(n, c, k, s, s).transpose(1, 2) * inside[:, :, None].to(features.dtype)
    return F.avg_pool2d(sampled.reshape(n * k, c, s, s), sampling_ratio).reshape(n, k, c, size, size)


def _normalise(position: torch.Tensor, extent: int) -> torch.Tensor:
    """Map pixel positions in [0, extent - 1] to grid_sample's [-1, 1] (align_corners=True)."""
    if extent == 1:
        return torch.zeros_like(position)
    return position * (2.0 / (extent - 1)) - 1.0
