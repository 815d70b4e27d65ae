"""The on-disk format of one keypoint item (one video or clip), shared by `extract` and every importer.

A zarr v3 group with arrays ``keypoints`` (T, V, 3) = x, y, score (NaN where absent), ``detected`` (T,) bool and
``timestamps`` (T,) seconds, and attributes naming the layout, its keypoint names, fps, frame size and the source.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from dualnet.layouts import Layout

CHUNK_FRAMES = 256  # frames per zarr chunk: one chunk for a 1-3 s clip, bounded reads for long videos


def write_keypoint_item(
    group_path: Path,
    keypoints: np.ndarray,
    detected: np.ndarray,
    timestamps: np.ndarray,
    *,
    layout: Layout,
    fps: float,
    width: int | None,
    height: int | None,
    source_name: str,
    source_path: str,
    fingerprint: str,
    dtype: str = "float32",
    coordinates: str = "x, y in pixels of the source frame; score in [0, 1]; NaN where not detected",
    extra: dict[str, Any] | None = None,
) -> None:
    """Write one item as a zarr group at `group_path` (a temporary location; the caller commits it).

    Args:
        keypoints: (T, V, 3) with V = layout.num_keypoints.
        detected: (T,) whether the subject was found in each frame.
        timestamps: (T,) seconds.
    """
    t, v, c = keypoints.shape
    if v != layout.num_keypoints or c != 3:
        raise ValueError(f"keypoints of shape {keypoints.shape} do not fit layout {layout.name} "
                         f"({layout.num_keypoints} keypoints)")
    group = zarr.open_group(group_path, mode="w")
    group.attrs.update({
        "layout": layout.name,
        "keypoint_names": list(layout.keypoint_names),
        "fps": float(fps),
        "width": width,
        "height": height,
        "num_frames": t,
        "source_name": source_name,
        "source_path": source_path,
        "source_fingerprint": fingerprint,
        "coordinates": coordinates,
        **(extra or {}),
    })
    chunk = min(max(t, 1), CHUNK_FRAMES)
    group.create_array("keypoints", data=keypoints.astype(dtype), chunks=(chunk, v, 3))
    group.create_array("detected", data=np.asarray(detected, dtype=bool), chunks=(chunk,))
    group.create_array("timestamps", data=np.asarray(timestamps, dtype=np.float64), chunks=(chunk,))


def item_fingerprint(item_path: Path) -> str | None:
    """The source fingerprint a finished item records, or None when the item is absent or unreadable.

    Reads the group's small zarr.json directly: checking 20,000 items must not open 20,000 zarr groups.
    """
    try:
        with open(item_path / "zarr.json") as f:
            return json.load(f)["attributes"]["source_fingerprint"]
    except (OSError, ValueError, KeyError):
        return None
