"""Stored output formats: keypoint items and packs, tube packs, training runs; their params, keys and readers.

Importing this package registers each format's done-check with the store (`store.register_output_format`), so that
`Store.status` can count any output.
"""

from pipelines.formats import keypoint_packs, training_runs, tube_packs  # noqa: F401 (they register their formats)
