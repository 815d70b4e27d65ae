"""Main-subject selection on constructed detections (where the truth is known)."""

from __future__ import annotations

import numpy as np

from pipelines.pose.subject import body_box, track_main_subject

V = 4
BODY = range(V)


def person(cx: float, cy: float, size: float, score: float = 0.9) -> np.ndarray:
    half = size / 2
    pts = [(cx - half, cy - half), (cx + half, cy - half), (cx - half, cy + half), (cx + half, cy + half)]
    return np.array([(x, y, score) for x, y in pts])


def test_body_box_ignores_low_scores_and_nan():
    p = person(100, 200, 50)
    p[0] = (np.nan, np.nan, 0.0)
    p[1, 2] = 0.1
    box = body_box(p, BODY)
    assert box is not None
    np.testing.assert_allclose(box, [100, 225, 50])  # the two bottom corners remain
    p[2:, 2] = 0.0
    assert body_box(p, BODY) is None


def test_keeps_the_prominent_person_when_two_are_present():
    main = [person(500 + t, 400, 300) for t in range(10)]
    other = [person(1500, 400, 120) for _ in range(10)]
    frames = [[o, m] if t % 2 else [m, o] for t, (m, o) in enumerate(zip(main, other, strict=True))]
    kp, det = track_main_subject(frames, V, BODY)
    assert det.all()
    np.testing.assert_allclose(kp[:, 0, 0], [500 + t - 150 for t in range(10)])


def test_a_far_jump_is_masked_not_followed():
    frames = [[person(500, 400, 300)] for _ in range(5)]
    frames[2] = [person(1600, 400, 300)]  # a different person where the subject was lost
    frames[3] = []
    kp, det = track_main_subject(frames, V, BODY)
    assert det.tolist() == [True, True, False, False, True]
    assert np.isnan(kp[2]).all() and np.isnan(kp[3]).all()


def test_nobody_anywhere_gives_all_nan():
    kp, det = track_main_subject([[], []], V, BODY)
    assert not det.any() and np.isnan(kp).all() and kp.shape == (2, V, 3)


def _stream(frames, block: int):
    from pipelines.pose.subject import StreamingSubjectTracker

    tracker = StreamingSubjectTracker(V, BODY, block=block)
    parts = [r for r in (tracker.push(people) for people in frames) if r is not None]
    if (last := tracker.flush()) is not None:
        parts.append(last)
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def test_streaming_equals_whole_video_tracking_within_one_block():
    rng = np.random.default_rng(0)
    frames = [[person(500 + 3 * t, 400, 300), person(1500, 400 + rng.normal(), 120)] for t in range(40)]
    kp, det = track_main_subject(frames, V, BODY)
    skp, sdet = _stream(frames, block=64)
    np.testing.assert_array_equal(sdet, det)
    np.testing.assert_array_equal(skp, kp)


def test_streaming_follows_the_subject_across_blocks_and_reanchors_after_a_cut():
    # the subject drifts right over 3 blocks while a bystander stays put; then the recording cuts to a new person
    subject = [[person(400 + 4 * t, 400, 300), person(1600, 400, 250)] for t in range(90)]
    cut = [[person(1400, 800, 320)] for _ in range(40)]
    kp, det = _stream(subject + cut, block=32)
    assert det[:90].all()
    np.testing.assert_allclose(kp[:90, 0, 0], [400 + 4 * t - 150 for t in range(90)])  # never the bystander
    # the new person once the old track is lost; frames of the cut's block already emitted stay masked (<= max_gap)
    assert det[90:].sum() >= 40 - 10 and det[96:].all()
    np.testing.assert_allclose(kp[90:][det[90:], 0, 0], 1400 - 160)
