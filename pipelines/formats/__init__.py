"""Stored output formats: keypoint items and packs, tube packs, checkpoints; their params and keys, readers."""
