"""Keypoint layouts."""

from __future__ import annotations

import pytest

from dualnet.layouts import MEDIAPIPE_HOLISTIC, get_layout


def test_mediapipe_holistic_layout():
    layout = get_layout("mediapipe_holistic")
    assert layout.num_keypoints == 33 + 21 + 21 + 468
    assert len(set(layout.keypoint_names)) == layout.num_keypoints
    assert layout.index("nose") == 0 and layout.index("left_wrist") == 15
    assert layout.index("left_hand_wrist") == 33 and layout.index("right_hand_wrist") == 54
    assert all(0 <= a < layout.num_keypoints and 0 <= b < layout.num_keypoints for a, b in layout.edges)
    pairs = dict(layout.flip_pairs)
    assert pairs[layout.index("left_wrist")] == layout.index("right_wrist")
    assert pairs[layout.index("left_hand_thumb_tip")] == layout.index("right_hand_thumb_tip")
    assert len(layout.flip_pairs) == 16 + 21


def test_unknown_names():
    with pytest.raises(KeyError, match="known: mediapipe_holistic"):
        get_layout("openpose_99")
    with pytest.raises(KeyError, match="no keypoint 'tail'"):
        MEDIAPIPE_HOLISTIC.index("tail")
