"""Body-part entities as data, and the boxes that cut them out of frames.

An entity is a set of keypoint names (matched in any layout, since joints that mean the same carry the same name
everywhere) plus how its box is made: a margin around those keypoints, a minimum side relative to the body scale
(shoulder width), and a fallback from body geometry for frames where its keypoints are missing (a hand box from
the elbow->wrist direction, a face box above the shoulders, ...). K = 6 entities on MA-52, K = 5 on iMiGUE (people
sit behind a desk: no lower body), and a palm and five fingers for single-hand data (`hand`). `entity_set_for`
picks the set that fits a layout.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from dualnet.layouts import Layout

MIN_SCORE = 0.3  # a keypoint counts as visible at or above this confidence


@dataclass(frozen=True)
class Entity:
    """One body part.

    Attributes:
        name: face, head, torso, left_hand, right_hand or lower_body.
        keypoints: Names defining the box; a trailing ``*`` matches a prefix (``face_*`` = every face-mesh point).
        margin: Box side = keypoints' extent times this ...
        min_side: ... but at least this many body scales (shoulder widths).
        shift_y: Move the box centre down by this fraction of its side (negative: up; a head box covers the hair).
        min_points: Visible keypoints needed for a box of its own; below that the fallback is used.
        fallback: How to place the box without its keypoints (see `_fallback`).
        mirror: The entity it becomes under a horizontal flip.
    """

    name: str
    keypoints: tuple[str, ...]
    margin: float
    min_side: float
    shift_y: float
    min_points: int
    fallback: str
    mirror: str

    def indices(self, layout: Layout) -> np.ndarray:
        """Indices in `layout` of this entity's keypoints."""
        out = []
        for pattern in self.keypoints:
            if pattern.endswith("*"):
                out += [i for i, n in enumerate(layout.keypoint_names) if n.startswith(pattern[:-1])]
            elif pattern in layout.keypoint_names:
                out.append(layout.keypoint_names.index(pattern))
        return np.array(sorted(set(out)), dtype=int)


_EYES_NOSE_MOUTH = ("nose", "left_eye", "right_eye", "left_eye_inner", "right_eye_inner", "left_eye_outer",
                    "right_eye_outer", "mouth_left", "mouth_right", "face")
_HAND = ("{s}_wrist", "{s}_pinky", "{s}_index", "{s}_thumb", "{s}_hand_*")
_LEGS = tuple(f"{s}_{j}" for s in ("left", "right") for j in
              ("hip", "knee", "ankle", "heel", "foot_index", "big_toe", "small_toe"))

FACE = Entity("face", _EYES_NOSE_MOUTH + ("face_*",), margin=1.25, min_side=0.45, shift_y=0.0, min_points=2,
              fallback="above_shoulders", mirror="face")
HEAD = Entity("head", _EYES_NOSE_MOUTH + ("left_ear", "right_ear", "face_*"), margin=1.6, min_side=0.8,
              shift_y=-0.12, min_points=2, fallback="above_shoulders", mirror="head")
TORSO = Entity("torso", ("left_shoulder", "right_shoulder", "neck", "left_hip", "right_hip", "mid_hip", "belly"),
               margin=1.15, min_side=1.3, shift_y=0.0, min_points=2, fallback="below_shoulders", mirror="torso")
LEFT_HAND = Entity("left_hand", tuple(p.format(s="left") for p in _HAND), margin=1.4, min_side=0.55, shift_y=0.0,
                   min_points=1, fallback="left_forearm", mirror="right_hand")
RIGHT_HAND = Entity("right_hand", tuple(p.format(s="right") for p in _HAND), margin=1.4, min_side=0.55,
                    shift_y=0.0, min_points=1, fallback="right_forearm", mirror="left_hand")
LOWER_BODY = Entity("lower_body", _LEGS, margin=1.15, min_side=1.6, shift_y=0.0, min_points=2,
                    fallback="below_hips", mirror="lower_body")


def _finger(name: str, prefix: str, min_side: float = 0.5) -> Entity:
    """One finger of a single-hand layout (MediaPipe Hands / SHREC'17 names: ``index_finger_mcp`` ...)."""
    return Entity(name, (f"{prefix}*",), margin=1.3, min_side=min_side, shift_y=0.0, min_points=1,
                  fallback="all_points", mirror=name)


# A single hand (hand-gesture data): the palm and the five fingers. The body scale of a hand layout is a third of
# the hand's extent (no shoulders), so a finger box is at least about half of that.
PALM = Entity("palm", ("wrist", "palm", "thumb_cmc", "index_finger_mcp", "middle_finger_mcp", "ring_finger_mcp",
                       "pinky_mcp"), margin=1.2, min_side=1.0, shift_y=0.0, min_points=1, fallback="all_points",
              mirror="palm")
HAND_FINGERS = (_finger("thumb", "thumb_"), _finger("index", "index_finger_"), _finger("middle", "middle_finger_"),
                _finger("ring", "ring_finger_"), _finger("little", "pinky_"))

ENTITY_SETS: dict[str, tuple[Entity, ...]] = {
    "k6": (FACE, HEAD, TORSO, LEFT_HAND, RIGHT_HAND, LOWER_BODY),  # MA-52: the whole seated body is in view
    "k5": (FACE, HEAD, TORSO, LEFT_HAND, RIGHT_HAND),  # iMiGUE: behind a desk, no lower body
    "hand": (PALM, *HAND_FINGERS),  # one hand (SHREC'17, hand-gesture data)
}


def get_entity_set(name: str) -> tuple[Entity, ...]:
    try:
        return ENTITY_SETS[name]
    except KeyError:
        raise KeyError(f"unknown entity set {name!r}; known: {', '.join(ENTITY_SETS)}") from None


def entity_coverage(name: str, layout: Layout) -> float:
    """The share of the set's entities that have at least one of their keypoints in `layout`."""
    entities = get_entity_set(name)
    return sum(len(e.indices(layout)) > 0 for e in entities) / len(entities)


def entity_set_for(layout: Layout) -> str:
    """The entity set that fits `layout` best: the highest share of entities with keypoints of their own, ties to
    the larger set (a whole body: k6; a single hand: hand; a face mesh: k5, whose face and head boxes it fills, the
    others being placed from what is seen). A layout no entity of any set matches is a ValueError naming it."""
    ranked = sorted(ENTITY_SETS, key=lambda n: (entity_coverage(n, layout), len(ENTITY_SETS[n])), reverse=True)
    best = ranked[0]
    if entity_coverage(best, layout) == 0:
        raise ValueError(f"layout {layout.name!r} fits no entity set (none of its {layout.num_keypoints} keypoint "
                         "names is one an entity uses): name its joints as the built-in layouts do (left_shoulder, "
                         "right_wrist, face_000, index_finger_tip, ...)")
    return best


def flip_order(entities: tuple[Entity, ...]) -> list[int]:
    """Entity order after a horizontal flip: position k takes the entity that mirrors entity k."""
    names = [e.name for e in entities]
    return [names.index(e.mirror) for e in entities]


def _point(keypoints: np.ndarray, layout: Layout, name: str) -> np.ndarray:
    """(T, 2) coordinates of a named keypoint, NaN where absent or below MIN_SCORE (or not in the layout)."""
    t = keypoints.shape[0]
    if name not in layout.keypoint_names:
        return np.full((t, 2), np.nan)
    kp = keypoints[:, layout.keypoint_names.index(name)]
    return np.where((kp[:, 2:3] >= MIN_SCORE) & np.isfinite(kp[:, :2]), kp[:, :2], np.nan)


def body_scale(keypoints: np.ndarray, layout: Layout, frame_size: tuple[int, int]) -> float:
    """One scale for the clip: the median shoulder width, else a third of the median body-box size, else a sixth of
    the frame height. Robust to single bad frames, and stable over time so boxes do not breathe."""
    widths = np.linalg.norm(_point(keypoints, layout, "left_shoulder") - _point(keypoints, layout, "right_shoulder"),
                            axis=1)
    widths = widths[np.isfinite(widths) & (widths > 1e-6)]
    if len(widths):
        return float(np.median(widths))
    body = keypoints[:, list(layout.body)]
    ok = (body[..., 2] >= MIN_SCORE) & np.isfinite(body[..., :2]).all(axis=-1)
    sizes = [np.ptp(f[m, :2], axis=0).max() for f, m in zip(body, ok, strict=True) if m.sum() >= 2]
    sizes = [s for s in sizes if s > 1e-6]
    if sizes:
        return float(np.median(sizes)) / 3
    return frame_size[1] / 6


def _nanmean(*points: np.ndarray) -> np.ndarray:
    """Per-frame mean of (T, 2) points, ignoring missing ones; NaN where all are missing (without a warning)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(np.stack(points), axis=0)


def _fallback(rule: str, keypoints: np.ndarray, layout: Layout, scale: float) -> np.ndarray:
    """(T, 3) centre x, centre y and side from body geometry; NaN where the anchors are missing too."""
    p = lambda n: _point(keypoints, layout, n)  # noqa: E731
    shoulders = _nanmean(p("left_shoulder"), p("right_shoulder"))
    t = keypoints.shape[0]
    if rule in ("left_forearm", "right_forearm"):
        side = rule.split("_")[0]
        wrist, elbow = p(f"{side}_wrist"), p(f"{side}_elbow")
        centre = wrist + 0.35 * (wrist - elbow)  # the hand continues the forearm beyond the wrist
        length = np.linalg.norm(wrist - elbow, axis=1)
        return np.column_stack([centre, np.maximum(0.9 * length, 0.55 * scale)])
    if rule == "above_shoulders":
        return np.column_stack([shoulders[:, 0], shoulders[:, 1] - 0.75 * scale, np.full(t, 0.8 * scale)])
    if rule == "below_shoulders":
        return np.column_stack([shoulders[:, 0], shoulders[:, 1] + 0.6 * scale, np.full(t, 1.4 * scale)])
    if rule == "below_hips":
        hips = _nanmean(p("left_hip"), p("right_hip"))
        return np.column_stack([hips[:, 0], hips[:, 1] + 0.9 * scale, np.full(t, 1.8 * scale)])
    if rule == "all_points":  # layouts without shoulders or hips (a hand, a face): the centre of what is seen
        body = keypoints[:, list(layout.body)] if layout.body else keypoints
        ok = (body[..., 2] >= MIN_SCORE) & np.isfinite(body[..., :2]).all(axis=-1)
        centre = _nanmean(*np.where(ok[..., None], body[..., :2], np.nan).transpose(1, 0, 2))
        return np.column_stack([centre, np.full(t, 1.5 * scale)])
    raise ValueError(f"unknown fallback rule {rule!r}")


def _fill_gaps(values: np.ndarray) -> np.ndarray:
    """Linear interpolation over NaN frames (edges hold the nearest value); all-NaN stays NaN. values: (T, C)."""
    out = values.copy()
    t = np.arange(len(values))
    for c in range(values.shape[1]):
        ok = np.isfinite(values[:, c])
        if ok.any() and not ok.all():
            out[~ok, c] = np.interp(t[~ok], t[ok], values[ok, c])
    return out


def _smooth(values: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian smoothing over time with edge padding (none below a thousandth of a frame). values: (T, C)."""
    if sigma < 1e-3 or len(values) < 2:
        return values
    radius = int(np.ceil(2 * sigma))
    weights = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    weights /= weights.sum()
    padded = np.pad(values, ((radius, radius), (0, 0)), mode="edge")
    return np.stack([np.convolve(padded[:, c], weights, mode="valid") for c in range(values.shape[1])], axis=1)


def entity_boxes(keypoints: np.ndarray, layout: Layout, entities: tuple[Entity, ...], frame_size: tuple[int, int],
                 smooth_sigma: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Square boxes for every frame and entity.

    Args:
        keypoints: (T, V, 3) x, y in pixels, score; NaN where absent.
        frame_size: (width, height) of the source frames, for clips where nobody is ever seen.
        smooth_sigma: Temporal Gaussian smoothing of centres and sides, in frames.

    Returns:
        boxes (T, K, 4) float64 x1, y1, x2, y2 in source pixels (may extend past the frame: the crop pads), and
        visible (T, K) bool: the entity's own keypoints were seen in that frame (not a fallback or interpolation).
    """
    t = keypoints.shape[0]
    scale = body_scale(keypoints, layout, frame_size)
    boxes = np.zeros((t, len(entities), 4))
    visible = np.zeros((t, len(entities)), dtype=bool)
    for k, entity in enumerate(entities):
        idx = entity.indices(layout)
        pts = keypoints[:, idx] if len(idx) else np.full((t, 0, 3), np.nan)
        ok = (pts[..., 2] >= MIN_SCORE) & np.isfinite(pts[..., :2]).all(axis=-1)  # (T, n)
        own = ok.sum(axis=1) >= entity.min_points
        xy = np.where(ok[..., None], pts[..., :2], np.nan)
        if len(idx) == 0:  # none of its keypoints in this layout: the fallback places it, or the frame's middle
            lo = hi = np.full((t, 2), np.nan)
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # frames with none of its points: NaN rows
                lo, hi = np.nanmin(xy, axis=1), np.nanmax(xy, axis=1)  # (T, 2)
        side = np.maximum((hi - lo).max(axis=1) * entity.margin, entity.min_side * scale)
        centre = (lo + hi) / 2
        geometry = np.column_stack([centre, side])  # (T, 3)
        geometry[~own] = np.nan
        fallback = _fallback(entity.fallback, keypoints, layout, scale)
        geometry = np.where(np.isnan(geometry), fallback, geometry)
        geometry[:, 1] += entity.shift_y * geometry[:, 2]
        geometry = _fill_gaps(geometry)
        if np.isnan(geometry).any():  # nobody anywhere in the clip: the middle of the frame, never visible
            w, h = frame_size
            geometry = np.tile([w / 2, h / 2, min(w, h) / 2], (t, 1))
        geometry = _smooth(geometry, smooth_sigma)
        half = geometry[:, 2] / 2
        boxes[:, k] = np.column_stack([geometry[:, 0] - half, geometry[:, 1] - half,
                                       geometry[:, 0] + half, geometry[:, 1] + half])
        visible[:, k] = own
    return boxes, visible


GLOBAL_VIEWS = ("person", "letterbox")


def global_window(keypoints: np.ndarray, body: np.ndarray, width: int, height: int,
                  view: str = "person") -> np.ndarray:
    """The square of the source frame that becomes a clip's global frame.

    ``person``: a square of the frame's short side (TSM's resize-then-centre-crop scale), centred on the person:
    the median over the clip of the centre of the body joints seen in each frame, kept inside the frame (the frame's
    centre when nobody is seen). ``letterbox``: the whole frame, centred, with black bars (a 16:9 frame spends 44% of
    the square on them).

    Args:
        keypoints: (F, V, 3) x, y, score in source pixels, NaN where absent.
        body: Indices of the body joints (the layout's ``body``; empty: all points); a joint counts where seen
            with a score of at least MIN_SCORE.

    Returns:
        (3,) int x0, y0, side in source pixels (x0, y0 negative for letterbox bars).
    """
    if view not in GLOBAL_VIEWS:
        raise ValueError(f"global view {view!r} is not one of {', '.join(GLOBAL_VIEWS)}")
    if view == "letterbox":
        side = max(width, height)
        return np.array([(width - side) // 2, (height - side) // 2, side])
    side = min(width, height)
    joints = keypoints[:, body] if len(body) else keypoints  # (F, V_b, 3)
    points = joints[..., :2]  # (F, V_b, 2)
    centre = np.array([width / 2, height / 2])
    with np.errstate(invalid="ignore"):
        seen = np.isfinite(points).all(axis=-1) & (joints[..., 2] >= MIN_SCORE)  # (F, V_b)
    shown = np.where(seen[..., None], points, np.nan)[seen.any(axis=1)]  # (F_seen, V_b, 2)
    if len(shown):
        centre = np.median((np.nanmin(shown, axis=1) + np.nanmax(shown, axis=1)) / 2, axis=0)
    x0 = int(np.clip(round(centre[0] - side / 2), 0, width - side))
    y0 = int(np.clip(round(centre[1] - side / 2), 0, height - side))
    return np.array([x0, y0, side])


def window_transform(window: np.ndarray, size: int) -> tuple[float, float, float]:
    """scale, dx, dy such that a source pixel (x, y) lands at (x * scale + dx, y * scale + dy) in the global frame."""
    scale = size / float(window[2])
    return scale, -float(window[0]) * scale, -float(window[1]) * scale
