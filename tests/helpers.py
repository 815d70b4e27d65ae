"""Comparisons between stores used by several tests."""

from __future__ import annotations

import numpy as np

from pipelines.formats.keypoints import KeypointSet

_VOLATILE = {"source_path"}  # may differ between two runs over copies of the same file


def assert_same_keypoints(a: KeypointSet, b: KeypointSet, names: list[str] | None = None) -> None:
    """Both sets hold the same items with equal arrays (NaN == NaN) and attributes."""
    names = names if names is not None else a.names()
    assert names and set(names) <= set(b.names())
    for name in names:
        ca, cb = a.load(name), b.load(name)
        for arr in ("keypoints", "detected", "timestamps"):
            np.testing.assert_array_equal(getattr(ca, arr), getattr(cb, arr), err_msg=f"{name}/{arr}")
            assert getattr(ca, arr).dtype == getattr(cb, arr).dtype, f"{name}/{arr}"
        attrs_a = {k: v for k, v in a.attributes(name).items() if k not in _VOLATILE}
        attrs_b = {k: v for k, v in b.attributes(name).items() if k not in _VOLATILE}
        assert attrs_a == attrs_b, name
