"""Keeping one person, the main subject, across the frames of a video.

Pose models return zero, one or several people per frame. Micro-actions belong to one person (the interviewee, the
patient), so every frame must show the same one. The main subject is anchored at the most prominent detection of
the video (largest body box times mean confidence) and followed forwards and backwards by nearest body centre; a
detection whose centre jumps further than `max_jump` body sizes per frame is another person (or a false detection)
and the frame is masked rather than switched to them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

MIN_SCORE = 0.3  # keypoints below this confidence do not count towards a body box


def body_box(keypoints: np.ndarray, body: Sequence[int], min_score: float = MIN_SCORE) -> np.ndarray | None:
    """Centre and size ``(cx, cy, size)`` of the confident body keypoints of one person, or None.

    Args:
        keypoints: (V, 3) x, y, score (further channels, such as z, are not used).
        body: Indices of the body keypoints in the layout.
    """
    pts = keypoints[list(body), :3]
    ok = np.isfinite(pts).all(axis=1) & (pts[:, 2] >= min_score)
    if ok.sum() < 2:
        return None
    xy = pts[ok, :2]
    lo, hi = xy.min(axis=0), xy.max(axis=0)
    size = float(max(hi - lo))
    if size <= 0:
        return None
    return np.array([(lo[0] + hi[0]) / 2, (lo[1] + hi[1]) / 2, size])


def track_main_subject(
    candidates: Sequence[Sequence[np.ndarray]],
    num_keypoints: int,
    body: Sequence[int],
    max_jump: float = 0.5,
    max_gap: int = 10,
) -> tuple[np.ndarray, np.ndarray]:
    """Choose the main subject in every frame.

    Args:
        candidates: Per frame, the people detected there, each (V, C): x, y, score, then any channels carried along
            (a 3D source's z).
        num_keypoints: V, for the output of frames where nobody is kept.
        body: Indices of the body keypoints.
        max_jump: Largest centre displacement per frame, in body sizes, that still counts as the same person.
        max_gap: A gap of missing frames widens the allowed jump, up to this many frames' worth.

    Returns:
        keypoints (T, V, C) float64 with NaN where no subject is kept, and detected (T,) bool.
    """
    n = len(candidates)
    channels = next((p.shape[-1] for people in candidates for p in people), 3)
    out = np.full((n, num_keypoints, channels), np.nan)
    detected = np.zeros(n, dtype=bool)
    boxes = [[body_box(p, body) for p in people] for people in candidates]

    best, anchor = -1.0, None
    for t, (people, frame_boxes) in enumerate(zip(candidates, boxes, strict=True)):
        for j, (person, box) in enumerate(zip(people, frame_boxes, strict=True)):
            if box is None:
                continue
            prominence = box[2] * float(np.nanmean(person[list(body), 2]))
            if prominence > best:
                best, anchor = prominence, (t, j)
    if anchor is None:
        return out, detected

    t0, j0 = anchor
    out[t0], detected[t0] = candidates[t0][j0], True
    for direction in (1, -1):
        last_box, last_t = boxes[t0][j0], t0
        t = t0 + direction
        while 0 <= t < n:
            gap = min(abs(t - last_t), max_gap)
            choice, choice_dist = None, np.inf
            for j, box in enumerate(boxes[t]):
                if box is None:
                    continue
                dist = float(np.hypot(*(box[:2] - last_box[:2])))
                if dist <= max_jump * last_box[2] * gap and dist < choice_dist:
                    choice, choice_dist = j, dist
            if choice is not None:
                out[t], detected[t] = candidates[t][choice], True
                last_box, last_t = boxes[t][choice], t
            t += direction
    return out, detected


class StreamingSubjectTracker:
    """`track_main_subject` over a video of any length, in blocks of `block` frames, so memory does not grow with
    the video.

    A video no longer than one block is resolved exactly as `track_main_subject` resolves it. In longer videos each
    block continues the track of the block before (forwards from its last kept box) while that box is at most
    `max_gap` frames old; a block that starts without a live track (the subject left, the recording cut to someone
    else) is anchored afresh at its own most prominent detection, and so are the frames of a block after its track
    has been lost for more than `max_gap` frames (frames of an already-emitted block stay masked).

    Use: `push(people)` for every frame, which returns finished frames when a block completes, then `flush()`.
    """

    def __init__(self, num_keypoints: int, body: Sequence[int], max_jump: float = 0.5, max_gap: int = 10,
                 block: int = 256):
        if block < 1:
            raise ValueError("block must be >= 1 frame")
        self.num_keypoints, self.body, self.max_jump, self.max_gap = num_keypoints, list(body), max_jump, max_gap
        self.block = block
        self._pending: list[Sequence[np.ndarray]] = []
        self._last: tuple[np.ndarray, int] | None = None  # last kept box and its age in frames at block start

    def push(self, people: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray] | None:
        """Add one frame's detections; returns (keypoints (B, V, 3), detected (B,)) when a block is resolved."""
        self._pending.append(people)
        return self._resolve() if len(self._pending) >= self.block else None

    def flush(self) -> tuple[np.ndarray, np.ndarray] | None:
        """Resolve the frames still pending (the end of the video)."""
        return self._resolve() if self._pending else None

    def _resolve(self) -> tuple[np.ndarray, np.ndarray]:
        frames, self._pending = self._pending, []
        n = len(frames)
        if self._last is None or self._last[1] > self.max_gap:
            out, detected = track_main_subject(frames, self.num_keypoints, self.body, self.max_jump, self.max_gap)
        else:
            out, detected = self._continue(frames)
        kept = np.flatnonzero(detected)
        if len(kept):
            box = body_box(out[kept[-1]], self.body)
            self._last = (box, n - 1 - int(kept[-1]) + 1) if box is not None else None
        elif self._last is not None:
            self._last = (self._last[0], self._last[1] + n)
        return out, detected

    def _continue(self, frames: Sequence[Sequence[np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
        """Follow the live track forwards through a block (the rule of `track_main_subject`'s forward pass)."""
        n = len(frames)
        out = np.full((n, self.num_keypoints, 3), np.nan)
        detected = np.zeros(n, dtype=bool)
        last_box, age = self._last
        last_t = -age
        for t, people in enumerate(frames):
            gap = min(t - last_t, self.max_gap)
            choice, choice_dist = None, np.inf
            for j, person in enumerate(people):
                box = body_box(person, self.body)
                if box is None:
                    continue
                dist = float(np.hypot(*(box[:2] - last_box[:2])))
                if dist <= self.max_jump * last_box[2] * gap and dist < choice_dist:
                    choice, choice_dist = j, dist
            if choice is not None:
                out[t], detected[t] = people[choice], True
                last_box, last_t = body_box(people[choice], self.body), t
            elif t - last_t > self.max_gap:  # the track is lost: anchor the frames since it was lost afresh
                since = max(last_t + 1, 0)
                rest, rest_detected = track_main_subject(frames[since:], self.num_keypoints, self.body,
                                                         self.max_jump, self.max_gap)
                out[since:], detected[since:] = rest, rest_detected
                break
        return out, detected
