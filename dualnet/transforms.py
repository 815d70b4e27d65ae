"""Pure functions on clips, used by training-time augmentation."""

from __future__ import annotations

import numpy as np

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
        frames: Optional (F, C, G, G) global frames (letterboxed and centred, so mirroring them mirrors the scene;
            with an odd padding the image shifts by one pixel).

    Returns:
        tubes, boxes, keypoints (and frames when given), flipped. Flipping twice gives the input back.
    """
    order = flip_order(entities)
    tubes = tubes[:, order, ..., ::-1]
    boxes = boxes[:, order]
    boxes = np.stack([width - boxes[..., 2], boxes[..., 1], width - boxes[..., 0], boxes[..., 3]], axis=-1)
    keypoints = keypoints.copy()
    keypoints[..., 0] = width - keypoints[..., 0]
    perm = np.arange(layout.num_keypoints)
    for a, b in layout.flip_pairs:
        perm[a], perm[b] = b, a
    keypoints = keypoints[:, perm]
    if frames is None:
        return tubes, boxes, keypoints
    return tubes, boxes, keypoints, frames[..., ::-1]
