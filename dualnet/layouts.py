"""Keypoint layouts as data: the names, skeleton edges and left/right pairs of each pose format.

A layout is the contract between a pose source and everything downstream: a keypoint array `(T, V, 3)` is only
meaningful together with the layout that names its V points.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# MediaPipe Pose's 33 body landmarks, in the order the model emits them (lower-cased from `PoseLandmark`).
_MP_BODY = (
    "nose", "left_eye_inner", "left_eye", "left_eye_outer", "right_eye_inner", "right_eye", "right_eye_outer",
    "left_ear", "right_ear", "mouth_left", "mouth_right", "left_shoulder", "right_shoulder", "left_elbow",
    "right_elbow", "left_wrist", "right_wrist", "left_pinky", "right_pinky", "left_index", "right_index",
    "left_thumb", "right_thumb", "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle",
    "left_heel", "right_heel", "left_foot_index", "right_foot_index",
)
_MP_BODY_EDGES = (
    (0, 1), (1, 2), (2, 3), (3, 7), (0, 4), (4, 5), (5, 6), (6, 8), (9, 10), (11, 12), (11, 13), (13, 15),
    (15, 17), (15, 19), (15, 21), (17, 19), (12, 14), (14, 16), (16, 18), (16, 20), (16, 22), (18, 20), (11, 23),
    (12, 24), (23, 24), (23, 25), (24, 26), (25, 27), (26, 28), (27, 29), (28, 30), (29, 31), (30, 32), (27, 31),
    (28, 32),
)
# MediaPipe Hands' 21 landmarks per hand (lower-cased from `HandLandmark`).
_MP_HAND = (
    "wrist", "thumb_cmc", "thumb_mcp", "thumb_ip", "thumb_tip", "index_finger_mcp", "index_finger_pip",
    "index_finger_dip", "index_finger_tip", "middle_finger_mcp", "middle_finger_pip", "middle_finger_dip",
    "middle_finger_tip", "ring_finger_mcp", "ring_finger_pip", "ring_finger_dip", "ring_finger_tip", "pinky_mcp",
    "pinky_pip", "pinky_dip", "pinky_tip",
)
_MP_HAND_EDGES = (
    (0, 1), (1, 2), (2, 3), (3, 4), (0, 5), (5, 6), (6, 7), (7, 8), (5, 9), (9, 10), (10, 11), (11, 12), (9, 13),
    (13, 14), (14, 15), (15, 16), (13, 17), (0, 17), (17, 18), (18, 19), (19, 20),
)
_MP_FACE_POINTS = 468  # FaceMesh without iris refinement


@dataclass(frozen=True)
class Layout:
    """A named keypoint layout.

    Attributes:
        name: Identifier stored with every keypoint array (e.g. ``"mediapipe_holistic"``).
        keypoint_names: One name per keypoint, in array order.
        edges: Skeleton edges as index pairs, for drawing.
        body: Indices of the body keypoints (used to find, size and track a person).
        flip_pairs: Index pairs that swap under a horizontal flip (left <-> right).
    """

    name: str
    keypoint_names: tuple[str, ...]
    edges: tuple[tuple[int, int], ...]
    body: tuple[int, ...]
    flip_pairs: tuple[tuple[int, int], ...] = field(default=())

    @property
    def num_keypoints(self) -> int:
        return len(self.keypoint_names)

    def index(self, keypoint_name: str) -> int:
        """Array index of a keypoint by name; raises KeyError naming the layout when absent."""
        try:
            return self.keypoint_names.index(keypoint_name)
        except ValueError:
            raise KeyError(f"layout {self.name!r} has no keypoint {keypoint_name!r}") from None


def _lr_pairs(names: tuple[str, ...]) -> tuple[tuple[int, int], ...]:
    """Pairs (i, j) where name j is name i with 'left' replaced by 'right'."""
    position = {n: i for i, n in enumerate(names)}
    pairs = []
    for i, n in enumerate(names):
        if "left" in n:
            j = position.get(n.replace("left", "right"))
            if j is not None:
                pairs.append((i, j))
    return tuple(pairs)


def _mediapipe_holistic() -> Layout:
    left_hand = tuple(f"left_hand_{n}" for n in _MP_HAND)
    right_hand = tuple(f"right_hand_{n}" for n in _MP_HAND)
    face = tuple(f"face_{i:03d}" for i in range(_MP_FACE_POINTS))
    names = _MP_BODY + left_hand + right_hand + face
    n_body, n_hand = len(_MP_BODY), len(_MP_HAND)
    edges = list(_MP_BODY_EDGES)
    for offset in (n_body, n_body + n_hand):
        edges += [(a + offset, b + offset) for a, b in _MP_HAND_EDGES]
    return Layout(
        name="mediapipe_holistic",
        keypoint_names=names,
        edges=tuple(edges),
        body=tuple(range(n_body)),
        flip_pairs=_lr_pairs(names),
    )


MEDIAPIPE_HOLISTIC = _mediapipe_holistic()

LAYOUTS: dict[str, Layout] = {layout.name: layout for layout in (MEDIAPIPE_HOLISTIC,)}


def get_layout(name: str) -> Layout:
    """Look up a layout by name; the error lists the known ones."""
    try:
        return LAYOUTS[name]
    except KeyError:
        raise KeyError(f"unknown keypoint layout {name!r}; known: {', '.join(sorted(LAYOUTS))}") from None
