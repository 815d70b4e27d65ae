"""Cutting entity crops and global frames out of decoded video frames (numpy in, uint8 out)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def sample_indices(num_frames: int, count: int) -> np.ndarray:
    """`count` frame indices spread uniformly over a clip (segment centres, TSM-style); repeats for short clips."""
    if num_frames < 1:
        raise ValueError("a clip needs at least one frame")
    return np.minimum(((np.arange(count) + 0.5) * num_frames / count).astype(int), num_frames - 1)


def _resize(images: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(N, H, W, 3) uint8 -> (N, 3, h, w) uint8, bilinear with antialiasing (boxes shrink up to ~10x)."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float()
    y = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
    return y.round_().clamp_(0, 255).to(torch.uint8).numpy()


def crop_boxes(frame: np.ndarray, boxes: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Square crops of one frame, resized to `size`; parts of a box outside the frame are black.

    Args:
        frame: (H, W, 3) uint8.
        boxes: (K, 4) x1, y1, x2, y2 in pixels (rounded to whole pixels for the cut).

    Returns:
        crops (K, 3, size, size) uint8 and padding (K, 4) int32: pixels of each box outside the frame on the
        left, top, right and bottom.
    """
    h, w = frame.shape[:2]
    crops = np.zeros((len(boxes), 3, size, size), dtype=np.uint8)
    padding = np.zeros((len(boxes), 4), dtype=np.int32)
    for k, (x1, y1, x2, y2) in enumerate(np.round(boxes).astype(int)):
        side = max(x2 - x1, y2 - y1, 1)
        x2, y2 = x1 + side, y1 + side
        pad = np.array([max(0, -x1), max(0, -y1), max(0, x2 - w), max(0, y2 - h)])
        padding[k] = pad
        canvas = np.zeros((side, side, 3), dtype=np.uint8)
        sx1, sy1, sx2, sy2 = max(x1, 0), max(y1, 0), min(x2, w), min(y2, h)
        if sx2 > sx1 and sy2 > sy1:
            canvas[sy1 - y1:sy2 - y1, sx1 - x1:sx2 - x1] = frame[sy1:sy2, sx1:sx2]
        crops[k] = _resize(canvas[None], (size, size))[0]
    return crops, padding


def cut_global(frame: np.ndarray, window: np.ndarray, size: int) -> np.ndarray:
    """The global frame (3, size, size) uint8: the square `window` (x0, y0, side) of `frame` (H, W, 3), resized;
    parts outside the frame are black."""
    x0, y0, side = (int(v) for v in window)
    return crop_boxes(frame, np.array([[x0, y0, x0 + side, y0 + side]], np.float64), size)[0][0]
