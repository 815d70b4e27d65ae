"""Keypoint layouts as data: the names, skeleton edges and left/right pairs of each pose format.

A layout is the contract between a pose source and everything downstream: a keypoint array `(T, V, 3)` is only
meaningful together with the layout that names its V points.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from dualnet.face_mirror import IBUG68_MIRROR, MEDIAPIPE_FACE_MIRROR, OPENPOSE_FACE70_MIRROR

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


COCO17 = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder", "left_elbow",
    "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle",
    "right_ankle",
)
_COCO17_EDGES = (
    (15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6), (5, 7), (6, 8), (7, 9), (8, 10),
    (1, 2), (0, 1), (0, 2), (1, 3), (2, 4), (3, 5), (4, 6),
)


@dataclass(frozen=True)
class Layout:
    """A named keypoint layout.

    Attributes:
        name: Identifier stored with every keypoint array (e.g. ``"mediapipe_holistic"``).
        keypoint_names: One name per keypoint, in array order. Joints that mean the same thing carry the same name in
            every layout (COCO-17 body names, MediaPipe hand names), which is what makes conversion by name work.
        edges: Skeleton edges as index pairs, for drawing.
        body: Indices of the body keypoints (used to find, size and track a person).
        flip_pairs: Index pairs that swap under a horizontal flip: left <-> right names, and each face point with
            the point at its mirror image (`dualnet.face_mirror`).
        description: Where the layout comes from, in a sentence.
    """

    name: str
    keypoint_names: tuple[str, ...]
    edges: tuple[tuple[int, int], ...]
    body: tuple[int, ...]
    flip_pairs: tuple[tuple[int, int], ...] = field(default=())
    description: str = ""

    @property
    def num_keypoints(self) -> int:
        return len(self.keypoint_names)

    def index(self, keypoint_name: str) -> int:
        """Array index of a keypoint by name; raises KeyError naming the layout when absent."""
        try:
            return self.keypoint_names.index(keypoint_name)
        except ValueError:
            raise KeyError(f"layout {self.name!r} has no keypoint {keypoint_name!r}") from None

    @property
    def coco17(self) -> dict[str, int]:
        """The COCO-17 joints this layout has: name -> index in this layout."""
        return {n: self.keypoint_names.index(n) for n in COCO17 if n in self.keypoint_names}

    def shared_with(self, other: Layout) -> list[tuple[int, int]]:
        """(index here, index in `other`) for every keypoint name both layouts have, in this layout's order."""
        theirs = {n: i for i, n in enumerate(other.keypoint_names)}
        return [(i, theirs[n]) for i, n in enumerate(self.keypoint_names) if n in theirs]


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


def _face_pairs(names: tuple[str, ...], mirror: tuple[int, ...]) -> tuple[tuple[int, int], ...]:
    """Pairs (i, j), i < j, of face points that are each other's mirror image; the face points are the ``face_###``
    run of `names`, in the order `mirror` indexes."""
    if not mirror:
        return ()
    offset = names.index("face_000")
    if names[offset:offset + len(mirror)] != tuple(f"face_{i:03d}" for i in range(len(mirror))):
        raise ValueError(f"a face mirror of {len(mirror)} points needs face_000..face_{len(mirror) - 1:03d} in order")
    return tuple((offset + i, offset + j) for i, j in enumerate(mirror) if i < j)


def _edges_by_name(names: tuple[str, ...], pairs: tuple[tuple[str, str], ...]) -> tuple[tuple[int, int], ...]:
    position = {n: i for i, n in enumerate(names)}
    return tuple((position[a], position[b]) for a, b in pairs if a in position and b in position)


def _hand(side: str, which: tuple[str, ...] = _MP_HAND) -> tuple[str, ...]:
    return tuple(f"{side}_hand_{n}" for n in which)


def _hand_edges(names: tuple[str, ...], side: str) -> tuple[tuple[int, int], ...]:
    pairs = tuple((f"{side}_hand_{_MP_HAND[a]}", f"{side}_hand_{_MP_HAND[b]}") for a, b in _MP_HAND_EDGES)
    return _edges_by_name(names, pairs)


def _layout(name: str, names: tuple[str, ...], body_names: tuple[str, ...], edge_names: tuple[tuple[str, str], ...],
            description: str, face_mirror: tuple[int, ...] = ()) -> Layout:
    edges = _edges_by_name(names, edge_names) + _hand_edges(names, "left") + _hand_edges(names, "right")
    edges = tuple(dict.fromkeys(tuple(sorted(e)) for e in edges))  # each edge once
    body = tuple(i for i, n in enumerate(names) if n in body_names)
    return Layout(name, names, edges, body, _lr_pairs(names) + _face_pairs(names, face_mirror), description)


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
        flip_pairs=_lr_pairs(names) + _face_pairs(names, MEDIAPIPE_FACE_MIRROR),
        description="MediaPipe Holistic 0.10: 33 BlazePose body + 21 left hand + 21 right hand + 468 FaceMesh points",
    )


_COCO17_EDGE_NAMES = tuple((COCO17[a], COCO17[b]) for a, b in _COCO17_EDGES)
_FEET = ("left_big_toe", "left_small_toe", "left_heel", "right_big_toe", "right_small_toe", "right_heel")
# OpenPose's COCO-18 body (as in its --model_pose COCO and the pyskl/MA-52 releases) and BODY_25.
_OPENPOSE18 = (
    "nose", "neck", "right_shoulder", "right_elbow", "right_wrist", "left_shoulder", "left_elbow", "left_wrist",
    "right_hip", "right_knee", "right_ankle", "left_hip", "left_knee", "left_ankle", "right_eye", "left_eye",
    "right_ear", "left_ear",
)
_BODY25 = (
    "nose", "neck", "right_shoulder", "right_elbow", "right_wrist", "left_shoulder", "left_elbow", "left_wrist",
    "mid_hip", "right_hip", "right_knee", "right_ankle", "left_hip", "left_knee", "left_ankle", "right_eye",
    "left_eye", "right_ear", "left_ear", "left_big_toe", "left_small_toe", "left_heel", "right_big_toe",
    "right_small_toe", "right_heel",
)
_OPENPOSE_EDGE_NAMES = _COCO17_EDGE_NAMES + (
    ("neck", "nose"), ("neck", "left_shoulder"), ("neck", "right_shoulder"), ("neck", "mid_hip"),
    ("mid_hip", "left_hip"), ("mid_hip", "right_hip"), ("left_ankle", "left_heel"), ("left_ankle", "left_big_toe"),
    ("left_big_toe", "left_small_toe"), ("right_ankle", "right_heel"), ("right_ankle", "right_big_toe"),
    ("right_big_toe", "right_small_toe"), ("neck", "left_hip"), ("neck", "right_hip"),
)
_FINGERTIPS = ("thumb_tip", "index_finger_tip", "middle_finger_tip", "ring_finger_tip", "pinky_tip")
# JHMDB puppet joints, in the order of its joint_positions files (and of the DD-Net pickles).
_JHMDB15 = (
    "neck", "belly", "face", "right_shoulder", "left_shoulder", "right_hip", "left_hip", "right_elbow", "left_elbow",
    "right_knee", "left_knee", "right_wrist", "left_wrist", "right_ankle", "left_ankle",
)
_JHMDB_EDGE_NAMES = (
    ("face", "neck"), ("neck", "belly"), ("neck", "left_shoulder"), ("neck", "right_shoulder"),
    ("left_shoulder", "left_elbow"), ("left_elbow", "left_wrist"), ("right_shoulder", "right_elbow"),
    ("right_elbow", "right_wrist"), ("belly", "left_hip"), ("belly", "right_hip"), ("left_hip", "left_knee"),
    ("left_knee", "left_ankle"), ("right_hip", "right_knee"), ("right_knee", "right_ankle"),
)


def _face(count: int) -> tuple[str, ...]:
    return tuple(f"face_{i:03d}" for i in range(count))


MEDIAPIPE_HOLISTIC = _mediapipe_holistic()
COCO_17 = _layout("coco_17", COCO17, COCO17, _COCO17_EDGE_NAMES, "COCO keypoints: 17 body joints")
COCO_WHOLEBODY = _layout(
    "coco_wholebody", COCO17 + _FEET + _face(68) + _hand("left") + _hand("right"), COCO17 + _FEET,
    _COCO17_EDGE_NAMES + _OPENPOSE_EDGE_NAMES,
    "COCO-WholeBody 133 (RTMW / DWPose via rtmlib): 17 body + 6 feet + 68 face + 2 x 21 hands", IBUG68_MIRROR)
OPENPOSE_BODY25 = _layout("openpose_body25", _BODY25, _BODY25, _OPENPOSE_EDGE_NAMES, "OpenPose BODY_25")
OPENPOSE_BODY25_FACE_HANDS = _layout(
    "openpose_body25_face_hands", _BODY25 + _face(70) + _hand("left") + _hand("right"), _BODY25,
    _OPENPOSE_EDGE_NAMES,
    "OpenPose BODY_25 + face 70 + 2 x 21 hands (the iMiGUE skeletons: pose, face, hand_left, hand_right keypoints)",
    OPENPOSE_FACE70_MIRROR)
OPENPOSE_18 = _layout("openpose_18", _OPENPOSE18, _OPENPOSE18, _OPENPOSE_EDGE_NAMES, "OpenPose COCO-18 body")
MA52_28 = _layout(
    "ma52_28", _OPENPOSE18 + _hand("left", _FINGERTIPS) + _hand("right", _FINGERTIPS), _OPENPOSE18,
    _OPENPOSE_EDGE_NAMES + tuple((f"{s}_wrist", f"{s}_hand_{t}") for s in ("left", "right") for t in _FINGERTIPS),
    "MA-52 28-keypoint skeleton release: OpenPose COCO-18 body + 5 fingertips per hand (left, then right)")
JHMDB_15 = _layout("jhmdb_15", _JHMDB15, _JHMDB15, _JHMDB_EDGE_NAMES, "JHMDB puppet joints (15)")
# SHREC'17 (De Smedt et al.): wrist, palm, then per finger base, first, second joint and tip, which are MediaPipe
# Hands' cmc/mcp/ip/tip (thumb) and mcp/pip/dip/tip names; the palm joins the wrist and the finger bases.
_SHREC22 = ("wrist", "palm") + _MP_HAND[1:]
SHREC17_22 = _layout(
    "shrec17_22", _SHREC22, _SHREC22,
    tuple((_MP_HAND[a], _MP_HAND[b]) for a, b in _MP_HAND_EDGES)
    + (("wrist", "palm"),) + tuple(("palm", f) for f in ("index_finger_mcp", "middle_finger_mcp", "ring_finger_mcp",
                                                          "pinky_mcp")),
    "SHREC'17 / DHG hand skeleton: 22 joints of one hand (wrist, palm, 4 per finger)")

LAYOUTS: dict[str, Layout] = {
    layout.name: layout
    for layout in (MEDIAPIPE_HOLISTIC, COCO_17, COCO_WHOLEBODY, OPENPOSE_BODY25, OPENPOSE_BODY25_FACE_HANDS,
                   OPENPOSE_18, MA52_28, JHMDB_15, SHREC17_22)
}


def layout_from_dict(data: dict, where: str = "layout") -> Layout:
    """A layout from plain data: ``{"name", "keypoint_names", "edges"?, "body"?, "description"?}``.

    For skeleton releases whose joint order is documented elsewhere (the 44-joint MMN release, MiGA's 22 joints):
    write their names once in a JSON file and pass its path wherever a layout name is taken. Left/right pairs
    come from the names ('left_*' / 'right_*').
    """
    try:
        names = tuple(str(n) for n in data["keypoint_names"])
        name = str(data["name"])
    except (KeyError, TypeError):
        raise ValueError(f"{where}: a layout needs 'name' and 'keypoint_names'") from None
    if len(set(names)) != len(names) or not names:
        raise ValueError(f"{where}: keypoint_names must be non-empty and unique")
    edges = tuple((int(a), int(b)) for a, b in data.get("edges", ()))
    if any(not (0 <= a < len(names) and 0 <= b < len(names)) for a, b in edges):
        raise ValueError(f"{where}: an edge names a keypoint index outside 0..{len(names) - 1}")
    body = tuple(int(i) for i in data.get("body", range(len(names))))
    return Layout(name, names, edges, body, _lr_pairs(names), str(data.get("description", "")))


def get_layout(name: str) -> Layout:
    """Look up a layout by name, or load one from a ``.json`` file (see `layout_from_dict`)."""
    if name in LAYOUTS:
        return LAYOUTS[name]
    if name.endswith(".json"):
        import json
        from pathlib import Path

        try:
            layout = layout_from_dict(json.loads(Path(name).read_text()), name)
        except (OSError, ValueError) as e:
            raise ValueError(f"{name}: cannot read layout ({e})") from None
        LAYOUTS.setdefault(layout.name, layout)  # items name their layout; later lookups by name find it
        return layout
    raise KeyError(f"unknown keypoint layout {name!r}; known: {', '.join(sorted(LAYOUTS))} (or a layout .json file)")


def convert_keypoints(keypoints: np.ndarray, source: Layout, target: Layout) -> np.ndarray:
    """Keypoints (..., V_source, 3) in `source` order -> (..., V_target, 3) in `target` order: every joint both
    layouts name is carried over unchanged, the target's other joints are NaN (missing)."""
    if keypoints.shape[-2:] != (source.num_keypoints, 3):
        raise ValueError(f"keypoints of shape {keypoints.shape} do not fit layout {source.name} "
                         f"({source.num_keypoints} keypoints)")
    out = np.full((*keypoints.shape[:-2], target.num_keypoints, 3), np.nan, dtype=np.result_type(keypoints,
                                                                                                np.float32))
    pairs = target.shared_with(source)
    if pairs:
        mine, theirs = (list(x) for x in zip(*pairs, strict=True))
        out[..., mine, :] = keypoints[..., theirs, :]
    return out
