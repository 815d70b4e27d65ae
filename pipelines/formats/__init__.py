"""Stored output formats: keypoint items and packs, tube packs, pose clips, training runs; their params, keys and
readers.

Importing this package registers each format's done-check with the store (`store.register_output_format`), so that
`Store.status` can count any output.
"""

from pipelines.formats import (  # noqa: F401 (they register their formats)
    keypoint_packs,
    pose_clips,
    training_runs,
    tube_packs,
)
