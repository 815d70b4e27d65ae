"""Pure functions on clips, used by training-time augmentation: a left-right flip (numpy, per clip, in the data
loader) and crop and colour jitter (torch, batched, on the training device: the loader only reads)."""

from __future__ import annotations

import numpy as np
import torch
from einops import rearrange

from dualnet.entities import Entity, flip_order
from dualnet.layouts import Layout


def hflip_clip(tubes: np.ndarray, boxes: np.ndarray, keypoints: np.ndarray, width: float, entities: tuple[Entity, ...],
               layout: Layout, frames: np.ndarray | None = None) -> tuple[np.ndarray, ...]:
    """Mirror a clip left-right: images flip, left and right entities and keypoints swap places.

    Args:
        tubes: (F, K, C, S, S) entity crops.
        boxes: (F, K, 4) x1, y1, x2, y2 in source pixels.
        keypoints: (F, V, 3) x, y, score in source pixels.
        width: Source frame width (x -> width - x).
        frames: Optional (F, C, G, G) global frames (mirrored as images: boxes in their pixels flip by
            `hflip_boxes` with width G).

    Returns:
        tubes, boxes, keypoints (and frames when given), flipped. Flipping twice gives the input back.
    """
    tubes = tubes[:, flip_order(entities), ..., ::-1]
    boxes, keypoints = hflip_pose(boxes, keypoints, width, entities, layout)
    if frames is None:
        return tubes, boxes, keypoints
    return tubes, boxes, keypoints, frames[..., ::-1]


def hflip_pose(boxes: np.ndarray, keypoints: np.ndarray, width: float, entities: tuple[Entity, ...],
               layout: Layout) -> tuple[np.ndarray, np.ndarray]:
    """Mirror boxes (F, K, 4) and keypoints (F, V, C) about x = width / 2 (width 0: about x = 0): x -> width - x,
    left and right entities and keypoints swap places. The one place the flip permutation is written. Channels
    after x are kept as they are and move with their keypoint: y, score and, with depth (C = 4: x, y, score, z), z
    (a mirror in x keeps each joint's distance from the camera)."""
    boxes = hflip_boxes(boxes, width, entities)
    keypoints = keypoints.copy()
    keypoints[..., 0] = width - keypoints[..., 0]
    perm = np.arange(layout.num_keypoints)
    for a, b in layout.flip_pairs:
        perm[a], perm[b] = b, a
    return boxes, keypoints[:, perm]


def rotate_pose(boxes: np.ndarray, keypoints: np.ndarray, degrees: float) -> tuple[np.ndarray, np.ndarray]:
    """Rotate keypoints (F, V, C) and entity boxes (F, K, 4) by `degrees` (counter-clockwise on the page, y pointing
    down) in the image plane about the mean of the clip's detected points. Box centres turn with the points and
    boxes keep their sides; channels after x, y (score, z) are kept. A clip with no detected point is returned as
    it is."""
    xy = keypoints[..., :2]
    if not np.isfinite(xy).all(-1).any():
        return boxes, keypoints
    centre = np.nanmean(xy[np.isfinite(xy).all(-1)], axis=0)  # (2,)
    a = np.deg2rad(degrees)
    turn = np.array([[np.cos(a), np.sin(a)], [-np.sin(a), np.cos(a)]], dtype=keypoints.dtype)  # (2, 2), y down
    keypoints = keypoints.copy()
    keypoints[..., :2] = (xy - centre) @ turn.T + centre
    half = (boxes[..., 2:] - boxes[..., :2]) / 2  # (F, K, 2)
    middle = (boxes[..., :2] + half - centre) @ turn.T + centre  # (F, K, 2)
    return np.concatenate([middle - half, middle + half], axis=-1).astype(boxes.dtype), keypoints


def hflip_boxes(boxes: np.ndarray, width: float, entities: tuple[Entity, ...]) -> np.ndarray:
    """Mirror entity boxes (F, K, 4) about x = width / 2; left and right entities swap places."""
    boxes = boxes[:, flip_order(entities)]
    return np.stack([width - boxes[..., 2], boxes[..., 1], width - boxes[..., 0], boxes[..., 3]], axis=-1)


def draw_crop_windows(num_entities: int, size: int, amount: float, rng: np.random.Generator) -> np.ndarray:
    """Random zoom windows for crop jitter, one per entity: (K, 3) int x0, y0, side in pixels of the S x S crop,
    each keeping a side of at least (1 - amount) S. amount = 0 gives the whole crop."""
    windows = np.zeros((num_entities, 3), np.int64)
    for e in range(num_entities):
        side = max(1, round(size * (1 - amount * rng.random())))
        x0, y0 = rng.integers(0, size - side + 1, 2)
        windows[e] = (x0, y0, side)
    return windows


def _resize_matrices(start: torch.Tensor, side: torch.Tensor, size: int) -> torch.Tensor:
    """(N, S, S) matrices A with A @ row = the window [start, start + side) of the row resized to S samples:
    bilinear, half-pixel centres, clamped to the window's edge pixels (``F.interpolate``'s bilinear with
    ``align_corners=False`` on the cut-out window)."""
    n = start.shape[0]
    centres = torch.arange(size, device=start.device, dtype=torch.float32) + 0.5  # (S,)
    src = (centres[None] * (side[:, None] / size) - 0.5).clamp(min=0)  # (N, S) position inside the window
    low = src.floor().clamp(max=side[:, None] - 1)
    weight_high = src - low
    high = torch.minimum(low + 1, side[:, None] - 1)
    matrices = torch.zeros(n, size, size, device=start.device, dtype=torch.float32)
    matrices.scatter_add_(2, (start[:, None] + low).long()[..., None], (1 - weight_high)[..., None])
    matrices.scatter_add_(2, (start[:, None] + high).long()[..., None], weight_high[..., None])
    return matrices


def jitter_crops(tubes: torch.Tensor, windows: torch.Tensor) -> torch.Tensor:
    """Zoom each entity's tube into its window, the same over time (a tube stays a tube), batched on any device.

    Bilinear resizing is separable: one (S, S) matrix per axis and entity, so the whole batch is two batched
    matrix products (fast on CPU and GPU alike), equal to cutting each window out and resizing it with
    ``F.interpolate(..., mode="bilinear", align_corners=False)`` up to float rounding.

    Args:
        tubes: (B, T, K, C, S, S) uint8 entity crops.
        windows: (B, K, 3) x0, y0, side in pixels (from `draw_crop_windows`).

    Returns:
        (B, T, K, C, S, S) uint8.
    """
    b, t, k, c, s, _ = tubes.shape
    x = rearrange(tubes, "b t k c h w -> (b k) h (t c w)").float()  # (B*K, H, T*C*W)
    x0, y0, side = windows.reshape(b * k, 3).to(device=tubes.device, dtype=torch.float32).unbind(-1)
    rows = _resize_matrices(y0, side, s)  # (B*K, S, S): output row <- source rows
    cols = _resize_matrices(x0, side, s)  # (B*K, S, S): output column <- source columns
    out = torch.bmm(rows, x)  # (B*K, H, T*C*W): rows resized
    out = torch.bmm(out.reshape(b * k, -1, s), cols.transpose(1, 2))  # (B*K, H*T*C, W): columns too
    out = out.round_().clamp_(0, 255).to(torch.uint8)  # rounded while contiguous, then moved as bytes
    return rearrange(out, "(b k) (h t c) w -> b t k c h w", b=b, t=t, c=c)


def colour_jitter(images: torch.Tensor, brightness: torch.Tensor, contrast: torch.Tensor) -> torch.Tensor:
    """Scale brightness, then contrast about each image's mean, batched on any device.

    Args:
        images: (B, ..., C, H, W) uint8.
        brightness, contrast: (B,) factors (1 = unchanged).

    Returns:
        Same shape, uint8.
    """
    shape = (-1,) + (1,) * (images.dim() - 1)
    x = images.float() * brightness.to(images.device, torch.float32).view(shape)
    mean = x.mean(dim=(-3, -2, -1), keepdim=True)
    x = (x - mean) * contrast.to(images.device, torch.float32).view(shape) + mean
    return x.round_().clamp_(0, 255).to(torch.uint8)
