"""Entity boxes on constructed keypoints, where the right answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from dualnet.entities import ENTITY_SETS, body_scale, entity_boxes, flip_order, get_entity_set
from dualnet.layouts import COCO_17, MEDIAPIPE_HOLISTIC, get_layout


def coco_pose(t: int = 5) -> np.ndarray:
    """A frontal COCO-17 person: shoulders 100 px apart at y=300, hips at y=450, wrists low and outward."""
    pts = {"nose": (500, 200), "left_eye": (515, 190), "right_eye": (485, 190), "left_ear": (530, 195),
           "right_ear": (470, 195), "left_shoulder": (550, 300), "right_shoulder": (450, 300),
           "left_elbow": (570, 380), "right_elbow": (430, 380), "left_wrist": (580, 450), "right_wrist": (420, 450),
           "left_hip": (530, 450), "right_hip": (470, 450), "left_knee": (535, 560), "right_knee": (465, 560),
           "left_ankle": (535, 660), "right_ankle": (465, 660)}
    kp = np.array([[*pts[n], 0.9] for n in COCO_17.keypoint_names], dtype=float)
    return np.repeat(kp[None], t, axis=0)


def test_boxes_are_square_contain_their_points_and_respect_minimum_size():
    kp = coco_pose()
    entities = get_entity_set("k6")
    boxes, visible = entity_boxes(kp, COCO_17, entities, (1000, 800), smooth_sigma=0)
    assert visible.all()
    sides = boxes[..., 2] - boxes[..., 0]
    np.testing.assert_allclose(sides, boxes[..., 3] - boxes[..., 1])
    scale = body_scale(kp, COCO_17, (1000, 800))
    assert scale == pytest.approx(100)
    for k, entity in enumerate(entities):
        assert (sides[:, k] >= entity.min_side * scale - 1e-9).all()
        idx = entity.indices(COCO_17)
        xy = kp[:, idx, :2]
        box = boxes[:, k][:, None]
        if entity.shift_y == 0:
            assert ((xy[..., 0] >= box[..., 0]) & (xy[..., 0] <= box[..., 2]) & (xy[..., 1] >= box[..., 1])
                    & (xy[..., 1] <= box[..., 3])).all(), entity.name


def test_hand_falls_back_to_the_forearm_direction_and_gaps_interpolate():
    kp = coco_pose(9)
    lw = COCO_17.index("left_wrist")
    kp[4, lw] = (np.nan, np.nan, 0.0)  # wrist lost on one frame: interpolated, not visible
    kp[:, [COCO_17.index(n) for n in ("nose", "left_eye", "right_eye", "left_ear", "right_ear")], 2] = 0.1
    entities = get_entity_set("k6")
    boxes, visible = entity_boxes(kp, COCO_17, entities, (1000, 800), smooth_sigma=0)
    hand = [e.name for e in entities].index("left_hand")
    assert not visible[4, hand] and visible[3, hand]
    np.testing.assert_allclose(boxes[4, hand], boxes[3, hand])  # constant pose: the gap interpolates exactly
    face = [e.name for e in entities].index("face")
    assert not visible[:, face].any()
    centre_y = (boxes[:, face, 1] + boxes[:, face, 3]) / 2
    assert (centre_y < 300).all()  # above the shoulders


def test_nobody_anywhere_gives_centred_invisible_boxes():
    kp = np.full((3, MEDIAPIPE_HOLISTIC.num_keypoints, 3), np.nan)
    boxes, visible = entity_boxes(kp, MEDIAPIPE_HOLISTIC, get_entity_set("k5"), (640, 480))
    assert not visible.any() and np.isfinite(boxes).all()
    np.testing.assert_allclose(boxes[0, 0], [200, 120, 440, 360])


def test_entity_sets_and_flip_order():
    assert [e.name for e in ENTITY_SETS["k5"]] == ["face", "head", "torso", "left_hand", "right_hand"]
    assert flip_order(get_entity_set("k6")) == [0, 1, 2, 4, 3, 5]
    with pytest.raises(KeyError, match="known: k6, k5"):
        get_entity_set("k4")
    wholebody = get_layout("coco_wholebody")
    assert len(get_entity_set("k6")[0].indices(wholebody)) == 3 + 68  # nose, eyes and the 68 face points
