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
    assert len(layout.flip_pairs) == 16 + 21 + (468 - 28) // 2  # body, fingers, face points off the midline (28)


def test_unknown_names():
    with pytest.raises(KeyError, match="known: coco_17, .*mediapipe_holistic"):
        get_layout("openpose_99")
    with pytest.raises(KeyError, match="no keypoint 'tail'"):
        MEDIAPIPE_HOLISTIC.index("tail")


@pytest.mark.parametrize("name, count, coco_shared", [
    ("coco_17", 17, 17), ("coco_wholebody", 133, 17), ("openpose_body25", 25, 17),
    ("openpose_body25_face_hands", 137, 17), ("openpose_18", 18, 17), ("ma52_28", 28, 17), ("jhmdb_15", 15, 12),
])
def test_every_layout_is_consistent(name, count, coco_shared):
    layout = get_layout(name)
    assert layout.num_keypoints == count and len(set(layout.keypoint_names)) == count
    assert len(layout.coco17) == coco_shared
    assert all(0 <= a < count and 0 <= b < count and a != b for a, b in layout.edges)
    assert len(set(layout.edges)) == len(layout.edges)
    for a, b in layout.flip_pairs:  # left/right pairs swap names exactly; face points swap with face points
        names = layout.keypoint_names[a], layout.keypoint_names[b]
        assert names[0].replace("left", "right") == names[1] or all(n.startswith("face_") for n in names)
    swapped = {frozenset(p) for p in layout.flip_pairs}
    for i, n in enumerate(layout.keypoint_names):  # every finger joint and every left joint swaps with its right one
        if n.startswith("left_") and n.replace("left", "right") in layout.keypoint_names:
            assert frozenset((i, layout.index(n.replace("left", "right")))) in swapped
    assert len({i for p in layout.flip_pairs for i in p}) == 2 * len(layout.flip_pairs)  # a permutation of swaps
    assert set(layout.body) <= set(range(count)) and layout.body


def test_conversion_by_shared_names_preserves_joints():
    body25, wholebody = get_layout("openpose_body25_face_hands"), get_layout("coco_wholebody")
    shared = body25.shared_with(wholebody)
    names = {body25.keypoint_names[i] for i, _ in shared}
    assert {"left_wrist", "right_ankle", "left_hand_index_finger_tip", "right_heel"} <= names
    assert all(body25.keypoint_names[i] == wholebody.keypoint_names[j] for i, j in shared)
    assert get_layout("ma52_28").index("left_hand_thumb_tip") == 18
    assert get_layout("openpose_body25").index("mid_hip") == 8 and get_layout("jhmdb_15").index("belly") == 1
