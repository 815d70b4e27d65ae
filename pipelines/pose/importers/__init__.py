"""Readers for pose data users already have; each yields clips in one shape for the `import` stage.

Every reader raises InputError naming the file and the record (or line) on malformed input.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dualnet.layouts import Layout


@dataclass
class ImportedClip:
    """One clip's keypoints as read from a foreign format."""

    name: str
    keypoints: np.ndarray  # (T, V, 3) x, y, score; NaN where absent
    detected: np.ndarray  # (T,) bool
    layout: Layout
    fps: float
    source_path: str
    width: int | None = None
    height: int | None = None
    coordinates: str = "x, y in pixels of the source frame; score in [0, 1]; NaN where not detected"
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. label, split, record index
    depth: np.ndarray | None = None  # (T, V) z in the units of x, y, NaN where absent; None: a 2D source


def people_to_subject(people_per_frame: list[list[np.ndarray]], layout: Layout) -> tuple[np.ndarray, np.ndarray]:
    """Keep the main subject across frames with several (or no) people; see `pipelines.pose.subject`."""
    from pipelines.pose.subject import track_main_subject

    return track_main_subject(people_per_frame, layout.num_keypoints, layout.body)
